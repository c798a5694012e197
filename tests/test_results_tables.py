"""Every results table in README.md and docs/ is what its committed results.json files give.

A table lives between ``<!-- compare: PATHS [--metric M] -->`` and ``<!-- /compare -->``;
``dmlkit compare --update-docs`` regenerates them all (`dmlkit.protocol.doc_tables`).
"""

from pathlib import Path

from dmlkit.protocol.compare import load_results
from dmlkit.protocol.doc_tables import documents, update_documents

ROOT = Path(__file__).resolve().parents[1]


def test_results_tables_regenerate_byte_identical_from_committed_results():
    stale = update_documents(ROOT, check=True)
    assert stale == [], (f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}; run "
                         "`dmlkit compare --update-docs`")


def test_committed_results_files_are_read_and_tables_exist():
    files = sorted((ROOT / "docs" / "results").rglob("results.json"))
    assert files, "no committed results file"
    for path in files:  # each one alone: its own methods, every record usable
        results = load_results([path])
        assert results["records"] and all(r["method"] in results["methods"]
                                          for r in results["records"])
    marked = [p for p in documents(ROOT) if "<!-- compare:" in p.read_text()]
    assert marked, "no results table is generated from a results file"

"""Every results table in README.md and docs/ is what its committed results.json files give.

A table lives between ``<!-- compare: PATHS [--metric M] -->`` and ``<!-- /compare -->``;
``dmlkit compare --update-docs`` regenerates them all (`dmlkit.protocol.doc_tables`).
"""

from pathlib import Path

from dmlkit.protocol.doc_tables import documents, update_documents

ROOT = Path(__file__).resolve().parents[1]


def test_results_tables_regenerate_byte_identical_from_committed_results():
    stale = update_documents(ROOT, check=True)
    assert stale == [], (f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}; run "
                         "`dmlkit compare --update-docs`")


def test_every_results_file_beside_a_report_is_committed_json():
    marked = [p for p in documents(ROOT) if "<!-- compare:" in p.read_text()]
    assert marked, "no results table is generated from a results file"

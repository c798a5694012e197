"""benchmarks/compare_methods.py writes results.json and a table regenerated from it."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare_methods

from dmlkit.protocol.doc_tables import update_documents


def test_comparison_writes_raw_records_and_a_generated_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(sys, "argv", [
        "compare_methods.py", "--seeds", "2", "--runs", str(tmp_path / "runs"),
        "--set", "train.epochs=1", "--set", "train.batches_per_epoch=2",
        "--arm", "a=digits-smoke", "--arm", "b=digits-smoke:optim.lr=0.01",
        "--baseline", "b=a", "--out", "docs/t.md"])
    compare_methods.main()
    doc = json.loads((tmp_path / "docs" / "t" / "results.json").read_text())
    assert doc["methods"]["b"]["baseline"] == "a" and doc["environment"]["torch"]
    finals = [(r["method"], r["seed"]) for r in doc["records"] if r["stage"] == "final"]
    assert sorted(finals) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    text = (tmp_path / "docs" / "t.md").read_text()
    assert "<!-- compare: docs/t/results.json -->\n| method |" in text and "| b | 2 |" in text
    assert update_documents(tmp_path, check=True) == []  # the table is what the file gives

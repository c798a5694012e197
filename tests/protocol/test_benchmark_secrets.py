"""The study database's password is never written or printed (issue 30, item 2): not in any
file under a benchmark's output (every fold run's env.json, results.json, the report), not in
--json output, not in the error line of a storage that cannot be reached."""

import json
import sys

import optuna
import pytest
from typer.testing import CliRunner

from dmlkit.cli.app import app
from dmlkit.errors import ConfigError
from dmlkit.protocol import search

PASSWORD = "SECRETPW"
URL = f"postgresql+psycopg://dmlkit:{PASSWORD}@127.0.0.1:55432/dmlkit"


def test_no_file_or_output_of_a_benchmark_holds_the_password(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sqlite, real = f"sqlite:///{tmp_path / 'study.db'}", optuna.storages.RDBStorage
    # the password-bearing URL reaches every dmlkit code path; only Optuna's storage opens
    # the SQLite file instead of a server
    class Redirected(real):
        def __init__(self, url, **kw):
            super().__init__(sqlite if url == URL else url, **kw)

    monkeypatch.setattr(search.optuna.storages, "RDBStorage", Redirected)
    bench = {
        "name": "s", "output": str(tmp_path / "bench"), "folds": 2, "seeds": 1, "trials": 1,
        "prune_after": None, "storage": URL,
        "set": {"train.m_per_class": 12, "train.epochs": 1, "train.batches_per_epoch": 2,
                "eval.nmi": False, "eval.evaluate_untrained": False},
        "methods": {"triplet": {"preset": "digits-smoke"}},
        "report": {"map_points": 40, "gallery_queries": 2, "gallery_k": 3},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(bench))
    args = ["benchmark", str(path), "--storage", URL, "--json"]
    monkeypatch.setattr(sys, "argv", ["dmlkit", *args])  # what env.json records
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and "dmlkit:***@127.0.0.1" in result.output
    files = [p for p in (tmp_path / "bench").rglob("*") if p.is_file()]
    assert len([p for p in files if p.name == "env.json"]) == 2  # the two fold runs
    assert [p for p in files if PASSWORD.encode() in p.read_bytes()] == []
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["benchmark"]["storage"] == URL.replace(PASSWORD, "***")


def test_unreachable_storage_error_masks_the_password():
    url = f"postgresql+psycopg://dmlkit:{PASSWORD}@127.0.0.1:1/dmlkit"  # nothing listens
    with pytest.raises(ConfigError) as e:
        search.open_study("x", url)
    assert PASSWORD not in str(e.value) and "dmlkit:***@127.0.0.1:1" in str(e.value)

import json

import pytest
from typer.testing import CliRunner

from dmlkit.cli.app import app
from dmlkit.errors import ConfigError
from dmlkit.protocol.compare import compare_json, compare_table, load_results
from dmlkit.protocol.doc_tables import update_documents
from dmlkit.protocol.records import SCHEMA, dumps, record


def results_file(path, name="b", shift=-0.02):
    """A baseline and a method ``shift`` away from it on every seed (with a little noise)."""
    recs = []
    for seed in range(5):
        for method, v in (("base", 0.35 + 0.01 * seed), ("new", 0.35 + 0.01 * seed + shift
                                                          + 0.002 * (seed % 2))):
            recs += [record(method, "final", seed, k, {"map_at_r": v + 0.01 * k})
                     for k in range(2)]
            recs.append(record(method, "final", seed, None, {"map_at_r": v + 0.03}))
            recs.append(record(method, "untrained", seed, None, {"map_at_r": 0.2}))
    doc = {"schema": SCHEMA, "benchmark": {"name": name},
           "methods": {"base": {"baseline": None}, "new": {"baseline": "base"}},
           "records": recs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(doc))
    return path


def test_table_has_seed_level_cis_and_computed_verdicts(tmp_path):
    table = compare_table(load_results([results_file(tmp_path / "r.json")]))
    rows = {r[0]: dict(zip(table.header, r, strict=True)) for r in table.rows}
    assert rows["new"]["seeds"] == "5" and rows["new"]["baseline"] == "base"
    assert rows["new"]["concat. verdict"] == "worse" and rows["base"]["sep. verdict"] == "-"
    assert rows["new"]["untrained concat."] == "0.200 ± 0.000"
    assert rows["new"]["Δ sep. (paired t)"].startswith("-0.019 ± 0.")
    doc = compare_json(load_results([tmp_path / "r.json"]))
    assert doc["methods"]["new"]["concatenated"]["versus"]["verdict"] == "worse"
    same = compare_table(load_results([results_file(tmp_path / "s.json", shift=0.0)]))
    assert same.rows[1][-1] == "no evidence"


def test_foreign_or_duplicate_results_are_config_errors(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"benchmark": {}, "methods": {}}))
    with pytest.raises(ConfigError, match="not a dmlkit results file"):
        load_results([tmp_path / "old.json"])
    a = results_file(tmp_path / "a.json")
    with pytest.raises(ConfigError, match="also in an earlier file"):
        load_results([a, a])
    with pytest.raises(ConfigError, match="does not exist"):
        load_results([tmp_path / "none.json"])


def test_cli_prints_writes_and_regenerates_marked_regions(tmp_path):
    path = results_file(tmp_path / "docs" / "results" / "x" / "results.json")
    run = CliRunner().invoke(app, ["compare", str(path), "--out", str(tmp_path / "t.md")])
    assert run.exit_code == 0, run.output
    table = (tmp_path / "t.md").read_text()
    assert "| new | 5 |" in table and "worse" in run.output
    doc = json.loads(CliRunner().invoke(app, ["compare", str(path), "--json"]).stdout)
    assert doc["methods"]["new"]["baseline"] == "base"

    region = "<!-- compare: docs/results/x/results.json -->\n"
    (tmp_path / "README.md").write_text(f"# t\n\n{region}stale\n<!-- /compare -->\nend\n")
    (tmp_path / "docs" / "a.md").write_text(f"{region}<!-- /compare -->\n")
    check = ["compare", "--update-docs", "--check", "--root", str(tmp_path)]
    run = CliRunner().invoke(app, check)
    assert run.exit_code == 2 and "out of date" in run.output
    assert CliRunner().invoke(app, check[:2] + check[3:]).exit_code == 0
    text = (tmp_path / "README.md").read_text()
    assert text == f"# t\n\n{region}{table}<!-- /compare -->\nend\n"
    assert CliRunner().invoke(app, check).exit_code == 0
    assert update_documents(tmp_path, check=True) == []
    (tmp_path / "docs" / "a.md").write_text(
        "<!-- compare: docs/results/x/results.json --metric precision_at_1 -->\n"
        "<!-- /compare -->\n")
    assert CliRunner().invoke(app, check).exit_code == 2


def test_bad_region_arguments_are_config_errors(tmp_path):
    from dmlkit.protocol.doc_tables import region_text

    results_file(tmp_path / "r.json")
    with pytest.raises(ConfigError, match="--metric needs a value"):
        region_text("r.json --metric", tmp_path)
    with pytest.raises(ConfigError, match="give results files"):
        region_text("--colour red", tmp_path)
    assert "P@1" not in region_text("r.json", tmp_path)

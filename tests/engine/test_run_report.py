from dmlkit import config
from dmlkit.engine.run_report import distinct_series, write_run_report
from dmlkit.engine.train import train
from dmlkit.protocol.aggregate import mean_ci
from run_fixtures import fake_run


def test_mdr_run_report_plots_levels(tmp_path):
    cfg = config.load("digits-smoke", [f"run.root={tmp_path}", "run.name=m", "eval.nmi=false",
                                       "method.name=mdr"])
    run = train(cfg)
    report = (run.path / "report.md").read_text()
    assert "| final |" in report and "| untrained |" in report
    test, validation = report.split("## Validation: the best epoch (")
    assert "| best_val |" in validation and "best_val" not in test  # not mixed with test rows
    assert "mdr_levels.png" in report and (run.path / "mdr_levels.png").stat().st_size > 1000
    assert (run.path / "losses.png").is_file() and (run.path / "validation.png").is_file()
    header = (run.path / "metrics.csv").read_text().splitlines()[0]
    assert "method_mdr_levels_0" in header and "method_mdr_mu" in header


def test_sharing_evaluates_both_heads(tmp_path):
    cfg = config.load("digits-smoke", [f"run.root={tmp_path}", "run.name=s", "eval.nmi=false",
                                       "method.name=sharing", "train.epochs=1"])
    metrics = train(cfg).read_json("metrics.json")
    assert {"final", "final_shared", "final_concat"} <= set(metrics)
    assert metrics["final_shared"]["map_at_r"] != metrics["final"]["map_at_r"]


def test_mean_ci_matches_t_interval():
    m, h = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert abs(m - 0.5) < 1e-12 and abs(h - 0.41078) < 1e-4
    assert mean_ci([0.3]) == (0.3, 0.0)


def test_every_run_writes_an_html_report_beside_the_markdown(tmp_path):
    run = fake_run(tmp_path / "r")
    write_run_report(run)
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "<td>final</td>" in page
    assert "<td>0.5000</td>" in page and "http" not in page
    assert "![losses](losses.png)" in (run / "report.md").read_text()


def test_identical_series_are_drawn_once():
    assert list(distinct_series({"train_loss": [1.0, float("nan")],
                                 "train_triplet": [1.0, float("nan")],
                                 "train_mdr": [1.0, 2.0]})) == [
        "train_loss = train_triplet", "train_mdr"]

"""``dmlkit benchmark``: the fair comparison protocol (folds, search, final, report) in one
command; see docs/protocol.md."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from dmlkit.cli.json_output import JsonOpt, emit, report_console


def benchmark(
    config: Annotated[str, typer.Argument(help="benchmark YAML file, or a shipped one by name")],
    stage: Annotated[str, typer.Option(help="all, search, final or report")] = "all",
    storage: Annotated[str | None, typer.Option(
        help="study database URL (default: SQLite in the output folder), e.g. "
             "postgresql://user:pass@host/db to share the search between machines")] = None,
    worker: Annotated[int, typer.Option(
        help="this machine's number when several share a study (seeds its sampler)")] = 0,
    output: Annotated[Path | None, typer.Option(
        help="output folder (overrides the file's)")] = None,
    as_json: JsonOpt = False,
):
    """Search, retrain and test every method of CONFIG; writes results.json and a report.

    Re-running continues: finished trials and finished fold runs are reused.
    """
    from dmlkit.base import process_group
    from dmlkit.base.secrets import mask_secrets
    from dmlkit.engine.interrupt import TrainingInterrupted
    from dmlkit.errors import ConfigError
    from dmlkit.protocol.benchmark import RESULTS, run_benchmark
    from dmlkit.protocol.benchmark_config import load_benchmark_config

    if process_group.launched():
        raise ConfigError("dmlkit benchmark runs in one process (several machines share a "
                          "study with --storage and --worker), not under torchrun")
    if stage not in ("all", "search", "final", "report"):
        raise ConfigError(f"--stage must be all, search, final or report, not {stage!r}")
    bench = load_benchmark_config(config)
    if output is not None:
        bench = bench.model_copy(update={"output": str(output)})
    try:
        console = report_console(as_json)
        out = run_benchmark(bench, stage, storage, worker, console)  # type: ignore[arg-type]
    except (TrainingInterrupted, KeyboardInterrupt) as e:  # the benchmark resumes as a whole
        signum = getattr(e, "signum", signal.SIGINT)
        again = " ".join(["dmlkit benchmark", config,
                          *([] if stage == "all" else ["--stage", stage]),
                          *([] if storage is None else ["--storage", mask_secrets(storage)]),
                          *([] if worker == 0 else ["--worker", str(worker)]),
                          *([] if output is None else ["--output", str(output)]),
                          *(["--json"] if as_json else [])])
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name}; finished trials and runs are kept and "
            f"a cut run resumes from its checkpoint: continue with: {again}", signum) from None
    studies = mask_secrets(storage or bench.storage_url)
    if stage == "search":
        if as_json:
            emit({"benchmark": bench.name, "stage": stage, "storage": studies})
            return
        console.print(f"search finished; studies in {studies}")
        return
    folder = Path(bench.report.folder or out)
    report = {"markdown": str(folder / "report.md"), "html": str(folder / "report.html")}
    if as_json:
        results = Path(out) / RESULTS
        emit({"benchmark": bench.name, "stage": stage, "output": str(out), "storage": studies,
              "report": report,
              "results": json.loads(results.read_text()) if results.is_file() else None})
        return
    console.print(f"report: {report['markdown']} and {report['html']}")


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to ``app``."""
    app.command()(benchmark)

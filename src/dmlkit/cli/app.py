"""The ``dmlkit`` command line (typer). User errors print one line; ``--debug`` adds tracebacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dmlkit.cli.serve_commands import register as register_serve_commands
from dmlkit.errors import DmlkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Deep metric learning: train, evaluate, compare, retrieve.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False):
    _state["debug"] = debug


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="preset name or YAML config file")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override key=value")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")] = None,
):
    """Train a model; writes runs/<name>/ and prints the test metrics (untrained vs trained)."""
    from dmlkit import config as config_mod
    from dmlkit.cli.tables import metrics_table
    from dmlkit.engine.train import train as run_train

    if resume is None and not config:
        raise DmlkitError("train needs a CONFIG (preset or YAML file) or --resume RUN_DIR")
    cfg = None if resume is not None else config_mod.load(config, set_ or [])
    run = run_train(cfg, resume=resume, console=console)
    results = run.read_json("metrics.json")
    rows = {k: results[k] for k in ("untrained", "final") if k in results}
    if "final" in rows:
        rows["trained"] = rows.pop("final")
    console.print(metrics_table(rows, f"test metrics ({run.path})"))


@app.command()
def evaluate(run_dir: Annotated[Path, typer.Argument(help="a run directory")]):
    """Re-evaluate a run's final model on its test split."""
    from dmlkit.cli.tables import metrics_table
    from dmlkit.serve.load import load_run

    loaded = load_run(run_dir)
    console.print(metrics_table({"model": loaded.evaluate_test()}, f"test metrics ({run_dir})"))


@app.command()
def reproduce(
    run_dir: Annotated[Path, typer.Argument(help="a run directory to train again")],
    name: Annotated[str | None, typer.Option(help="name of the new run")] = None,
):
    """Train again from a run's resolved config (same seed) and compare the metrics."""
    from dmlkit import config as config_mod
    from dmlkit.cli.tables import metrics_table
    from dmlkit.engine.run_dir import RunDir
    from dmlkit.engine.train import train as run_train

    old = RunDir(run_dir)
    if not old.config_path.is_file():
        raise DmlkitError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = config_mod.load(str(old.config_path))
    cfg.run.name = name or f"{old.path.name}-reproduced"
    new = run_train(cfg, console=console)
    rows = {"original": old.read_json("metrics.json").get("final", {}),
            "reproduced": new.read_json("metrics.json")["final"]}
    console.print(metrics_table(rows, "reproduction"))


@app.command()
def presets():
    """List the shipped presets."""
    from dmlkit.config import preset_names

    for name in preset_names():
        console.print(name)


@app.command()
def datasets(
    describe: Annotated[str | None, typer.Option(help="dataset name to summarize")] = None,
    root: Annotated[Path | None, typer.Option(help="dataset folder")] = None,
):
    """List datasets (and whether they are available locally), or describe one."""
    import json

    from dmlkit.data.registry import DATASETS, load_catalog

    if describe:
        cat = load_catalog(describe, root)
        try:
            from dmlkit.data.describe import describe_catalog
            summary = describe_catalog(cat)
        except ImportError:
            summary = cat.describe()
        console.print_json(json.dumps(summary, default=str))
        return
    for name, spec in sorted(DATASETS.items()):
        try:
            load = spec.loader(root=None, download=False) if name in (
                "fashion-mnist", "digits") else None
            status = "available" if load is not None else "needs --root"
        except DmlkitError:
            status = "not found locally"
        console.print(f"{name:16s} {status:18s} {spec.description}")


def main() -> None:
    """Entry point: run the app, turning DmlkitError into one line on stderr (exit 2)."""
    try:
        app(standalone_mode=False)
    except DmlkitError as e:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {e}")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


register_serve_commands(app)

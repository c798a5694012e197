"""The ``dmlkit`` command line (typer). User errors print one line; ``--debug`` adds tracebacks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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


def _is_rank0() -> bool:
    """True in a single process and in rank 0 of a torchrun launch (the one that reports)."""
    return os.environ.get("RANK", "0") == "0"


def _relaunch(devices: int, command: list[str]) -> None:
    """``dmlkit COMMAND`` again in ``devices`` processes through torchrun."""
    from dmlkit.engine import distributed

    distributed.launch(devices, ["-m", "dmlkit", *(["--debug"] if _state["debug"] else []),
                                 *command])


def _train_here(cfg, resume: Path | None):
    """`dmlkit.engine.train.train` in this process (one rank of a launch, or the only one);
    other ranks train silently. Leaves the process group afterwards."""
    from dmlkit.engine import distributed
    from dmlkit.engine.train import train as run_train

    try:
        return run_train(cfg, resume=resume,
                         console=console if _is_rank0() else Console(quiet=True))
    finally:
        distributed.shutdown()


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="preset name or YAML config file")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override key=value")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")] = None,
    devices: Annotated[int, typer.Option(
        min=1, help="processes on this machine (torchrun; one per GPU, gloo on CPU)")] = 1,
):
    """Train a model; writes runs/<name>/ and prints the test metrics (untrained vs trained).

    ``--devices N`` starts N processes through torchrun (docs/distributed.md); launching
    ``torchrun --nproc-per-node N -m dmlkit train ...`` yourself is the same (and multi-node).
    """
    from dmlkit import config as config_mod
    from dmlkit.cli.tables import metrics_table
    from dmlkit.engine import distributed

    if resume is None and not config:
        raise DmlkitError("train needs a CONFIG (preset or YAML file) or --resume RUN_DIR")
    cfg = None if resume is not None else config_mod.load(config, set_ or [])
    if devices > 1 and not distributed.launched():
        if cfg is not None:
            from dmlkit.engine.train import check_ranks

            check_ranks(cfg, devices)  # before any process starts
        args = [config] if config else []
        args += [x for s in set_ or [] for x in ("--set", s)]
        args += ["--resume", str(resume)] if resume is not None else []
        _relaunch(devices, ["train", *args])
        return
    run = _train_here(cfg, resume)
    if not _is_rank0():
        return
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


@app.command("evaluate-embeddings")
def evaluate_embeddings(
    file: Annotated[Path, typer.Argument(help=".npz, .safetensors, .npy or .csv embeddings")],
    labels: Annotated[Path | None, typer.Option(help="labels file (with .npy embeddings)")] = None,
    distance: Annotated[str, typer.Option(help="euclidean, cosine or dot")] = "euclidean",
    normalize: Annotated[bool, typer.Option(help="L2-normalize first")] = True,
    recall_k: Annotated[list[int] | None, typer.Option("--recall-k", help="K of Recall@K")] = None,
    map_at_k: Annotated[int | None, typer.Option(help="also MAP@K for this K")] = None,
    per_class: Annotated[bool, typer.Option(help="also print per-class P@1 and MAP@R")] = False,
):
    """Score saved embeddings (any model's) with the retrieval metrics of docs/metrics.md.

    With ``is_query``/``is_gallery`` flags in the file, queries are searched in the gallery;
    otherwise every item is a query against all others (compared to self).
    """
    from dmlkit.cli.tables import metrics_table
    from dmlkit.evaluation import evaluate, load_embeddings

    emb, y, extra = load_embeddings(file, labels)
    query = extra.get("is_query", extra.get("query_mask"))
    ref = ref_y = None
    if query is not None:
        gallery = extra.get("is_gallery", ~query)
        emb, y, ref, ref_y = emb[query], y[query], emb[gallery], y[gallery]
    result = evaluate(emb, y, ref, ref_y, recall_ks=tuple(recall_k or (1, 2, 4, 8)),
                      map_at_k=map_at_k, distance=distance, normalize=normalize,
                      per_class=per_class)
    by_class = result.pop("per_class", {})
    console.print(metrics_table({file.name: result}, f"{len(emb)} queries"))
    if per_class:
        console.print(metrics_table({str(c): m for c, m in by_class.items()}, "per class"))


@app.command()
def reproduce(
    run_dir: Annotated[Path, typer.Argument(help="a run directory to train again")],
    name: Annotated[str | None, typer.Option(help="name of the new run")] = None,
    devices: Annotated[int | None, typer.Option(
        min=1, help="processes (default: as many as the original run used)")] = None,
):
    """Train again from a run's resolved config (same seed) and compare the metrics."""
    from dmlkit import config as config_mod
    from dmlkit.cli.tables import metrics_table
    from dmlkit.engine import distributed
    from dmlkit.engine.run_dir import RunDir

    old = RunDir(run_dir)
    if not old.config_path.is_file():
        raise DmlkitError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = config_mod.load(str(old.config_path))
    cfg.run.name = name or f"{old.path.name}-reproduced"
    env = old.read_json("env.json") if (old.path / "env.json").is_file() else {}
    original = env.get("world_size", 1)
    devices = devices or original
    if devices > 1 and not distributed.launched():
        _relaunch(devices, ["reproduce", str(run_dir), "--name", cfg.run.name,
                            "--devices", str(devices)])
        return
    if int(os.environ.get("WORLD_SIZE", "1")) != original and _is_rank0():
        console.print(f"note: the original run used {original} process(es); float rounding "
                      "then differs, and runs with discrete choices (miners, MDR) drift apart "
                      "(docs/distributed.md)", style="yellow")
    new = _train_here(cfg, None)
    if not _is_rank0():
        return
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
    from rich.table import Table

    table = Table(title="datasets (status at their default location)")
    for col in ("name", "status", "description"):
        table.add_column(col)
    for name, spec in sorted(DATASETS.items()):
        try:
            status = f"available ({len(spec.loader(root=None, download=False))} images)"
        except DmlkitError:
            status = "not found: use --root / data.root"
        table.add_row(name, status, spec.description)
    console.print(table)


def main() -> None:
    """Entry point: run the app, turning DmlkitError into one line on stderr (exit 2).

    A training run stopped by SIGINT/SIGTERM (after saving a checkpoint) exits 130/143 with
    the command that resumes it; an OSError (e.g. a full disk) is one line too (exit 2).
    """
    try:
        app(standalone_mode=False)
    except DmlkitError as e:
        if _state["debug"]:
            raise
        code = getattr(e, "exit_code", 2)  # TrainingInterrupted: 128 + signal number
        err_console.print(("[red]error:[/red] " if code == 2 else "") + escape(str(e)))
        sys.exit(code)
    except OSError as e:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(e))}")
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

from dmlkit.cli.benchmark_command import register as register_benchmark_command  # noqa: E402

register_benchmark_command(app)

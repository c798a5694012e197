"""The ``dmlkit`` command line (typer). User errors print one line; ``--debug`` adds tracebacks.

Every way a command can end goes through `DmlkitGroup.main`, so ``dmlkit ...``, ``python -m
dmlkit ...`` and ``typer.testing.CliRunner`` behave alike:

- usage errors (unknown command or option, missing or bad argument): one line, exit 2;
- `DmlkitError` and OSError: one line, exit 2 (a stopped training run: 128 + signal, with the
  command that continues it);
- Ctrl-C anywhere else: one line, exit 130.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from dmlkit.cli.consoles import console, err_console
from dmlkit.cli.json_output import JsonOpt, emit, report_console
from dmlkit.cli.serve_commands import register as register_serve_commands
from dmlkit.errors import ConfigError, DataError, DmlkitError

_state = {"debug": False}
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT
# help labels of options whose name alone says too little (others: the option in capitals)
LABELS = {"set_": "KEY=VALUE", "devices": "N", "recall_k": "K", "map_at_k": "K", "k": "K",
          "batch_size": "N", "worker": "N", "resume": "RUN_DIR", "run": "RUN_DIR",
          "html": "FILE", "labels": "FILE", "describe": "NAME", "root": "DIR", "output": "DIR",
          "storage": "URL", "out": "FILE", "name": "NAME", "format_": "FORMAT"}
LONG_EVALUATION = 10**9  # query x reference pairs from which evaluate-embeddings shows progress


def _fail(message: str, code: int = USAGE_ERROR) -> None:
    """One line on stderr (passwords masked), then exit ``code``; ``error:`` before it unless
    a signal stopped the command (codes 128 + signal number)."""
    from dmlkit.base.secrets import mask_secrets

    err_console.print(("[red]error:[/red] " if code < 128 else "") + escape(mask_secrets(message)))
    sys.exit(code)


def _usage_hint(err: typer.TyperException) -> str:
    """Where to look after a usage error; for an unknown ``--KEY`` of a command that takes a
    config, the ``--set SECTION.KEY=...`` it probably meant."""
    ctx = getattr(err, "ctx", None)
    if ctx is None:
        return ""
    option = getattr(err, "option_name", "") or ""
    if option.startswith("--") and any(p.name == "set_" for p in ctx.command.params):
        from dmlkit.config import Config

        key = option[2:].replace("-", "_")
        sections = [name for name, f in Config.model_fields.items()
                    if key in getattr(f.annotation, "model_fields", {})]
        if sections:
            return f" (config keys are set with --set, e.g. --set {sections[0]}.{key}=...)"
    return f" (see '{ctx.command_path} --help')"


def plain_labels(command: Any, ctx: Any) -> Any:
    """``command`` with help labels in words: ``--set KEY=VALUE``, ``--devices N``, no label
    on flags, ``CONFIG`` for an argument, named once (typer's own labels are ``<list[str]>``,
    ``<bool>``...)."""
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is None or param.metavar is not None:
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx: None  # the name column says it
        elif getattr(param, "is_flag", False):
            param.metavar = ""
        else:
            param.metavar = LABELS.get(param.name, param.name.upper())
    return command


class DmlkitGroup(TyperGroup):
    """The ``dmlkit`` group: runs a command and turns every way it can end into an exit
    status with at most one line of explanation (see the module doc)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else plain_labels(command, ctx)

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        # dmlkit refuses every image PIL warns about as too large (data/image_open.py): the
        # warning would only repeat the error's line
        warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as e:  # typer's own click: usage errors
            first = (e.format_message().strip() or type(e).__name__).splitlines()[0]
            _fail(first.rstrip(".") + _usage_hint(e), getattr(e, "exit_code", USAGE_ERROR))
        except DmlkitError as e:
            if _state["debug"]:
                raise
            _fail(str(e), getattr(e, "exit_code", USAGE_ERROR))  # stopped runs: 128 + signal
        except OSError as e:
            if _state["debug"]:
                raise
            _fail(str(e))
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted (SIGINT)", INTERRUPTED)
        # typer returns (does not raise) the exit status of a typer.Exit, and turns Ctrl-C
        # into Exit(130)
        if code == INTERRUPTED:
            _fail("interrupted (SIGINT)", INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=DmlkitGroup, add_completion=False, invoke_without_command=True,
                  help="Deep metric learning: train, evaluate, compare, retrieve.")


@app.callback()
def _root(ctx: typer.Context,
          debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False):
    _state["debug"] = debug
    if ctx.invoked_subcommand is None:  # bare `dmlkit`: the help, as a usage error
        console.print(ctx.get_help())
        raise typer.Exit(USAGE_ERROR)


def _is_rank0() -> bool:
    """True in a single process and in rank 0 of a torchrun launch (the one that reports)."""
    return os.environ.get("RANK", "0") == "0"


def _relaunch(devices: int, command: list[str]) -> None:
    """``dmlkit COMMAND`` again in ``devices`` processes through torchrun."""
    from dmlkit.engine import distributed

    distributed.launch(devices, ["-m", "dmlkit", *(["--debug"] if _state["debug"] else []),
                                 *command])


def _train_here(cfg, resume: Path | None, out: Console = console, force: bool = False):
    """`dmlkit.engine.train.train` in this process (one rank of a launch, or the only one),
    reporting on ``out``; other ranks train silently. Leaves the process group afterwards."""
    from dmlkit.engine import distributed
    from dmlkit.engine.train import train as run_train

    try:
        return run_train(cfg, resume=resume,
                         console=out if _is_rank0() else Console(quiet=True),
                         notify=lambda line: err_console.print(line, markup=False), force=force)
    finally:
        distributed.shutdown()


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="preset name or YAML config file")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override key=value")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="continue the run in this directory, with its own config (--set train.epochs=N "
             "may extend it)")] = None,
    devices: Annotated[int, typer.Option(
        min=1, help="processes on this machine (torchrun; one per GPU, gloo on CPU)")] = 1,
    force: Annotated[bool, typer.Option(
        help="with --resume: take over a run still marked running by a process on another "
             "host (make sure that process is gone)")] = False,
    as_json: JsonOpt = False,
):
    """Train a model; writes runs/NAME/ and prints the test metrics (untrained vs trained).

    --devices N starts N processes through torchrun (docs/distributed.md); launching
    torchrun --nproc-per-node N -m dmlkit train ... yourself is the same (and multi-node).
    """
    from dmlkit import config as config_mod
    from dmlkit.engine.preflight import check_new_run, resumed_config

    if resume is None and not config:
        raise DmlkitError("train needs a CONFIG (preset or YAML file) or --resume RUN_DIR")
    if force and resume is None:
        raise ConfigError("--force applies to --resume RUN_DIR only")
    if resume is not None and config:
        raise ConfigError(f"--resume continues {resume} with its own config: drop {config!r} "
                          "(--set train.epochs=N may extend it)")
    cfg = (resumed_config(resume, set_ or []) if resume is not None
           else config_mod.load(config, set_ or []))
    check_new_run(cfg, devices)  # before torch is imported and before the run directory
    from dmlkit.base import process_group
    from dmlkit.cli.tables import print_metrics
    if devices > 1 and not process_group.launched():
        from dmlkit.engine.train import check_ranks

        check_ranks(cfg, devices)  # before any process starts
        args = [config] if config else []
        args += [x for s in set_ or [] for x in ("--set", s)]
        args += ["--resume", str(resume)] if resume is not None else []
        args += ["--force"] if force else []
        args += ["--json"] if as_json else []
        _relaunch(devices, ["train", *args])
        return
    run = _train_here(cfg, resume, report_console(as_json), force)
    if not _is_rank0():
        return
    results = run.read_json("metrics.json")
    if as_json:
        emit({"run_dir": str(run.path), **results})
        return
    rows = {k: results[k] for k in ("untrained", "pretrained_features", "final") if k in results}
    if "final" in rows:
        rows["trained"] = rows.pop("final")
    print_metrics(console, rows, f"test metrics ({run.path})")


@app.command()
def evaluate(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
             as_json: JsonOpt = False):
    """Re-evaluate a run's final model on its test split."""
    from dmlkit.base.run_dir import open_run

    open_run(run_dir, "evaluate")  # before the heavy imports
    from dmlkit.cli.tables import print_metrics
    from dmlkit.serve.load import load_run

    metrics = load_run(run_dir).evaluate_test()
    if as_json:
        emit({"run_dir": str(run_dir), "metrics": metrics})
        return
    print_metrics(console, {"model": metrics}, f"test metrics ({run_dir})")


@app.command("evaluate-embeddings")
def evaluate_embeddings(
    file: Annotated[Path, typer.Argument(help=".npz, .safetensors, .npy or .csv embeddings")],
    labels: Annotated[Path | None, typer.Option(help="labels file (with .npy embeddings)")] = None,
    distance: Annotated[str, typer.Option(help="euclidean, cosine or dot")] = "euclidean",
    normalize: Annotated[bool, typer.Option(help="L2-normalize first")] = True,
    recall_k: Annotated[list[int] | None, typer.Option("--recall-k", help="K of Recall@K")] = None,
    map_at_k: Annotated[int | None, typer.Option(help="also MAP@K for this K")] = None,
    per_class: Annotated[bool, typer.Option(help="also print per-class P@1 and MAP@R")] = False,
    as_json: JsonOpt = False,
):
    """Score saved embeddings (any model's) with the retrieval metrics of docs/metrics.md.

    With is_query and is_gallery flags in the file, queries are searched in the gallery;
    otherwise every item is a query against all the others.
    """
    from dmlkit.cli.tables import print_metrics
    from dmlkit.evaluation import evaluate, load_embeddings

    emb, y, extra = load_embeddings(file, labels)
    query = extra.get("is_query", extra.get("query_mask"))
    ref = ref_y = None
    if query is not None:
        gallery = extra.get("is_gallery", ~query)
        emb, y, ref, ref_y = emb[query], y[query], emb[gallery], y[gallery]
    long = len(emb) * len(emb if ref is None else ref) >= LONG_EVALUATION
    result = evaluate(emb, y, ref, ref_y, recall_ks=tuple(recall_k or (1, 2, 4, 8)),
                      map_at_k=map_at_k, distance=distance, normalize=normalize,
                      per_class=per_class, progress=f"scoring {file.name}" if long else None)
    by_class = result.pop("per_class", {})
    if as_json:
        emit({"file": str(file), "queries": len(emb), "metrics": result,
              **({"per_class": {str(c): m for c, m in by_class.items()}} if per_class else {})})
        return
    print_metrics(console, {file.name: result}, f"{len(emb)} queries")
    if per_class:
        print_metrics(console, {str(c): m for c, m in by_class.items()}, "per class")


@app.command()
def reproduce(
    run_dir: Annotated[Path, typer.Argument(help="a run directory to train again")],
    name: Annotated[str | None, typer.Option(help="name of the new run")] = None,
    devices: Annotated[int | None, typer.Option(
        min=1, help="processes (default: as many as the original run used)")] = None,
    as_json: JsonOpt = False,
):
    """Train again from a run's resolved config (same seed) and compare the metrics."""
    from dmlkit.base.run_dir import open_run

    old = open_run(run_dir, "reproduce")  # before the heavy imports
    from dmlkit.base import process_group
    from dmlkit.cli.tables import print_metrics
    from dmlkit.data.epoch_sampler import check_shardable

    cfg = old.read_config()
    cfg.run.name = name or f"{old.path.name}-reproduced"
    env = old.read_json("env.json") if (old.path / "env.json").is_file() else {}
    original = env.get("world_size", 1)
    devices = devices or original
    if devices > 1 and not process_group.launched():
        check_shardable(cfg.train.batch_size, devices)
        _relaunch(devices, ["reproduce", str(run_dir), "--name", cfg.run.name,
                            "--devices", str(devices), *(["--json"] if as_json else [])])
        return
    out = report_console(as_json)
    if int(os.environ.get("WORLD_SIZE", "1")) != original and _is_rank0():
        out.print(f"note: the original run used {original} process(es); float rounding "
                      "then differs, and runs with discrete choices (miners, MDR) drift apart "
                      "(docs/distributed.md)", style="yellow")
    new = _train_here(cfg, None, out)
    if not _is_rank0():
        return
    rows = {"original": old.read_json("metrics.json").get("final", {}),
            "reproduced": new.read_json("metrics.json")["final"]}
    if as_json:
        emit({"run_dir": str(new.path), "original_run_dir": str(old.path), **rows})
        return
    print_metrics(console, rows, "reproduction")


@app.command()
def presets(as_json: JsonOpt = False):
    """List the shipped presets, with a one-line description each."""
    from rich.table import Table

    from dmlkit.config import preset_description, preset_names

    if as_json:
        emit({"presets": [{"name": n, "description": preset_description(n)}
                          for n in preset_names()]})
        return
    table = Table(title="presets (dmlkit train NAME)", box=None)
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    for name in preset_names():
        table.add_row(name, preset_description(name))
    console.print(table)


@app.command()
def datasets(
    describe: Annotated[str | None, typer.Option(help="dataset name to summarize")] = None,
    root: Annotated[Path | None, typer.Option(help="dataset folder")] = None,
    as_json: JsonOpt = False,
):
    """List datasets (and whether they are available locally), or describe one."""
    import json

    from dmlkit.data.registry import DATASETS, availability, load_catalog

    if describe:
        try:
            cat = load_catalog(describe, root)
        except DataError as e:  # the data layer names config keys; here they are options
            raise DataError(str(e).replace("data.root", "--root").replace(
                "data.download=true", "dmlkit train ... --set data.download=true")) from None
        try:
            from dmlkit.data.describe import describe_catalog
            summary = describe_catalog(cat)
        except ImportError:
            summary = cat.describe()
        if as_json:
            emit({"dataset": describe, **summary})
        else:
            console.print_json(json.dumps(summary, default=str))
        return
    if as_json:
        emit({"datasets": [{"name": name, "status": availability(spec),
                            "description": spec.description}
                           for name, spec in sorted(DATASETS.items())]})
        return
    from rich.table import Table

    table = Table(title="datasets (status at their default location)")
    for col in ("name", "status", "description"):
        table.add_column(col)
    for name, spec in sorted(DATASETS.items()):
        table.add_row(name, availability(spec), spec.description)
    console.print(table)


def main() -> None:
    """Entry point (``dmlkit``, ``python -m dmlkit``): see `DmlkitGroup.main`."""
    app()


register_serve_commands(app)

from dmlkit.cli.benchmark_command import register as register_benchmark_command  # noqa: E402

register_benchmark_command(app)

from dmlkit.cli.compare_command import register as register_compare_command  # noqa: E402

register_compare_command(app)

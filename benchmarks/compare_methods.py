"""Compare training presets over several seeds: mean and 95% CI of test metrics.

Every arm is a dmlkit preset plus overrides, trained once per seed at the same budget; the
untrained network's metrics are printed beside the trained ones. Example (the MDR experiment):

    python benchmarks/compare_methods.py --seeds 5 \
        --arm triplet=triplet-small --arm triplet+l2=triplet-small:model.head.output=l2 \
        --arm triplet+mdr=mdr-small --baseline triplet+mdr=triplet \
        --out docs/results/mdr-fashion-mnist.md

An arm is NAME=PRESET[:key=value[,key=value...]]. With ``--out X.md`` the raw results go to
``X/results.json`` (one record per trained model and per untrained anchor, the same format as
``dmlkit benchmark``'s: `dmlkit.protocol.records`), and X.md holds the `dmlkit compare` table
of that file in a marked region (``dmlkit compare --update-docs`` regenerates it). A method's
other embeddings (e.g. Sharing Matters' shared head) are arms of their own, ``NAME/VARIANT``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from dmlkit import config
from dmlkit.engine.train import train
from dmlkit.protocol.benchmark import config_hash
from dmlkit.protocol.compare import compare_markdown, comparison
from dmlkit.protocol.doc_tables import render_document
from dmlkit.protocol.records import SCHEMA, dumps, provenance, record


def parse_arm(spec: str) -> tuple[str, str, list[str]]:
    name, rest = spec.split("=", 1)
    preset, _, over = rest.partition(":")
    return name, preset, [o for o in over.split(",") if o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=PRESET[:k=v,...]")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="override for every arm")
    ap.add_argument("--runs", default="runs/compare", help="root of the run directories")
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    ap.add_argument("--title", default="Comparison")
    ap.add_argument("--baseline", action="append", default=[],
                    help="ARM=BASELINE_ARM: compare ARM with BASELINE_ARM, paired over seeds")
    args = ap.parse_args()
    baselines = dict(b.split("=", 1) for b in args.baseline)
    env = {**provenance(), "command": sys.argv, "threads": torch.get_num_threads(),
           "platform": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    records: list[dict] = []
    methods: dict[str, dict] = {}

    quiet = Console(file=io.StringIO())
    runs = Path(args.runs) / (args.out.stem if args.out else "compare")
    for spec in args.arm:
        name, preset, over = parse_arm(spec)
        rows, seconds = [], []
        for seed in range(args.seeds):
            cfg = config.load(preset, [*args.set, *over, f"train.seed={seed}",
                                       f"run.root={runs}", f"run.name={name}-s{seed}"])
            t0 = time.perf_counter()
            run = train(cfg, console=quiet)
            seconds.append(time.perf_counter() - t0)
            rows.append(json.loads((run.path / "metrics.json").read_text()))
            records.extend(run_records(name, seed, rows[-1], config_hash(cfg), seconds[-1]))
            final = rows[-1]["final"]
            print(f"{name} seed {seed}: MAP@R {final['map_at_r']:.4f} "
                  f"(untrained {rows[-1]['untrained']['map_at_r']:.4f}) "
                  f"{seconds[-1]:.0f} s", flush=True)
        for variant in {r["method"] for r in records
                        if r["method"] == name or r["method"].startswith(f"{name}/")}:
            methods[variant] = {"preset": preset, "overrides": over,
                                "baseline": baselines.get(variant)}
        doc = {"schema": SCHEMA,
               "benchmark": {"name": args.out.stem if args.out else "compare",
                             "seeds": args.seeds},
               "environment": env, "methods": methods, "records": records}
        if args.out:  # after every arm, so an interrupted comparison keeps what it measured
            write(args.out, doc, args.title, args.seeds)
    print("\n".join(compare_markdown(comparison(doc))))


def run_records(name: str, seed: int, metrics: dict, digest: str, seconds: float) -> list[dict]:
    """A run's records: its trained embedding(s) (``final``, ``final_<variant>`` as arm
    ``name/variant``) and its untrained network, each as the seed's only fold model (0)."""
    out = []
    for key, value in metrics.items():
        if key == "final" or key.startswith("final_"):
            arm = name if key == "final" else f"{name}/{key[len('final_'):]}"
            out.append(record(arm, "final", seed, 0, value, config_hash=digest,
                              wall_s=round(seconds, 3)))
            if "untrained" in metrics:
                out.append(record(arm, "untrained", seed, 0, metrics["untrained"]))
    return out


def write(out: Path, doc: dict, title: str, seeds: int) -> None:
    """``out``'s folder ``out.stem/results.json`` and ``out``: the command and the table."""
    folder = out.parent / out.stem
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(dumps(doc))
    root = Path.cwd()
    region = f"<!-- compare: {(folder / 'results.json').resolve().relative_to(root)} -->"
    text = "\n".join([f"## {title}", "", f"Command: `python {shlex.join(sys.argv)}`", "",
                      f"{seeds} seeds; commit, machine and every per-run number in "
                      f"[{out.stem}/results.json]({out.stem}/results.json).", "",
                      region, "<!-- /compare -->", ""])
    out.write_text(render_document(text, root))


if __name__ == "__main__":
    main()

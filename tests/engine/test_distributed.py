"""torch.distributed on CPU (gloo, 2 real processes) gives what one process gives on the global
batch: losses, gradients and method state of one training step; evaluation; whole runs through
``dmlkit train --devices 2``; and a resume with a different number of ranks."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Subset

from dmlkit import config as config_mod
from dmlkit.base import process_group
from dmlkit.base.files import load_weights
from dmlkit.data.build import build_data
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.evaluate import evaluate_model
from dmlkit.engine.seed import seed_everything
from dmlkit.engine.train import build_components
from dmlkit.evaluation.extract import extract_sharded
from dmlkit.models.embedding_model import build_model
from numeric import (
    CONV_REL,
    F32_REL,
    assert_trees_close,
    assert_whole_close,
    batch_sum_scale,
    magnitude,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# digits (8x8, deterministic transform), BatchNorm frozen (per-rank statistics on CPU).
BASE = {"data.name": "digits", "data.protocol": "zero_shot", "data.val_fraction": 0.0,
        "data.transform": "small", "data.image_size": 8, "model.freeze_bn": True,
        "model.backbone": "small_cnn", "model.head.dim": 16, "train.batch_size": 24,
        "train.m_per_class": 6, "train.seed": 5}
CASES = {
    "triplet": ("triplet-small", {}),
    "triplet+mdr": ("mdr-small", {}),
    "sharing": ("sharing-small", {"method.sharing.shared_dim": 8,
                                  "method.sharing.num_surrogate_labels": 12,
                                  "method.sharing.regressor_hidden": 16}),
    "sharing+mdr-on-shared": ("sharing-small", {"method.parts.sharing.shared_dim": 8,
                                                "method.parts.sharing.num_surrogate_labels": 12,
                                                "method.parts.sharing.regressor_hidden": 16,
                                                "method.parts.mdr": {"head": "shared"}}),
    "multi-similarity": ("triplet-small", {
        "model.head.output": "l2", "method.loss.name": "MultiSimilarityLoss",
        "method.loss.params": {}, "method.loss.miner": "MultiSimilarityMiner",
        "method.loss.miner_params": {}, "method.loss.distance": None, "method.loss.reducer": None,
        "method.loss.distance_params": {}}),
}


def case_config(case):
    preset, extra = CASES[case]
    keys = {**BASE, **extra}
    return config_mod.load(preset, [f"{k}={json.dumps(v)}" for k, v in keys.items()])


def one_iteration(case):
    """Every optimizer step of the first iteration: losses, gradients (model and method) after
    averaging over ranks, and the method's state (e.g. MDR statistics) afterwards."""
    cfg = case_config(case)
    place = process_group.info()
    data, method, model = build_components(cfg)
    batches = {}
    for name, sampler in method.batch_samplers(data.splits.train.labels, cfg.train).items():
        sampler.shard(place.rank, place.world_size)
        sampler.set_epoch(0)
        batches[name] = next(iter(DataLoader(data.stream(name), batch_sampler=sampler)))
    model.train()
    method.train()
    params = dict(model.named_parameters()) | {
        f"method.{k}": v for k, v in method.named_parameters()}
    torch.manual_seed(99)  # miners draw (distance-weighted negatives): the same on every rank
    steps = []
    with batch_sum_scale(model) as sum_scale:
        for losses in method.steps(model, batches, 0):
            for p in params.values():
                p.grad = None
            sum_scale[0] = 0.0
            losses["loss"].backward()
            process_group.average_gradients(list(params.values()))
            steps.append({"losses": {k: float(v.detach()) for k, v in losses.items()},
                          "grads": {k: p.grad.clone() for k, p in params.items()
                                    if p.grad is not None},
                          "sum_scale": sum_scale[0]})
    state = {k: v.clone() for k, v in method.state_dict().items()}
    return {"steps": steps, "method_state": state}


def evaluation():
    """Sharded extraction of an odd-sized set and the trainer's evaluation of a test split."""
    cfg = case_config("triplet")
    seed_everything(0)
    data = build_data(cfg.data, 0)
    model = build_model(cfg.model, data.in_channels).eval()
    odd = Subset(data.test.query, range(101))
    emb, labels = extract_sharded(model, odd, batch_size=16)
    return {"embeddings": emb, "labels": labels,
            "metrics": evaluate_model(model, data.test, cfg, torch.device("cpu"))}


JOBS = {"evaluation": evaluation, **{c: (lambda c=c: one_iteration(c)) for c in CASES}}


def _worker(rank, world, folder, job):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world)
    try:
        torch.save(JOBS[job](), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def on_two_ranks(tmp_path, job):
    mp.spawn(_worker, args=(2, str(tmp_path), job), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_on_two_ranks_equals_one_process_on_the_global_batch(tmp_path, case):
    single = one_iteration(case)
    ranks = on_two_ranks(tmp_path, case)
    assert len(single["steps"]) == (2 if case.startswith("sharing") else 1)
    for rank in ranks:
        assert len(rank["steps"]) == len(single["steps"])
        for got, want in zip(rank["steps"], single["steps"], strict=True):
            # the logged terms of the step at one scale; a count of mined triplets equal
            counts = {k for k in want["losses"] if k.endswith("_triplets")}
            assert {k: got["losses"][k] for k in counts} == {k: want["losses"][k] for k in counts}
            assert_trees_close({k: v for k, v in got["losses"].items() if k not in counts},
                               {k: v for k, v in want["losses"].items() if k not in counts},
                               rel=1e-4)
            assert len(want["grads"]) > 4
            # one scale for all gradients of the step. They are sums over the batch (12 + 12 on
            # the ranks, 24 in one process) and round at the scale of those sums' terms: a bias
            # whose true gradient is 0 (MDR is translation invariant) holds noise of its
            # per-sample terms' size (~50x the step's largest gradient under MDR), and a sum of
            # N terms rounds ~sqrt(N) times as much as one
            scale = max(magnitude(*want["grads"].values()), want["sum_scale"])
            assert_trees_close(got["grads"], want["grads"], scale=scale,
                               rel=F32_REL * math.sqrt(BASE["train.batch_size"]))
        # one scale for the method's state; integer state (e.g. MDR's flag) equal
        assert_trees_close(rank["method_state"], single["method_state"], rel=1e-5)
    # the ranks hold the same averaged gradients, bitwise by construction (two ranks: a + b
    # and b + a are the same float): their optimizer steps stay in lock-step
    for a, b in zip(ranks[0]["steps"], ranks[1]["steps"], strict=True):
        assert all(torch.equal(a["grads"][k], b["grads"][k]) for k in a["grads"])


def test_shared_miner_sees_the_global_batch(tmp_path):
    """The Sharing Matters shared step mines triplets over both ranks' images: the count equals
    one process's, and exceeds what one rank's half-batch could form."""
    single = one_iteration("sharing")["steps"][1]["losses"]["shared_triplets"]
    ranks = on_two_ranks(tmp_path, "sharing")
    assert [r["steps"][1]["losses"]["shared_triplets"] for r in ranks] == [single, single]
    assert single > 12  # one rank's half-batch holds 12 images (2 surrogate blocks)


def test_evaluation_on_two_ranks_equals_one_process(tmp_path):
    single = evaluation()
    ranks = on_two_ranks(tmp_path, "evaluation")
    for rank in ranks:
        assert rank["embeddings"].shape == single["embeddings"].shape == (101, 16)
        # 16-image shards vs one pass: two kernel paths through the small CNN
        assert_whole_close(rank["embeddings"], single["embeddings"], rel=CONV_REL)
        assert torch.equal(rank["labels"], single["labels"])
        assert rank["metrics"].keys() == single["metrics"].keys()
        for k, v in single["metrics"].items():
            assert rank["metrics"][k] == pytest.approx(v, abs=1e-6), k


def test_gather_by_index_orders_rows_and_refuses_lost_ones():
    rows = torch.tensor([[2.0], [0.0], [1.0]])
    out = process_group.gather_by_index(rows, torch.tensor([2, 0, 1]), 3)
    assert out.flatten().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(RuntimeError, match="lost or doubled"):
        process_group.gather_by_index(rows, torch.tensor([2, 0, 0]), 3)


# ---------------------------------------------------------------- whole runs, real processes
# Whole runs agree with one process to float precision only where the trajectory does not
# amplify float rounding: SGD (Adam's g / sqrt(v) turns rounding in near-zero gradients into
# full-size steps) and a loss without discrete selections (a thresholded miner or MDR's
# nearest-level assignment flips on rounding, as it does in one process when only the thread
# count changes; docs/results/distributed-cpu.md). MDR and the miners are compared step by
# step above.
RUN = ["digits-smoke", "--set", "model.freeze_bn=true", "--set", "eval.nmi=false",
       "--set", "optim.name=sgd", "--set", "optim.lr=0.01", "--set", "method.loss.miner=null",
       "--set", "train.epochs=2", "--set", "train.batches_per_epoch=6",
       "--set", "train.checkpoint_every=0"]


def dmlkit_train(root, name, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "dmlkit", "train", *RUN, "--set",
                          f"run.root={root}", "--set", f"run.name={name}", *extra],
                         env=env, cwd=root, text=True, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def assert_same_run(a, b, metric_tol=1e-4):
    # one scale, the model's: a bias of ~1e-5 next to weights of ~0.1 is rounding noise
    assert_trees_close(load_weights(b / "model.safetensors"), load_weights(a / "model.safetensors"),
                       rel=1e-4)
    ma = json.loads((a / "metrics.json").read_text())["final"]
    mb = json.loads((b / "metrics.json").read_text())["final"]
    for k, v in ma.items():
        assert mb[k] == pytest.approx(v, abs=metric_tol), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dmlkit_train(root, "one")
    two = dmlkit_train(root, "two", "--devices", "2")
    return root, two


def test_devices_2_trains_the_same_model_as_one_process(runs):
    root, two = runs
    assert two.stdout.count("test metrics") == 1  # rank 0 alone reports
    assert_same_run(root / "one", root / "two")
    # rank 0 alone wrote: one header, one row per epoch
    assert len((root / "two" / "metrics.csv").read_text().splitlines()) == 3
    assert not list(root.glob("two-[0-9]*"))  # one run directory, not one per rank


def test_reproduce_uses_the_original_number_of_processes(runs):
    root, _ = runs
    assert json.loads((root / "two" / "env.json").read_text())["world_size"] == 2
    assert json.loads((root / "one" / "env.json").read_text())["world_size"] == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "dmlkit", "reproduce", str(root / "two")],
                         env=env, cwd=root, text=True, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("reproduction") == 1 and "note:" not in res.stdout
    assert json.loads((root / "two-reproduced" / "env.json").read_text())["world_size"] == 2
    assert_same_run(root / "two", root / "two-reproduced")


def test_resume_with_a_different_number_of_ranks(runs):
    """A 2-rank run cut back to its epoch-1 checkpoint, resumed on 1 process, ends as it did."""
    root, _ = runs
    cut = root / "cut"
    shutil.copytree(root / "two", cut)
    folder = CheckpointFolder(cut / "checkpoints")
    for path in folder.files(2):
        path.unlink()
    for name in ("model.safetensors", "metrics.json"):
        (cut / name).unlink()
    assert folder.pairs() == [(1, 0)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "dmlkit", "train", "--resume", str(cut)],
                         env=env, cwd=root, text=True, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "from state-0001.pt" in res.stdout
    assert_same_run(root / "two", cut)
    assert_same_run(root / "one", cut)


def test_batch_not_divisible_by_ranks_is_a_config_error(tmp_path):
    from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
    from dmlkit.errors import ConfigError

    sampler = MPerClassBatchSampler(np.repeat(np.arange(4), 10), batch_size=12, m=4)
    with pytest.raises(ConfigError, match="not divisible by 5 ranks"):
        sampler.shard(0, 5)


GUIDED = ["guided-small", "--set", "data.name=digits", "--set", "data.protocol=closed_set",
          "--set", "data.image_size=16", "--set", "data.max_per_class=null",
          "--set", "train.batches_per_epoch=5", "--set", "train.epochs=2",
          "--set", "model.freeze_bn=true", "--set", "eval.nmi=false",
          "--set", "method.guided.master_epochs=1", "--set", "optim.name=sgd",
          "--set", "optim.lr=0.001"]


def test_guided_targets_are_computed_once_and_shared_by_the_ranks(tmp_path):
    """Rank 0 computes the targets (of the master run "one" cached) and caches them; rank 1
    loads them; the student run equals one process's."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, extra in (("one", []), ("two", ["--devices", "2"])):
        res = subprocess.run([sys.executable, "-m", "dmlkit", "train", *GUIDED, "--set",
                              f"run.root={tmp_path}", "--set", f"run.name={name}", *extra],
                             env=env, cwd=tmp_path, text=True, capture_output=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        if extra:
            assert "master epoch" not in res.stdout  # the master of run "one", from the cache
    masters = list((tmp_path / "cache" / "guided-masters").glob("*/master.safetensors"))
    assert len(masters) == 1  # the second run read the first one's master
    a, b = (load_weights(tmp_path / name / "targets/master.safetensors") for name in ("one", "two"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # one file, read twice: bitwise
    # 2-d student embeddings: float-noise weight differences can swap one near-tied neighbour
    assert_same_run(tmp_path / "one", tmp_path / "two", metric_tol=0.01)


def test_benchmark_under_torchrun_is_refused(monkeypatch):
    from typer.testing import CliRunner

    from dmlkit.cli.app import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["benchmark", "fashion-mnist-cpu"])
    assert result.exit_code == 2 and "not under torchrun" in result.output


def test_bn_train_mode_evaluation_is_refused_on_several_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "dmlkit", "train", *RUN, "--set",
                          f"run.root={tmp_path}", "--set", "eval.bn_train_mode=true",
                          "--devices", "2"], env=env, cwd=tmp_path, text=True,
                         capture_output=True, timeout=300)
    assert res.returncode == 2
    assert "eval.bn_train_mode" in res.stderr and "needs one process" in res.stderr
    assert "failed on rank(s)" in res.stderr


def _rank_pids(parent_pid):
    """{rank: pid} of the torchrun workers under ``parent_pid`` (read from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent_pid:
            continue
        for var in environ:
            if var.startswith(b"RANK="):
                found[int(var[5:])] = int(entry)
    return found


def test_a_signal_to_one_rank_stops_all_and_the_run_resumes(tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop after the same step, rank 0 checkpoints, the
    launcher exits 143; resumed on one process the run ends as an uninterrupted one."""
    long = [*RUN, "--set", "train.batches_per_epoch=40", "--set", "train.checkpoint_every=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(name, *extra):
        return [sys.executable, "-m", "dmlkit", "train", *long, "--set", f"run.root={tmp_path}",
                "--set", f"run.name={name}", *extra]

    proc = subprocess.Popen(cmd("cut", "--devices", "2"), env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = CheckpointFolder(tmp_path / "cut" / "checkpoints").files(0, 5)[0]
    deadline = time.monotonic() + 120
    while not first.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    os.kill(_rank_pids(proc.pid)[1], signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err and "--resume" in out + err
    assert not (tmp_path / "cut" / "metrics.json").exists()
    res = subprocess.run([sys.executable, "-m", "dmlkit", "train", "--resume",
                          str(tmp_path / "cut")], env=env, cwd=tmp_path, text=True,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    full = subprocess.run(cmd("full"), env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert full.returncode == 0
    assert_same_run(tmp_path / "full", tmp_path / "cut")

"""Search workers that draw the same parameters share one run: a 2-value categorical space,
4 trials and 2 workers on one SQLite study, 10 times over, each worker starting each round at
the same instant (issue 30, item 1)."""

import json
import os
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

ROUNDS = 10

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import optuna
    from dmlkit.protocol.benchmark import run_benchmark
    from dmlkit.protocol.benchmark_config import BenchmarkConfig
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    root, worker, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for r in range(rounds):
        (root / f"ready-{r}-{worker}").touch()
        deadline = time.monotonic() + 120
        while not (root / f"ready-{r}-{1 - worker}").exists():  # start together
            if time.monotonic() > deadline:
                sys.exit(f"round {r}: the other worker did not start")
            time.sleep(0.01)
        bench = BenchmarkConfig.model_validate_json((root / "bench.json").read_text())
        bench = bench.model_copy(update={"name": f"c{r}", "output": str(root / f"out{r}"),
                                        "seed": r})  # other draws each round
        run_benchmark(bench, "search", f"sqlite:///{root / 'study.db'}", worker)
""")


@pytest.mark.slow
def test_two_workers_on_a_categorical_space_share_runs(tmp_path):
    bench = {
        "name": "c", "output": "", "folds": 2, "seeds": 1, "trials": 4, "prune_after": None,
        "sampler": "random", "heartbeat_s": 1, "grace_s": 60,
        "set": {"train.m_per_class": 12, "train.epochs": 1, "train.batches_per_epoch": 1,
                "model.head.dim": 8, "eval.nmi": False, "eval.evaluate_untrained": False},
        "methods": {"triplet": {"preset": "digits-smoke", "search": {
            "optim.lr": {"type": "categorical", "choices": [0.001, 0.002]}}}},
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(w), str(ROUNDS)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for w in (0, 1)]
    outs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for r in range(ROUNDS):
        trials = optuna.load_study(study_name=f"c{r}/triplet", storage=storage).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, r  # exact count
        lrs = {t.params["optim.lr"] for t in trials}
        scores = {}
        for t in trials:  # the same parameters: the same (shared) result
            assert scores.setdefault(t.params["optim.lr"], t.value) == t.value, r
        runs = sorted(p.name for p in (tmp_path / f"out{r}" / "triplet").iterdir()
                      if p.is_dir())
        assert len(runs) == 2 * len(lrs), (r, runs)  # one run per (lr, fold): no duplicate
        assert not [n for n in runs if n.count("-") > 1], (r, runs)  # no "-2" copies

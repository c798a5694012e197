"""benchmarks/gpu_check.py: the comparison through the real trainer step catches injected
faults, stays silent without them, and the driver writes its report and JSON (tiny sizes on
the CPU, where the "device" is the CPU too)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check
import gpu_steps

TINY = gpu_check.Size(2, "small_cnn", 28, 24)


@pytest.fixture(scope="module")
def triplet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    built = gpu_steps.build(gpu_check.method_config("triplet", TINY, root), TINY.steps, root)
    return built, gpu_steps.run_steps(built, torch.device("cpu"))


def test_same_run_agrees_and_every_fault_is_caught(triplet):
    built, ref = triplet
    again = gpu_steps.run_steps(built, torch.device("cpu"))
    assert gpu_steps.compare(again, ref, gpu_steps.FP32)["ok"]
    assert gpu_steps.identical(again, ref)
    assert len(ref.losses) == TINY.steps and ref.grads
    for name, fault in gpu_steps.FAULTS.items():
        got = gpu_steps.run_steps(built, torch.device("cpu"), fault=fault)
        result = gpu_steps.compare(got, ref, gpu_steps.FP32)
        assert not result["grad_ok"], name  # the gradient bound alone catches each fault
        assert not result["ok"], name


def test_compare_scales_with_the_step():
    ref = gpu_steps.Steps([{"loss": 2.0}, {"loss": 1.0}],
                          {"a": torch.tensor([1.0, -4.0]), "b": torch.tensor([0.002])}, {})
    near = gpu_steps.Steps([{"loss": 2.0001}, {"loss": 1.001}],
                           {"a": torch.tensor([1.001, -4.001]), "b": torch.tensor([0.0])}, {})
    # b's gradient is dropped, but 0.002 is below 1e-3 of the step's scale 4: not caught
    assert gpu_steps.compare(near, ref, gpu_steps.FP32)["grad_ok"]
    assert gpu_steps.detectable(ref, gpu_steps.FP32) == (1, 2)
    missing = gpu_steps.Steps(near.losses, {"a": near.grads["a"]}, {})
    assert not gpu_steps.compare(missing, ref, gpu_steps.FP32)["ok"]
    nan = gpu_steps.Steps([{"loss": float("nan")}, {"loss": 1.0}], ref.grads, {})
    assert not gpu_steps.compare(nan, ref, gpu_steps.FP32)["ok"]
    assert gpu_steps.compare(near, ref, gpu_steps.BF16)["grad_ok"]  # not bounded


def test_driver_writes_report_and_json(tmp_path):
    out = tmp_path / "gpu-check.md"
    rc = gpu_check.main(["--dry-run", "--only", "selftest", "--steps", "2", "--out", str(out)])
    assert rc == 0
    report = out.read_text()
    assert "## selftest" in report and "| triplet, gradients x2 |" in report
    assert "FAIL" not in report
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["stages"]["selftest"]["ok"] and raw["dry_run"]


def test_unknown_stage_is_refused():
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--only", "nonsense"])


@pytest.mark.slow
def test_dry_run_of_every_stage(tmp_path):
    out = tmp_path / "gpu-check.md"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = out.read_text()
    for stage in gpu_check.STAGES:
        assert f"## {stage}:" in report
    assert "FAIL" not in report

"""tests/numeric.py: one scale for a whole tree, integer leaves equal, the margin log."""

import pytest
import torch

from numeric import assert_close_scaled, assert_trees_close, assert_whole_close


@pytest.fixture(autouse=True)
def _no_margin_log(monkeypatch):
    """These comparisons fail on purpose: they stay out of a margin run's log."""
    monkeypatch.delenv("DMLKIT_MARGIN_LOG", raising=False)


def test_a_noise_bias_is_judged_at_the_models_scale():
    """The AVX2 failure: a ~1e-5 bias off by 2.85e-8 next to weights of ~0.1 is rounding noise."""
    want = {"weight": torch.full((4, 4), 0.1), "bias": torch.full((4,), 1.27e-5)}
    got = {"weight": want["weight"].clone(), "bias": want["bias"] + 2.85e-8}
    assert_trees_close(got, want, rel=1e-4)
    with pytest.raises(AssertionError, match="bias"):  # at its own scale it would fail
        assert_whole_close(got["bias"], want["bias"], rel=1e-4, msg="bias")
    got["weight"][0, 0] += 1e-4  # 1e-3 of the weights' scale: a real difference
    with pytest.raises(AssertionError, match="weight"):
        assert_trees_close(got, want, rel=1e-4)


def test_trees_nest_and_compare_integer_leaves_exactly():
    """An optimizer state: floating leaves at one scale, step counts and hyperparameters equal."""
    want = {"state": {0: {"step": torch.tensor(3), "exp_avg": torch.ones(2)}},
            "param_groups": [{"lr": 0.1, "params": [0]}]}
    got = {"state": {0: {"step": torch.tensor(3), "exp_avg": torch.ones(2) + 1e-7}},
           "param_groups": [{"lr": 0.1, "params": [0]}]}
    assert_trees_close(got, want)
    got["state"][0]["step"] = torch.tensor(4)
    with pytest.raises(AssertionError, match=r"state\.0\.step"):
        assert_trees_close(got, want)
    with pytest.raises(AssertionError):
        assert_trees_close({"a": torch.ones(1)}, {"b": torch.ones(1)})


def test_a_piece_needs_its_scale():
    with pytest.raises(TypeError):
        assert_close_scaled(torch.ones(2), torch.ones(2))  # no default scale
    assert_close_scaled(torch.tensor([1e-6]), torch.tensor([0.0]), scale=1.0, rel=1e-5)


def test_margin_log(tmp_path, monkeypatch):
    log = tmp_path / "margins.tsv"
    monkeypatch.setenv("DMLKIT_MARGIN_LOG", str(log))
    assert_close_scaled(torch.tensor([1.0 + 5e-6]), torch.tensor([1.0]), scale=1.0, rel=1e-5,
                        msg="half")
    assert_whole_close(torch.zeros(3), torch.zeros(3))
    lines = log.read_text().splitlines()
    (test, label, ratio), (_, _, exact) = (line.split("\t") for line in lines)
    assert test.endswith("test_numeric.py::test_margin_log") and label == "half"
    assert float(ratio) == pytest.approx(0.25, rel=1e-2) and float(exact) == 0

"""Mixed precision: the forward under autocast, float32 into every loss; fp16's gradient scaler
skips overflowing steps instead of failing the run."""

import functools

import pytest
import torch

from dmlkit import config
from dmlkit.config import HeadConfig, ModelConfig
from dmlkit.engine import evaluate as evaluate_mod
from dmlkit.engine import trainer as trainer_mod
from dmlkit.engine.checkpoint import CheckpointFolder, load_state
from dmlkit.engine.precision import MixedPrecisionView, inference_view, training_view
from dmlkit.engine.train import train
from dmlkit.models.embedding_model import build_model
from numeric import assert_whole_close

pytestmark = pytest.mark.usefixtures("one_thread")


def model(output="l2"):
    return build_model(ModelConfig(backbone="small_cnn", head=HeadConfig(dim=8, output=output)),
                       1, extra_heads={"shared": 4})


def test_fp32_without_channels_last_is_the_model_itself():
    m = model()
    assert training_view(m, "fp32", torch.device("cpu")) is m


@pytest.mark.parametrize("output", ["l2", "raw", "mean_distance"])
def test_bf16_forward_hands_float32_to_the_losses(output):
    m = model(output).train()
    seen = []
    m.backbone.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    view = training_view(m, "bf16", torch.device("cpu"), channels_last=True)
    assert isinstance(view, MixedPrecisionView)
    x = torch.randn(6, 1, 8, 8)
    emb, heads = view(x), view.embed_heads(x)
    assert seen == [torch.bfloat16, torch.bfloat16]  # the backbone ran in bf16
    assert emb.dtype == torch.float32 and {v.dtype for v in heads.values()} == {torch.float32}
    emb.sum().backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in m.parameters())
    # close to the float32 forward: bf16 rounds every layer's output to 8 bits (unit roundoff
    # u = 2^-9 = 2e-3 of the activations' scale), and train-mode BatchNorm over 6 samples
    # divides by their spread: up to ~6u of the embeddings' scale seen, allowed 0.1 = 50u
    with torch.no_grad():
        assert_whole_close(emb, m(x), rel=0.1)


def smoke(tmp_path, *overrides):
    return config.load("digits-smoke", [f"run.root={tmp_path}", "eval.nmi=false", *overrides])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_train_and_checkpoint_the_scaler(tmp_path, precision):
    run = train(smoke(tmp_path, f"train.precision={precision}", "run.name=amp"))
    metrics = run.read_json("metrics.json")
    assert metrics["final"]["map_at_r"] > 0
    header = (run.path / "metrics.csv").read_text().splitlines()[0]
    assert ("fp16_overflow_steps" in header) == (precision == "fp16")
    folder = CheckpointFolder(run.checkpoints)
    state = load_state(folder.files(*folder.pairs()[-1])[0])
    assert state["scaler"]["scale"] if precision == "fp16" else not state["scaler"]


def test_fp16_overflow_is_skipped_and_counted_not_fatal(tmp_path, monkeypatch):
    """A huge initial loss scale overflows the fp16 gradients: the scaler skips those steps
    and halves its scale until the steps fit."""
    scaler = functools.partial(torch.amp.GradScaler, init_scale=2.0**26)
    monkeypatch.setattr(trainer_mod.torch.amp, "GradScaler", scaler)
    run = train(smoke(tmp_path, "train.precision=fp16", "run.name=overflow"))
    rows = (run.path / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("fp16_overflow_steps")
    overflows = [int(r.split(",")[col]) for r in rows[1:]]
    assert overflows[0] > 0 and sum(overflows) < 20  # 2 epochs x 10 batches: some steps ran


@pytest.mark.parametrize("channels_last", [False, True])
def test_evaluation_embeds_with_the_training_precision(tmp_path, monkeypatch, channels_last):
    """evaluate_model extracts through `inference_view` (autocast, channels_last), in the
    model's own mode; bf16 embeddings are close to float32's (bf16 keeps 8 mantissa bits)."""
    from dmlkit.data.build import build_data
    from dmlkit.evaluation.extract import extract_embeddings

    cfg = smoke(tmp_path, "train.precision=bf16", f"train.channels_last={channels_last}")
    data = build_data(cfg.data, cfg.train.seed)
    m = model().eval()
    want, _ = extract_embeddings(m, data.test.query, 64)
    seen = []
    real = evaluate_mod.extract_sharded

    def recording(view, *args):
        seen.append(view)
        return real(view, *args)

    monkeypatch.setattr(evaluate_mod, "extract_sharded", recording)
    evaluate_mod.evaluate_model(m, data.test, cfg, torch.device("cpu"))
    assert isinstance(seen[0], MixedPrecisionView) and seen[0].channels_last == channels_last
    assert not m.training  # the view took the model's mode, extraction restored it
    got, _ = extract_embeddings(seen[0], data.test.query, 64)
    assert got.dtype == torch.float32 and not torch.equal(got, want)
    # bf16 (unit roundoff u = 2^-9 = 2e-3) at every layer, eval mode: up to ~4u of the
    # embeddings' scale seen, allowed 0.05 = 25u
    assert_whole_close(got, want, rel=5e-2)
    assert inference_view(m, "fp32", torch.device("cpu")) is m  # fp32: the model itself

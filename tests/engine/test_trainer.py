import json

import pytest
import torch

from cli_output import HEARTBEAT
from dmlkit import config
from dmlkit.base.files import load_weights
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.checkpoint import load_state, save_state
from dmlkit.engine.train import build_components, train
from dmlkit.engine.trainer import Trainer
from dmlkit.errors import CheckpointError, ConfigError, TrainingError
from dmlkit.methods.composed import ComposedMethod


def smoke(tmp_path, *overrides):
    return config.load("digits-smoke", [f"run.root={tmp_path}", "eval.nmi=false", *overrides])


def test_run_directory_holds_everything(tmp_path):
    run = train(smoke(tmp_path, "run.name=a"))
    names = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "env.json", "metrics.csv", "metrics.json", "model.safetensors",
            "best.safetensors", "checkpoints"} <= names
    metrics = run.read_json("metrics.json")
    for key in ("untrained", "final"):
        assert {"precision_at_1", "recall_at_8", "r_precision", "map_at_r"} <= set(metrics[key])
    rows = (run.path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_map_at_r" in rows[0] and "train_loss" in rows[0]
    env = json.loads((run.path / "env.json").read_text())
    assert env["seed"] == 0 and env["packages"]["torch"]
    assert config.load(str(run.config_path)) == smoke(tmp_path, "run.name=a")


def test_same_seed_same_metrics(tmp_path):
    a = train(smoke(tmp_path, "run.name=a")).read_json("metrics.json")["final"]
    b = train(smoke(tmp_path, "run.name=b")).read_json("metrics.json")["final"]
    assert a == b


def test_resume_continues_exactly(tmp_path):
    full = train(smoke(tmp_path, "run.name=full")).read_json("metrics.json")["final"]
    run = train(smoke(tmp_path, "run.name=cut"))
    # simulate a run that died after epoch 1
    for name in ("state-0002.pt", "model-0002.safetensors"):
        (run.checkpoints / name).unlink()
    (run.path / "metrics.json").unlink()
    resumed = train(None, resume=run.path).read_json("metrics.json")
    assert resumed["final"] == full and resumed["epochs_trained"] == 2


def test_keeps_last_n_checkpoints(tmp_path):
    run = train(smoke(tmp_path, "run.name=k", "train.epochs=3", "train.keep_checkpoints=2"))
    assert sorted(p.name for p in run.checkpoints.glob("state-*")) == [
        "state-0002.pt", "state-0003.pt"]
    state = load_state(run.checkpoints / "state-0003.pt")
    assert state["epoch"] == 3 and "optimizer" in state
    assert load_weights(run.checkpoints / "model-0003.safetensors")


def test_non_finite_loss_is_reported(tmp_path, monkeypatch):
    def nan_compute(self, embeddings, labels):
        value = embeddings.sum() * float("nan")
        return {"metric_loss": value}, value

    monkeypatch.setattr(ComposedMethod, "compute", nan_compute)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1, iteration 1"):
        train(smoke(tmp_path, "run.name=nan"))


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "state.pt"
    save_state({"epoch": 1, "x": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable dmlkit checkpoint"):
        load_state(path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(bad)


def test_an_existing_run_is_never_reused(tmp_path):
    first = train(smoke(tmp_path, "run.name=same", "train.epochs=1"))
    second = train(smoke(tmp_path, "run.name=same", "train.epochs=1"))
    assert first.path.name == "same" and second.path.name == "same-2"
    assert len((first.path / "metrics.csv").read_text().splitlines()) == 2


def _sharing_trainer(tmp_path, streams: str) -> Trainer:
    cfg = config.load("sharing-small", [
        f"run.root={tmp_path}", "data.name=digits", "data.image_size=8", "data.transform=small",
        f"data.stream_transforms={streams}", "train.batch_size=24", "train.m_per_class=6",
        "method.sharing.num_surrogate_labels=12"])
    data, method, model = build_components(cfg)
    return Trainer(cfg, data, model, method, RunDir.create(cfg), torch.device("cpu"))


def test_each_stream_reads_the_training_set_with_its_own_transform(tmp_path):
    trainer = _sharing_trainer(tmp_path, "{shared: small_aug_noflip}")
    loaders = trainer._loaders()
    shared = trainer.data.train_streams["shared"]
    assert loaders["shared"].dataset is shared and loaders["class"].dataset is trainer.data.train
    assert shared.transform is not trainer.data.train.transform
    assert "RandomCrop" in repr(shared.transform) and "Flip" not in repr(shared.transform)
    assert "RandomCrop" not in repr(trainer.data.train.transform)
    # the same on the device path of in-memory data (batched transforms)
    assert shared.batched and trainer.data.train.batched
    assert (shared.batch_transform.crop, shared.batch_transform.flip) == (8, False)
    assert trainer.data.train.batch_transform.crop is None


def test_a_stream_transform_for_no_stream_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"names stream\(s\) sahred; this method's streams: "
                       r"class, shared"):
        _sharing_trainer(tmp_path, "{sahred: small_aug_noflip}")


def test_eval_batch_divisor_sets_the_extraction_batch(tmp_path, monkeypatch):
    """Guided DML's official extract_embedding: batch_size = len(dataset) // 30."""
    from dmlkit.data.build import build_data
    from dmlkit.engine import evaluate as evaluate_mod
    from dmlkit.models.embedding_model import build_model

    sizes = []
    real = evaluate_mod.extract_sharded

    def recording(model, dataset, batch_size, *args):
        sizes.append((len(dataset), batch_size))
        return real(model, dataset, batch_size, *args)

    monkeypatch.setattr(evaluate_mod, "extract_sharded", recording)
    cfg = smoke(tmp_path, "data.protocol=closed_set", "data.val_fraction=0",
                "eval.batch_divisor=30", "eval.bn_train_mode=true")
    data = build_data(cfg.data, cfg.train.seed)
    model = build_model(cfg.model, data.in_channels)
    evaluate_mod.evaluate_model(model, data.test, cfg, torch.device("cpu"))
    assert sizes and all(batch == n // 30 for n, batch in sizes)
    sizes.clear()
    evaluate_mod.evaluate_model(model, data.test, smoke(tmp_path), torch.device("cpu"))
    assert all(batch == 512 for _, batch in sizes)


def test_every_phase_announces_itself_on_stderr(tmp_path, capsys):
    train(smoke(tmp_path, "run.name=a", "train.epochs=1"))
    out, err = capsys.readouterr()
    phases = ["loading data (digits) ...", "building the model (small_cnn) ...",
              "untrained evaluation: embedding (225) ...", "untrained evaluation: metrics ...",
              "epoch 1/1: loss",
              "validation after epoch 1: embedding (273) ...",
              "validation after epoch 1: metrics ...",
              "final evaluation: embedding (225) ...", "final evaluation: metrics ...",
              "writing the report ..."]
    lines = [x for x in err.splitlines() if not HEARTBEAT.search(x)]  # a slow machine's extras
    assert len(lines) == len(phases)
    for line, expected in zip(lines, phases, strict=True):
        assert line.startswith(expected.removesuffix("..."))
    assert "\r" not in err and "\x1b" not in err  # stderr is no terminal here: plain lines
    assert not any(p in out for p in phases)  # progress never goes to stdout


def test_evaluation_device_is_the_training_device_only_on_cuda():
    from dmlkit.engine.evaluate import evaluation_device

    assert evaluation_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert evaluation_device(torch.device("cpu")) == torch.device("cpu")
    assert evaluation_device(torch.device("mps")) == torch.device("cpu")


def test_evaluation_keeps_the_embeddings_on_the_evaluation_device(tmp_path, monkeypatch):
    """evaluate_model asks `evaluation_device` where the embeddings go, extracts them there
    and evaluates them there (on CUDA: the kNN's topk and the torch k-means)."""
    from dmlkit.data.build import build_data
    from dmlkit.engine import evaluate as evaluate_mod
    from dmlkit.models.embedding_model import build_model

    asked, outs, got = [], [], []
    monkeypatch.setattr(evaluate_mod, "evaluation_device",
                        lambda device: asked.append(device) or torch.device("meta"))

    def extract(model, dataset, batch_size, device, workers, bn_train, advance, out_device):
        outs.append(out_device)
        return torch.zeros(len(dataset), 4, device=out_device), dataset.labels.to(out_device)

    def evaluate(q, ql, r, rl, **options):
        got.append((q.device, ql.device))
        return {"map_at_r": 0.0}

    monkeypatch.setattr(evaluate_mod, "extract_sharded", extract)
    monkeypatch.setattr(evaluate_mod, "evaluate", evaluate)
    monkeypatch.setattr(torch, "isfinite", lambda x: torch.ones((), dtype=torch.bool))
    cfg = smoke(tmp_path)
    data = build_data(cfg.data, cfg.train.seed)
    model = build_model(cfg.model, data.in_channels)
    assert evaluate_mod.evaluate_model(model, data.test, cfg, torch.device("cpu")) == {
        "map_at_r": 0.0}
    meta = torch.device("meta")
    assert asked == [torch.device("cpu")] and outs and set(outs) == {meta}
    assert got == [(meta, meta)]

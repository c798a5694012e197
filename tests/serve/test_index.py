import json
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
import torch

from dmlkit import config
from dmlkit.errors import CheckpointError, ConfigError
from dmlkit.serve.image_listing import list_images
from dmlkit.serve.index import (
    GalleryIndex,
    build_faiss_index,
    recall_vs_exact,
    sidecar_path,
)
from dmlkit.serve.load import load_run


def fake_run(distance="euclidean", normalize=True, fingerprint="a" * 64):
    cfg = config.load("digits-smoke", [f"eval.distance={distance}", f"eval.normalize={normalize}"])
    return SimpleNamespace(cfg=cfg, path="runs/fake", fingerprint=fingerprint)


def clustered(n=2000, d=16, centers=20, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 4
    return (c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def gallery(run_dir, digits_folder):
    loaded = load_run(run_dir)
    listing = list_images(digits_folder)
    emb = loaded.embed(listing.paths, progress=False)
    return loaded, listing, emb


def test_round_trip_each_image_finds_itself(gallery, tmp_path):
    loaded, listing, emb = gallery
    built = GalleryIndex.build(emb, listing.relative, loaded, listing.root, listing.labels,
                               listing.class_names)
    built.save(tmp_path / "g.index")
    index = GalleryIndex.load(tmp_path / "g.index")
    assert index.meta.run.fingerprint == loaded.fingerprint and index.meta.dim == emb.shape[1]
    index.check_run(loaded)
    hits = index.hits(emb, k=3)
    for i, row in enumerate(hits):
        top = row[0]
        assert top.score < 1e-3 and [h.rank for h in row] == [1, 2, 3]
        # itself, or an image with the same embedding (a duplicate digit) that tied with it
        assert top.id == i or torch.allclose(emb[top.id], emb[i], atol=1e-5)
        assert top.path == listing.relative[top.id]
        assert top.label == listing.class_names[int(listing.labels[top.id])]


def test_flat_scores_match_a_brute_force_loop():
    x = torch.from_numpy(clustered(300, 8))
    for distance, normalize in (("euclidean", False), ("cosine", False), ("dot", False),
                                ("euclidean", True)):
        idx = GalleryIndex.build(x, [str(i) for i in range(300)], fake_run(distance, normalize),
                                 ".")
        scores, ids = idx.search(x[:5], k=4)
        g = torch.nn.functional.normalize(x, dim=1) if normalize else x
        for qi in range(5):
            q = g[qi]
            if distance == "euclidean":
                ref = [float((q - g[j]).norm()) for j in range(300)]
                order = sorted(range(300), key=lambda j: ref[j])
            elif distance == "cosine":
                ref = [1 - float(torch.cosine_similarity(q, g[j], dim=0)) for j in range(300)]
                order = sorted(range(300), key=lambda j: ref[j])
            else:
                ref = [float(q @ g[j]) for j in range(300)]
                order = sorted(range(300), key=lambda j: -ref[j])
            assert ids[qi].tolist() == order[:4]
            np.testing.assert_allclose(scores[qi], [ref[j] for j in order[:4]], atol=1e-4)
    assert idx.score_name == "distance"
    assert GalleryIndex.build(x, [str(i) for i in range(300)], fake_run("dot"), ".") \
        .score_name == "similarity"


def test_recall_is_one_for_exact_and_exhaustive_searches_and_sane_otherwise():
    x = clustered()
    flat, _ = build_faiss_index(x, faiss.METRIC_L2, "flat")
    assert recall_vs_exact(flat, x, k=10, queries=200).recall_at_k == 1.0
    ivf_all, params = build_faiss_index(x, faiss.METRIC_L2, "ivf", nlist=16, nprobe=16)
    assert params == {"nlist": 16, "nprobe": 16}
    assert recall_vs_exact(ivf_all, x, k=10, queries=200).recall_at_k == 1.0
    ivf_one, _ = build_faiss_index(x, faiss.METRIC_L2, "ivf", nlist=40, nprobe=1)
    low = recall_vs_exact(ivf_one, x, k=10, queries=300)
    ivf_more, _ = build_faiss_index(x, faiss.METRIC_L2, "ivf", nlist=40, nprobe=8)
    high = recall_vs_exact(ivf_more, x, k=10, queries=300)
    assert 0.2 < low.recall_at_k < high.recall_at_k <= 1.0
    hnsw, _ = build_faiss_index(x, faiss.METRIC_INNER_PRODUCT, "hnsw", hnsw_m=16)
    assert recall_vs_exact(hnsw, x, k=10, queries=200).recall_at_k > 0.9


def test_recall_matches_a_set_based_loop():
    x = clustered(500, 8)
    ivf, _ = build_faiss_index(x, faiss.METRIC_L2, "ivf", nlist=12, nprobe=1)
    r = recall_vs_exact(ivf, x, k=5, queries=50, seed=3)
    rows = np.random.default_rng(3).choice(500, 50, replace=False)
    _, approx = ivf.search(x[rows], 5)
    total = 0.0
    for qi, row in enumerate(rows):
        d = ((x - x[row]) ** 2).sum(1)
        exact = set(np.argsort(d, kind="stable")[:5].tolist())
        total += len(exact & set(approx[qi].tolist())) / 5
    assert r.recall_at_k == pytest.approx(total / 50) and r.queries == 50 and r.k == 5


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_round_trip_with_recall(tmp_path, kind):
    x = torch.from_numpy(clustered(800, 8))
    idx = GalleryIndex.build(x, [f"{i}.png" for i in range(800)], fake_run(), "/g", kind=kind)
    assert idx.meta.recall is not None and 0.5 < idx.meta.recall.recall_at_k <= 1.0
    idx.save(tmp_path / "g.index")
    back = GalleryIndex.load(tmp_path / "g.index")
    assert back.meta == idx.meta
    assert (back.search(x[:20], 5)[1] == idx.search(x[:20], 5)[1]).all()
    if kind == "ivf":
        assert back.index.nprobe == idx.meta.params["nprobe"]
    else:
        assert back.index.hnsw.efSearch == 64


@pytest.fixture
def saved(tmp_path):
    x = torch.from_numpy(clustered(100, 4))
    idx = GalleryIndex.build(x, [f"{i}.png" for i in range(100)], fake_run(), "/g")
    idx.save(tmp_path / "g.index")
    return tmp_path / "g.index"


def _edit_sidecar(path, **changes):
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def test_truncated_index(saved):
    saved.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        GalleryIndex.load(saved)


def test_garbage_with_matching_checksum_is_still_refused(saved):
    import hashlib

    junk = b"not a faiss index" * 4
    saved.write_bytes(junk)
    _edit_sidecar(saved, index_sha256=hashlib.sha256(junk).hexdigest())
    with pytest.raises(CheckpointError, match="not a readable faiss index"):
        GalleryIndex.load(saved)


@pytest.mark.parametrize("changes,message", [
    ({"dim": 5}, "sidecar describes a flat index of 100 x 5"),
    ({"kind": "hnsw"}, "IndexFlatL2"),
    ({"distance": "dot"}, "sidecar describes"),
    ({"count": 7}, "100 paths for 7 vectors"),
    ({"format_version": 2}, "index format 2"),
    ({"format": "other"}, "not a dmlkit index sidecar"),
    ({"paths": ["../secret.png"] * 100}, "leaves the gallery folder"),
    ({"labels": [0]}, "1 labels for 100 vectors"),
    ({"run": {"path": "x", "fingerprint": "nothex"}}, "run.fingerprint"),
    ({"surprise": 1}, "'surprise'"),
])
def test_bad_sidecars(saved, changes, message):
    _edit_sidecar(saved, **changes)
    with pytest.raises(CheckpointError, match=message):
        GalleryIndex.load(saved)


def test_unreadable_or_missing_sidecar(saved):
    sidecar_path(saved).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        GalleryIndex.load(saved)
    sidecar_path(saved).unlink()
    with pytest.raises(CheckpointError, match="needs the sidecar"):
        GalleryIndex.load(saved)


def test_other_model_or_dimension_is_refused(saved):
    idx = GalleryIndex.load(saved)
    with pytest.raises(CheckpointError, match="rebuild the index"):
        idx.check_run(fake_run(fingerprint="b" * 64))
    with pytest.raises(CheckpointError, match="dimension 4"):
        idx.search(torch.zeros(2, 32))
    with pytest.raises(ConfigError, match="k must be at least 1"):
        idx.search(torch.zeros(2, 4), k=0)


def test_build_errors():
    x = torch.from_numpy(clustered(50, 4))
    with pytest.raises(ConfigError, match="unknown index kind"):
        GalleryIndex.build(x, [str(i) for i in range(50)], fake_run(), ".", kind="lsh")
    with pytest.raises(ConfigError, match="exceeds"):
        build_faiss_index(x.numpy(), faiss.METRIC_L2, "ivf", nlist=60)
    for bad in ({"nlist": 0}, {"nprobe": -1}, {"hnsw_m": 1}, {"ef_search": 0}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} is too small"):
            build_faiss_index(x.numpy(), faiss.METRIC_L2, "ivf", **bad)

"""evaluate()/Evaluator vs PML's AccuracyCalculator, brute-force loops and hand-computed cases."""

import logging

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

import dmlkit.evaluation.evaluator as evaluator_module
from dmlkit.errors import ConfigError, EvaluationError
from dmlkit.evaluation import Evaluator, concatenate_normalized, evaluate

logging.getLogger("PML").setLevel(logging.ERROR)
PML_NAMES = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
    "nmi": "NMI",
    "ami": "AMI",
}
PML_SEED = 1234  # faiss.Kmeans' default seed, which PML's k-means uses


def _data(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, n_classes = 120, 9
    labels = rng.integers(0, n_classes, n)
    if kind == "random":
        centers = rng.standard_normal((n_classes, 6))
        x = centers[labels] + 1.5 * rng.standard_normal((n, 6))
    else:  # integer coordinates: exact ties; a quarter of the rows duplicate other rows
        x = rng.integers(-2, 3, (n, 4)).astype(np.float64)
        x[rng.integers(0, n, n // 4)] = x[rng.integers(0, n, n // 4)]
    labels[:3] = [100, 101, 102]  # singleton classes: lone queries in compared-to-self mode
    return x.astype(np.float32), labels


def _pml(args: tuple, avg_of_avgs: bool = False, **kwargs) -> dict:
    calc = AccuracyCalculator(
        include=tuple(PML_NAMES.values()),
        k="max_bin_count",
        avg_of_avgs=avg_of_avgs,
        device=torch.device("cpu"),
        **kwargs,
    )
    return calc.get_accuracy(*[torch.from_numpy(a) for a in args])


def _split(x: np.ndarray, y: np.ndarray) -> tuple:
    """Query = first third, gallery = the rest (some query classes are then lone)."""
    n = len(x) // 3
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("mode", ["self", "query_gallery"])
@pytest.mark.parametrize("avg_of_avgs", [False, True])
def test_matches_pml_accuracy_calculator(kind: str, mode: str, avg_of_avgs: bool) -> None:
    for seed in range(3):
        x, y = _data(kind, seed)
        args = (x, y) if mode == "self" else _split(x, y)
        ours = evaluate(*args, avg_of_avgs=avg_of_avgs, kmeans_seed=PML_SEED)
        pml = _pml(args, avg_of_avgs)
        for name, pml_name in PML_NAMES.items():
            assert ours[name] == pytest.approx(pml[pml_name], abs=1e-6), (seed, name)


@pytest.mark.parametrize("mode", ["self", "query_gallery"])
def test_map_at_k_matches_pml_mean_average_precision(mode: str) -> None:
    x, y = _data("ties", 4)
    args = (x, y) if mode == "self" else _split(x, y)
    for k in (1, 5, 30):
        calc = AccuracyCalculator(
            include=("mean_average_precision",), k=k, device=torch.device("cpu")
        )
        pml = calc.get_accuracy(*[torch.from_numpy(a) for a in args])
        ours = evaluate(*args, map_at_k=k, metrics=["map_at_k"])
        assert ours == {f"map_at_{k}": pytest.approx(pml["mean_average_precision"], abs=1e-6)}


def test_per_class_matches_pml_return_per_class() -> None:
    x, y = _data("random", 5)
    ours = evaluate(x, y, per_class=True, metrics=["precision_at_1", "r_precision", "map_at_r"])
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        return_per_class=True,
        device=torch.device("cpu"),
    )
    pml = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    not_lone = [c for c in np.unique(y) if (y == c).sum() > 1]  # PML lists these classes only
    for name in ("precision_at_1", "r_precision", "map_at_r"):
        got = [ours["per_class"][int(c)][name] for c in not_lone]
        np.testing.assert_allclose(got, pml[PML_NAMES[name]], atol=1e-6)
    for lone in (100, 101, 102):
        assert np.isnan(ours["per_class"][lone]["map_at_r"])


@pytest.mark.parametrize("mode", ["self", "query_gallery"])
def test_recall_at_k_matches_a_brute_force_loop(mode: str) -> None:
    x, y = _data("ties", 6)
    q, qy, r, ry = (x, y, x, y) if mode == "self" else _split(x, y)
    ks = (1, 2, 4, 8, 16, 1000)
    ours = evaluate(
        q, qy, *(() if mode == "self" else (r, ry)), recall_ks=ks, metrics=["recall_at_k"]
    )
    hits = {k: [] for k in ks}
    for i in range(len(q)):
        candidates = [j for j in range(len(r)) if not (mode == "self" and j == i)]
        if not any(ry[j] == qy[i] for j in candidates):
            continue  # lone query
        dist = [float(((q[i].astype(np.float64) - r[j]) ** 2).sum()) for j in candidates]
        ranked = [candidates[p] for p in sorted(range(len(candidates)), key=lambda p: dist[p])]
        for k in ks:  # sorted() is stable: equal distances keep the lower index first
            hits[k].append(any(ry[j] == qy[i] for j in ranked[:k]))
    assert ours == {f"recall_at_{k}": pytest.approx(np.mean(hits[k])) for k in ks}


def test_chunked_parallel_and_unchunked_agree() -> None:
    x, y = _data("ties", 7)
    full = evaluate(x, y, map_at_k=10, metrics=None, chunk_size=len(x), workers=1)
    for chunk_size, workers in ((1, 1), (7, 2), (None, 3)):
        got = evaluate(x, y, map_at_k=10, chunk_size=chunk_size, workers=workers)
        assert got == full


def test_hand_computed_case() -> None:
    # 1-D points; labels: a = {0, 1}, b = {3, 3.5}, c = {10} (lone)
    x = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    y = [0, 0, 1, 1, 2]
    got = evaluate(x, y, recall_ks=(1,), per_class=True, metrics=["recall_at_k", "map_at_r"])
    # every non-lone query's nearest neighbour is its class-mate; the lone query is left out
    assert got["recall_at_1"] == 1.0 and got["map_at_r"] == 1.0
    assert got["per_class"][2] == {
        "recall_at_1": pytest.approx(np.nan, nan_ok=True),
        "map_at_r": pytest.approx(np.nan, nan_ok=True),
    }
    # gallery mode: query 2.0 (label 0) ranks 1.0 (label 0), 3.0 (label 1), 0.0 (label 0)
    got = evaluate([[2.0]], [0], [[0.0], [1.0], [3.0]], [0, 0, 1], recall_ks=(1, 2))
    assert got["precision_at_1"] == 1.0 and got["r_precision"] == 0.5
    # ties at distance 1 put index 1 (hit) before index 2 (miss); MAP@R = (1/1) / 2
    assert got["map_at_r"] == 0.5
    # MAP@3 = (1/1 + 2/3) / R with R = 2
    assert evaluate(
        [[2.0]], [0], [[0.0], [1.0], [3.0]], [0, 0, 1], map_at_k=3, metrics=["map_at_k"]
    ) == {"map_at_3": pytest.approx((1 + 2 / 3) / 2)}


def test_all_lone_queries_give_nan() -> None:
    x = np.arange(8, dtype=np.float32)[:, None]
    got = evaluate(x, np.arange(8))
    assert all(np.isnan(got[k]) for k in got if k not in ("nmi", "ami"))
    assert got["nmi"] == pytest.approx(1.0)
    got = evaluate(x[:2], [0, 1], x[2:], [2, 3, 4, 5, 6, 7])  # no query class in the gallery
    assert np.isnan(got["map_at_r"]) and np.isnan(got["precision_at_1"])


def test_metric_subsets_skip_unrequested_work(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data("random", 8)

    def forbidden(*args, **kwargs):
        raise AssertionError("should not run")

    monkeypatch.setattr(evaluator_module, "clustering_scores", forbidden)
    got = evaluate(x, y, metrics=["precision_at_1", "map_at_r"])
    assert list(got) == ["precision_at_1", "map_at_r"]
    monkeypatch.undo()
    monkeypatch.setattr(evaluator_module, "map_neighbours", forbidden)
    assert list(evaluate(x, y, metrics=["ami", "nmi"])) == ["nmi", "ami"]


def test_default_keys_and_kmeans_seed() -> None:
    x, y = _data("random", 9)
    got = evaluate(x, y, map_at_k=5)
    assert list(got) == [
        "precision_at_1",
        "recall_at_1",
        "recall_at_2",
        "recall_at_4",
        "recall_at_8",
        "r_precision",
        "map_at_r",
        "map_at_5",
        "nmi",
        "ami",
    ]
    assert got["precision_at_1"] == got["recall_at_1"]
    assert evaluate(x, y, kmeans_seed=3)["nmi"] == evaluate(x, y, kmeans_seed=3)["nmi"]


def test_distances_and_normalization() -> None:
    x, y = _data("random", 10)
    cosine = evaluate(x, y, distance="cosine")
    assert cosine == evaluate(x, y, normalize=True)
    assert cosine == evaluate(x, y, distance="dot", normalize=True)
    assert evaluate(x, y) != cosine
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert evaluate(unit, y, distance="dot") == pytest.approx(evaluate(unit, y))


def test_evaluator_is_reusable_and_accepts_tensors() -> None:
    x, y = _data("random", 11)
    ev = Evaluator(recall_ks=(1, 2), avg_of_avgs=True)
    first = ev(torch.from_numpy(x), torch.from_numpy(y))
    assert ev.evaluate(x, y) == first == evaluate(x, y, recall_ks=(1, 2), avg_of_avgs=True)
    assert evaluate(x.astype(np.float64), y.astype(np.float64)) == evaluate(x, y)


def test_concatenate_normalized() -> None:
    a, b = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), np.array([[1.0], [-5.0]])
    got = concatenate_normalized([a, b])
    torch.testing.assert_close(got, torch.tensor([[0.6, 0.8, 1.0], [0.0, 1.0, -1.0]]))
    with pytest.raises(EvaluationError, match="different numbers of rows"):
        concatenate_normalized([a, b[:1]])
    with pytest.raises(EvaluationError):
        concatenate_normalized([])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((0, 3)), []), "empty"),
        ((np.zeros((4, 0)), [0, 0, 1, 1]), "empty"),
        ((np.zeros(4), [0, 0, 1, 1]), "2-D"),
        ((np.array([[0.0], [np.nan], [1.0]]), [0, 0, 1]), "NaN or infinite"),
        ((np.array([[0.0], [np.inf], [1.0]]), [0, 0, 1]), "NaN or infinite"),
        ((np.array([[1e30], [0.0], [1.0]]), [0, 0, 1]), "too large"),
        ((np.zeros((3, 2)), [0, 1]), "2 entries but there are 3"),
        ((np.zeros((3, 2)), [[0], [1], [1]]), "1-D"),
        ((np.zeros((3, 2)), [0.5, 1, 1]), "integer"),
        ((np.zeros((3, 2)), ["a", "b", "b"]), "integer"),
        ((np.array([["a", "b"]]), [0]), "numeric"),
        ((np.zeros((3, 2)), [4, 4, 4]), "one label"),
        ((np.zeros((3, 2)), [0, 1, 1], np.zeros((2, 3)), [0, 1]), "dims"),
        ((np.zeros((3, 2)), [0, 1, 1], np.zeros((2, 2)), [0]), "1 entries but there are 2"),
        ((np.zeros((3, 2)), [0, 1, 1], np.zeros((2, 2))), "both reference and reference_labels"),
    ],
)
def test_invalid_inputs(args: tuple, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distance": "manhattan"}, "unknown distance"),
        ({"metrics": ["precision_at_5"]}, "unknown metrics"),
        ({"metrics": ["map_at_k"]}, "needs map_at_k"),
        ({"map_at_k": 0}, "positive integer"),
        ({"recall_ks": (0, 1)}, "recall_ks"),
        ({"recall_ks": ()}, "recall_ks"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Evaluator(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = _data("ties", 12)
    assert evaluate(torch.from_numpy(x).cuda(), y) == evaluate(x, y)


def test_progress_names_the_neighbour_search_and_the_k_means(capsys):
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    quiet = evaluate(x, torch.arange(40) % 4)
    assert capsys.readouterr().err == ""
    shown = evaluate(x, torch.arange(40) % 4, progress="scoring e.npz")
    assert shown == quiet
    assert capsys.readouterr().err == ("scoring e.npz: nearest neighbours (40) ...\n"
                                       "scoring e.npz: k-means (nmi, ami) ...\n")


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_ref_includes_query_and_pml_keys_match_pml(kind: str) -> None:
    """PML's query-in-reference mode, results read under PML's own key names."""
    x, y = _data(kind, 5)
    extra_x, extra_y = _data(kind, 6)
    query, query_labels = x[:50], y[:50]
    reference = np.concatenate([query, extra_x])
    reference_labels = np.concatenate([query_labels, extra_y])
    args = (query, query_labels, reference, reference_labels)
    ours = evaluate(*args, ref_includes_query=True, kmeans_seed=PML_SEED, pml_keys=True)
    pml = AccuracyCalculator(
        include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu")
    ).get_accuracy(*[torch.from_numpy(a) for a in args], ref_includes_query=True)
    for name in PML_NAMES.values():
        assert ours[name] == pytest.approx(pml[name], abs=1e-6), name


def test_ref_includes_query_needs_the_queries_first() -> None:
    x, y = _data("random", 7)
    with pytest.raises(EvaluationError, match="ref_includes_query"):
        evaluate(x[:10], y[:10], x[5:], y[5:], ref_includes_query=True)

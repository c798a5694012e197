"""load_embeddings: every format round-trips; bad files raise EvaluationError; no unpickling."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dmlkit.errors import EvaluationError
from dmlkit.evaluation import load_embeddings

EMB = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
LABELS = np.array([3, 3, 8, 8])
QUERY = np.array([True, False, True, False])


def _check(got: tuple, extra_keys: tuple = ()) -> None:
    emb, labels, extra = got
    np.testing.assert_allclose(emb, EMB, rtol=1e-6)
    assert emb.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, LABELS)
    assert sorted(extra) == sorted(extra_keys)
    for key in extra_keys:
        np.testing.assert_array_equal(extra[key], QUERY)


def test_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "e.npz", embeddings=EMB, labels=LABELS, is_query=QUERY)
    _check(load_embeddings(tmp_path / "e.npz"), ("is_query",))


def test_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    save_file({"embeddings": EMB, "labels": LABELS, "query_mask": QUERY}, str(path))
    _check(load_embeddings(path), ("query_mask",))


def test_npy_with_labels_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", EMB)
    np.save(tmp_path / "y.npy", LABELS)
    (tmp_path / "y.txt").write_text("\n".join(map(str, LABELS)) + "\n")
    _check(load_embeddings(tmp_path / "x.npy", tmp_path / "y.npy"))
    _check(load_embeddings(tmp_path / "x.npy", labels_path=tmp_path / "y.txt"))
    with pytest.raises(EvaluationError, match="labels file"):
        load_embeddings(tmp_path / "x.npy")
    with pytest.raises(EvaluationError, match="not found"):
        load_embeddings(tmp_path / "x.npy", tmp_path / "missing.npy")


def test_csv_without_and_with_header(tmp_path: Path) -> None:
    rows = [f"{y}," + ",".join(repr(float(v)) for v in e) for y, e in zip(LABELS, EMB, strict=True)]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    _check(load_embeddings(tmp_path / "plain.csv"))
    lines = ["d0,label,d1,is_gallery,d2"] + [
        f"{e[0]!r},{y},{e[1]!r},{int(g)},{e[2]!r}"
        for y, e, g in zip(LABELS, EMB.tolist(), QUERY, strict=True)
    ]
    (tmp_path / "named.csv").write_text("\n".join(lines) + "\n")
    _check(load_embeddings(tmp_path / "named.csv"), ("is_gallery",))


def test_never_unpickles(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", embeddings=np.array([object()]), labels=LABELS)
    with pytest.raises(EvaluationError, match="cannot read"):
        load_embeddings(tmp_path / "obj.npz")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"embeddings": EMB}, "missing"),
        ({"embeddings": EMB, "labels": LABELS[:3]}, "4 embeddings but labels"),
        ({"embeddings": EMB[0], "labels": LABELS}, "n x d"),
        ({"embeddings": np.where(EMB > 1, np.nan, EMB), "labels": LABELS}, "NaN"),
        ({"embeddings": EMB, "labels": LABELS + 0.5}, "integers"),
        ({"embeddings": EMB, "labels": LABELS, "is_query": np.array([0, 2, 1, 1])}, "is_query"),
        ({"embeddings": EMB, "labels": np.array(["a", "b", "c", "d"])}, "numeric"),
    ],
)
def test_invalid_contents(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(EvaluationError, match=message):
        load_embeddings(tmp_path / "bad.npz")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="not found"):
        load_embeddings(tmp_path / "nothing.npz")
    (tmp_path / "e.parquet").write_text("x")
    with pytest.raises(EvaluationError, match="unsupported format"):
        load_embeddings(tmp_path / "e.parquet")
    (tmp_path / "e.npz").write_bytes(b"not a zip file")
    with pytest.raises(EvaluationError, match="cannot read"):
        load_embeddings(tmp_path / "e.npz")
    (tmp_path / "e.safetensors").write_bytes(b"garbage")
    with pytest.raises(EvaluationError, match="cannot read"):
        load_embeddings(tmp_path / "e.safetensors")
    (tmp_path / "e.csv").write_text("label,d0\n1,abc\n")
    with pytest.raises(EvaluationError, match="cannot read"):
        load_embeddings(tmp_path / "e.csv")
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n")
    with pytest.raises(EvaluationError, match="no 'label' column"):
        load_embeddings(tmp_path / "nolabel.csv")
    np.savez(tmp_path / "ok.npz", embeddings=EMB, labels=LABELS)
    with pytest.raises(EvaluationError, match=r"only used with \.npy"):
        load_embeddings(tmp_path / "ok.npz", tmp_path / "y.npy")


def test_labels_stay_exact(tmp_path: Path) -> None:
    """2^53 and 2^53 + 1 are two classes (float64 would merge them); labels beyond int64
    (1e19, 2e19) are two classes too, not one INT64_MIN."""
    big = [9007199254740992, 9007199254740993, 9007199254740992, 9007199254740993]
    rows = [f"{y}," + ",".join(str(v) for v in e) for y, e in zip(big, EMB, strict=True)]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n")
    assert load_embeddings(tmp_path / "big.csv")[1].tolist() == big
    (tmp_path / "big.txt").write_text("\n".join(map(str, big)) + "\n")
    np.save(tmp_path / "e.npy", EMB)
    assert load_embeddings(tmp_path / "e.npy", tmp_path / "big.txt")[1].tolist() == big
    huge = ["1e19", "2e19", "1e19", "3.0"]
    lines = ["d0,label,d1,d2"] + [f"{e[0]},{y},{e[1]},{e[2]}" for y, e in zip(huge, EMB,
                                                                           strict=True)]
    (tmp_path / "huge.csv").write_text("\n".join(lines) + "\n")
    emb, labels, _ = load_embeddings(tmp_path / "huge.csv")
    assert labels.tolist() == [1, 2, 1, 0] and np.allclose(emb, EMB, rtol=1e-6)
    np.savez(tmp_path / "huge.npz", embeddings=EMB, labels=np.array([1e19, 2e19, 1e19, 3.0]))
    assert load_embeddings(tmp_path / "huge.npz")[1].tolist() == [1, 2, 1, 0]
    named = ["label,d0,d1,d2"] + [f"{y},{e[0]},{e[1]},{e[2]}"
                                  for y, e in zip(["cat", "dog", "cat", "ant"], EMB, strict=True)]
    (tmp_path / "named.csv").write_text("\n".join(named) + "\n")
    assert load_embeddings(tmp_path / "named.csv")[1].tolist() == [1, 2, 1, 0]


def test_a_labels_file_with_columns_is_one_line(tmp_path: Path) -> None:
    """Found by the fuzz test: a labels file of comma-separated columns (",\\n,") is refused in
    one line, not a TypeError."""
    np.save(tmp_path / "e.npy", np.zeros((2, 3), np.float32))
    (tmp_path / "labels.txt").write_text(",\n,")
    with pytest.raises(EvaluationError, match="one label per line, not 2 comma-separated"):
        load_embeddings(tmp_path / "e.npy", tmp_path / "labels.txt")

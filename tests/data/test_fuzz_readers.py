"""Fuzzing the file readers: random and mutated bytes give a valid result or a DmlkitError
subclass (one clear line for the user), never another exception."""

import contextlib
import gzip
import io
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

from data.fixtures import make_cub, make_inshop, make_sop, write_image
from dmlkit.data.catalog import Catalog
from dmlkit.data.csv_manifest import load_csv
from dmlkit.data.cub import load_cub
from dmlkit.data.idx import parse_idx, read_idx
from dmlkit.data.inshop import load_inshop
from dmlkit.data.sop import load_sop
from dmlkit.errors import DataError, EvaluationError
from dmlkit.evaluation import load_embeddings
from dmlkit.serve.embeddings_file import EmbeddingsFile, load_embeddings_file

# numpy warns about some hostile inputs (empty text files, overflowing casts): expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Tokens that stress text parsers: separators, signs, huge and special numbers, odd characters.
TOKENS = [" ", "  ", "\t", "\n", "\r\n", ",", ".", "-", "-1", "0", "1", "7", "٣", "²", "1e400",
          "nan", "inf", "99999999999999999999999", "id_", "id_00000001", "train", "query",
          "gallery", "test", "label", "path", "img/", "a.jpg", '"', "\x00", "é", "\ufeff", "#"]


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` after 1-4 edits: byte flips, cuts, inserted bytes or tokens, deleted spans."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "token", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS)).encode()
        else:
            del data[pos : pos + draw(st.integers(1, 32))]
    return bytes(data)


def token_text(min_size: int = 0):
    return st.lists(st.sampled_from(TOKENS), min_size=min_size, max_size=60).map(
        lambda t: "".join(t).encode())


def hostile(base: bytes):
    """Mutations of a valid file, token soup, or raw random bytes."""
    return st.one_of(mutated(base), token_text(), st.binary(max_size=300))


# ----------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape) + array.tobytes()


VALID_IDX = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@FUZZ
@given(hostile(VALID_IDX))
@example(bytes([0, 0, 8, 2]) + struct.pack(">II", 2**32 - 1, 2**32 - 1))  # sizes beyond the data
@example(bytes([0, 0, 8, 4]) + struct.pack(">IIII", 65536, 65536, 65536, 65536))  # 2^64 elements
def test_parse_idx(data):
    try:
        out = parse_idx(data)
    except DataError:
        return
    assert out.dtype == np.uint8 and out.size == len(data) - 4 - 4 * data[3]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(hostile(VALID_IDX), st.booleans())
def test_read_idx_file(folder, data, compress):
    path = folder / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        out = read_idx(path)
    except DataError:
        return
    assert out.dtype == np.uint8


@FUZZ
@given(hostile(gzip.compress(VALID_IDX)))
def test_read_idx_mutated_gzip(folder, data):
    path = folder / "labels-idx1-ubyte.gz"
    path.write_bytes(data)
    with contextlib.suppress(DataError):
        read_idx(path)


# ----------------------------------------------------------------- CSV manifest and annotations


def accepts(loader, *args):
    """Run a catalog loader: a Catalog or a DataError."""
    try:
        out = loader(*args)
    except DataError:
        return None
    assert isinstance(out, Catalog) and len(out.labels) == len(out.paths)
    return out


@pytest.fixture(scope="module")
def manifest_dir(folder):
    root = folder / "csv"
    for i in range(3):
        write_image(root / f"img{i}.png", seed=i, size=(4, 4))
    return root


VALID_CSV = (b"path,label,split,is_query,is_gallery\nimg0.png,1,train,0,0\n"
             b"img1.png,2,test,1,0\nimg2.png,2,test,0,1\n")


@FUZZ
@given(hostile(VALID_CSV))
@example(b"path,label\nimg0.png,99999999999999999999999\n")
@example(b"path,label\nimg0.png,1\xff\n")
@example(b"path,label\nimg0\x00.png,1\n")
def test_csv_manifest(manifest_dir, data):
    (manifest_dir / "manifest.csv").write_bytes(data)
    accepts(load_csv, manifest_dir)


@pytest.fixture(scope="module")
def cub_root(folder):
    return make_cub(folder / "cub")


CUB_FILES = ["images.txt", "image_class_labels.txt", "classes.txt", "bounding_boxes.txt"]


@FUZZ
@given(st.sampled_from(CUB_FILES), st.data())
def test_cub_annotation_files(cub_root, name, data):
    path = cub_root / "CUB_200_2011" / name
    original = path.read_bytes()
    try:
        path.write_bytes(data.draw(hostile(original)))
        accepts(load_cub, cub_root)
    finally:
        path.write_bytes(original)


@pytest.fixture(scope="module")
def sop_root(folder):
    return make_sop(folder / "sop")


@FUZZ
@given(st.sampled_from(["Ebay_train.txt", "Ebay_test.txt"]), st.data())
@example("Ebay_train.txt", None)  # a class id beyond int64
def test_sop_annotation_files(sop_root, name, data):
    path = sop_root / name
    original = path.read_bytes()
    edited = (original.replace(b"\n1 1 1 ", b"\n1 99999999999999999999999 1 ", 1) if data is None
              else data.draw(hostile(original)))
    try:
        path.write_bytes(edited)
        accepts(load_sop, sop_root)
    finally:
        path.write_bytes(original)


@pytest.fixture(scope="module")
def inshop_root(folder):
    return make_inshop(folder / "inshop")


@FUZZ
@given(st.data())
def test_inshop_annotation_file(inshop_root, data):
    path = inshop_root / "Eval" / "list_eval_partition.txt"
    original = path.read_bytes()
    try:
        path.write_bytes(data.draw(hostile(original)))
        accepts(load_inshop, inshop_root)
    finally:
        path.write_bytes(original)


# ----------------------------------------------------------------- embeddings for evaluation

EMB = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
LABELS = np.array([3, 3, 8, 8])
FLAGS = np.array([True, False, True, False])


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


VALID = {
    ".npz": npz_bytes(embeddings=EMB, labels=LABELS, is_query=FLAGS),
    ".safetensors": save_numpy({"embeddings": EMB, "labels": LABELS, "is_query": FLAGS}),
    ".csv": b"label,is_query,d0,d1,d2\n" + b"".join(
        f"{y},{int(q)},{e[0]},{e[1]},{e[2]}\n".encode() for y, q, e in zip(LABELS, FLAGS, EMB,
                                                                              strict=True)),
}


def evaluation_result(path, labels_path=None):
    """load_embeddings: a consistent triple or an EvaluationError."""
    try:
        emb, labels, extra = load_embeddings(path, labels_path)
    except EvaluationError:
        return
    assert emb.dtype == np.float32 and emb.ndim == 2 and labels.shape == (len(emb),)
    assert np.isfinite(emb).all() and all(v.shape == labels.shape for v in extra.values())


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_evaluation_embeddings_mutated(folder, suffix, data):
    path = folder / f"emb{suffix}"
    path.write_bytes(data.draw(hostile(VALID[suffix])))
    evaluation_result(path)


ARRAY_KEYS = st.sampled_from(["embeddings", "labels", "query_mask", "is_query", "is_gallery",
                              "other"])
ARRAYS = hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                    hnp.floating_dtypes(), hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
                    hnp.unicode_string_dtypes(max_len=3), hnp.byte_string_dtypes(max_len=3)),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@FUZZ
@given(st.dictionaries(ARRAY_KEYS, ARRAYS, max_size=5))
@example({"embeddings": np.full((2, 2), 1e300), "labels": np.array([0, 1])})  # inf as float32
@example({"embeddings": np.ones((2, 2)), "labels": np.array([0, 1]),
          "is_query": np.array(["1", "0"])})
def test_evaluation_npz_with_hostile_arrays(folder, arrays):
    path = folder / "arrays.npz"
    path.write_bytes(npz_bytes(**arrays))
    evaluation_result(path)


SAFE_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
               np.uint8, np.bool_]


@FUZZ
@given(st.dictionaries(ARRAY_KEYS, hnp.arrays(
    dtype=st.sampled_from(SAFE_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=5))
def test_evaluation_safetensors_with_hostile_arrays(folder, arrays):
    path = folder / "arrays.safetensors"
    path.write_bytes(save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    evaluation_result(path)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@FUZZ
@given(hostile(npy_bytes(EMB)), hostile(b"3\n3\n8\n8\n"))
@example(npy_bytes(EMB).replace(b"{", b"\0", 1), b"3\n3\n8\n8\n")  # header numpy cannot parse
def test_evaluation_npy_with_text_labels(folder, emb, labels):
    (folder / "e.npy").write_bytes(emb)
    (folder / "labels.txt").write_bytes(labels)
    evaluation_result(folder / "e.npy", folder / "labels.txt")


@FUZZ
@given(ARRAYS, ARRAYS)
def test_evaluation_npy_with_hostile_arrays(folder, emb, labels):
    (folder / "a.npy").write_bytes(npy_bytes(emb))
    (folder / "labels.npy").write_bytes(npy_bytes(labels))
    evaluation_result(folder / "a.npy", folder / "labels.npy")


# ----------------------------------------------------------------- embeddings files (serve)


@pytest.fixture(scope="module")
def embeddings_files(folder):
    sample = EmbeddingsFile(torch.from_numpy(EMB), ["a/1.png", "a/2.png", "b/3.png", "c"],
                            torch.from_numpy(LABELS), {"run": "runs/r"})
    out = {}
    for suffix in (".safetensors", ".npz"):
        sample.save(folder / f"sample{suffix}")
        out[suffix] = (folder / f"sample{suffix}").read_bytes()
    return out


def serve_result(path):
    try:
        out = load_embeddings_file(path)
    except DataError:
        return
    assert out.embeddings.ndim == 2 and len(out.embeddings) == len(out.paths)


@FUZZ
@given(st.sampled_from([".safetensors", ".npz"]), st.data())
def test_serve_embeddings_file_mutated(folder, embeddings_files, suffix, data):
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(data.draw(hostile(embeddings_files[suffix])))
    serve_result(path)


JSON_TEXT = st.one_of(
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                     st.text(max_size=3), inner, max_size=3), max_leaves=8).map(json.dumps),
    st.text(max_size=20), st.just("[" * 100_000),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["embeddings", "labels", "x"]), hnp.arrays(
    dtype=st.sampled_from(SAFE_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=3),
    st.dictionaries(st.sampled_from(["paths", "meta", "other"]), JSON_TEXT, max_size=3))
def test_serve_safetensors_with_hostile_header(folder, arrays, metadata):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    path = folder / "hostile.safetensors"
    path.write_bytes(save_torch(tensors, metadata=metadata or None))
    serve_result(path)


@FUZZ
@given(st.dictionaries(st.sampled_from(["embeddings", "labels", "paths", "meta", "x"]), ARRAYS,
                       max_size=5))
def test_serve_npz_with_hostile_arrays(folder, arrays):
    path = folder / "hostile.npz"
    path.write_bytes(npz_bytes(**arrays))
    serve_result(path)

import io
import zipfile

import numpy as np
import pytest
import torch

from dmlkit.errors import DataError
from dmlkit.serve.embeddings_file import EmbeddingsFile, load_embeddings_file


@pytest.fixture
def sample() -> EmbeddingsFile:
    g = torch.Generator().manual_seed(0)
    return EmbeddingsFile(torch.randn(4, 3, generator=g), ["a/1.png", "a/2.png", "b/é.png", "c"],
                          torch.tensor([0, 0, 1, 2]), {"run": "runs/r", "class_names": {"0": "a"}})


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("labeled", [True, False])
def test_round_trip(tmp_path, sample, suffix, labeled):
    if not labeled:
        sample = EmbeddingsFile(sample.embeddings, sample.paths, None, sample.meta)
    path = tmp_path / f"e{suffix}"
    sample.save(path)
    back = load_embeddings_file(path)
    torch.testing.assert_close(back.embeddings, sample.embeddings, atol=0, rtol=0)
    assert back.paths == sample.paths and back.meta == sample.meta
    if labeled:
        assert back.labels.dtype == torch.int64 and back.labels.tolist() == [0, 0, 1, 2]
    else:
        assert back.labels is None


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_truncated_files_are_data_errors(tmp_path, sample, suffix):
    path = tmp_path / f"e{suffix}"
    sample.save(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="not a readable dmlkit embeddings file"):
        load_embeddings_file(path)


def test_pickled_npz_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.npz"
    buf = io.BytesIO()
    np.savez(buf, embeddings=np.zeros((1, 2), np.float32), paths=np.array(["x"]),
             meta=np.array([Boom()], dtype=object))
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="not a readable"):
        load_embeddings_file(path)


def test_inconsistent_contents_are_data_errors(tmp_path):
    path = tmp_path / "e.npz"
    buf = io.BytesIO()
    np.savez(buf, embeddings=np.zeros((3, 2), np.float32), paths=np.array(["x"]),
             meta=np.array("{}"))
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="3 embeddings but 1 paths"):
        load_embeddings_file(path)
    with pytest.raises(DataError, match="labels of shape"):
        EmbeddingsFile(torch.zeros(2, 2), ["a", "b"], torch.zeros(3))
    with pytest.raises(DataError, match="float N x d"):
        EmbeddingsFile(torch.zeros(2, dtype=torch.long), ["a", "b"])


def test_suffix_and_missing_file(tmp_path, sample):
    with pytest.raises(DataError, match="suffix"):
        sample.save(tmp_path / "e.pt")
    with pytest.raises(DataError, match="does not exist"):
        load_embeddings_file(tmp_path / "none.npz")
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(DataError, match="not a readable"):
        load_embeddings_file(tmp_path / "z.npz")
    assert not zipfile.is_zipfile(tmp_path / "z.npz")

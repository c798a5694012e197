import numpy as np
import pytest

from data.fixtures import write_lines
from dmlkit.data.layout import dataset_dir, first_half_split, read_table, stratified_split
from dmlkit.errors import DataError


def test_dataset_dir(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner/marker.txt").write_text("")
    assert dataset_dir("x", tmp_path, "marker.txt", ("other", "inner")) == tmp_path / "inner"
    with pytest.raises(DataError, match=r"x: missing nope.txt in .* \(or in other/, inner/\)"):
        dataset_dir("x", tmp_path, "nope.txt", ("other", "inner"))
    with pytest.raises(DataError, match=r"x: directory .* does not exist"):
        dataset_dir("x", tmp_path / "absent", "marker.txt")


def test_read_table(tmp_path):
    path = write_lines(tmp_path / "t.txt", ["a b c", "1 2.5 some name", "", "  3 4 x  "])
    assert read_table(path, (int, float, str), skip=1, header=("a", "b", "c")) == [
        (1, 2.5, "some name"), (3, 4.0, "x"),
    ]
    with pytest.raises(DataError, match=r"t.txt line 1: expected the header 'a b d'"):
        read_table(path, (int, float, str), skip=1, header=("a", "b", "d"))
    with pytest.raises(DataError, match=r"t.txt line 4: expected 4 fields, got 3"):
        read_table(path, (int, float, str, str), skip=1)
    with pytest.raises(DataError, match=r"t.txt line 1: could not convert"):
        read_table(path, (float, float, str))
    with pytest.raises(DataError, match=r"missing .*absent.txt"):
        read_table(tmp_path / "absent.txt", (int,))


@pytest.mark.parametrize(("n", "last_train"), [(200, 100), (196, 98), (7, 3)])
def test_first_half_split(n, last_train):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(1, n + 1), 2))
    split = first_half_split(labels)
    assert set(labels[split == "train"]) == set(range(1, last_train + 1))
    assert set(labels[split == "test"]) == set(range(last_train + 1, n + 1))


def test_stratified_split_counts():
    labels = np.repeat([0, 1, 2], [4, 8, 10])
    split = stratified_split(labels, 0.25, seed=0)
    assert [(split[labels == c] == "test").sum() for c in range(3)] == [1, 2, 2]

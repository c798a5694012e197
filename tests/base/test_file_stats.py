import os

import numpy as np

from dmlkit.base.file_stats import file_stats
from dmlkit.data.catalog import Catalog
from dmlkit.data.image_cache import cache_key
from dmlkit.methods.guided import training_set_key


def replace_keeping_size_and_time(path, data):
    """Another file moved over ``path``: same name, size and modification time (cp -p, rsync)."""
    st = os.stat(path)
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_replaced_file_changes_every_derived_cache_key(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for p in paths:
        p.write_bytes(b"x" * 10)
    catalog = Catalog("ds", np.array([0, 1]), np.array(["train"] * 2), paths=paths)
    before = (file_stats(paths), cache_key("ds", paths, 8, True), training_set_key(catalog))
    assert file_stats(paths) == before[0]  # stable while nothing changes
    replace_keeping_size_and_time(paths[1], b"y" * 10)
    after = (file_stats(paths), cache_key("ds", paths, 8, True), training_set_key(catalog))
    assert all(a != b for a, b in zip(before, after, strict=True))

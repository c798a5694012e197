"""Builders of tiny datasets in the exact official layouts (real image files, annotation files,
MATLAB structs, Python-2-style pickles), written into a test's tmp_path."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """A random RGB image of ``size`` (width, height); format from the suffix (JPEG, PNG)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_png_header(path: Path, size: tuple[int, int]) -> Path:
    """A PNG of ``size`` (width, height) whose pixel data is a few bytes: a valid header that
    claims a huge image (a decompression bomb's first step), without the memory to make one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", size[0], size[1], 8, 2, 0, 0, 0)  # 8-bit RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def tar_gz(folder: Path, archive: Path) -> Path:
    """Pack the contents of ``folder`` (names relative to it) into ``archive``."""
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
    return archive


# ---------------------------------------------------------------- CUB-200-2011


def make_cub(root: Path, n_classes: int = 4, per_class: int = 2, bboxes: bool = True) -> Path:
    """``root/CUB_200_2011/`` as in ``CUB_200_2011.tgz`` (plus the top-level attributes.txt).

    Image ids run class by class; image_class_labels.txt and bounding_boxes.txt list them in
    reverse order (the loader must join by id). Box of image k: (k, 2k, 10 + k, 20 + k).
    """
    base = root / "CUB_200_2011"
    classes, images, labels, boxes, official = [], [], [], [], []
    k = 0
    for c in range(1, n_classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {folder}")
        for j in range(per_class):
            k += 1
            rel = f"{folder}/Bird_{c}_{j:04d}_{k}.jpg"
            write_image(base / "images" / rel, seed=k, size=(20 + k, 16))
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c}")
            boxes.append(f"{k} {float(k)} {2.0 * k} {10.0 + k} {20.0 + k}")
            official.append(f"{k} {j % 2}")
    write_lines(base / "classes.txt", classes)
    write_lines(base / "images.txt", images)
    write_lines(base / "image_class_labels.txt", labels[::-1])
    write_lines(base / "train_test_split.txt", official)
    if bboxes:
        write_lines(base / "bounding_boxes.txt", boxes[::-1])
    write_lines(root / "attributes.txt", ["1 has_bill_shape::curved"])
    return root


# ---------------------------------------------------------------- Cars196


def _struct(rows: list[dict]) -> np.ndarray:
    """A 1 x N MATLAB struct array (savemat writes it like the official annotation files)."""
    out = np.zeros((1, len(rows)), dtype=[(k, "O") for k in rows[0]])
    for i, row in enumerate(rows):
        out[0, i] = tuple(row.values())
    return out


def _cell(strings: list[str]) -> np.ndarray:
    out = np.empty((1, len(strings)), dtype=object)
    out[0, :] = strings
    return out


def _car_box(k: int) -> dict:
    """Official boxes are 1 x 1 integer matrices: x1, y1, x2, y2 (inclusive pixels)."""
    return {
        "bbox_x1": np.array([[k]], dtype=np.uint16),
        "bbox_y1": np.array([[k + 1]], dtype=np.uint16),
        "bbox_x2": np.array([[k + 10]], dtype=np.uint16),
        "bbox_y2": np.array([[k + 21]], dtype=np.uint16),
    }


def make_cars_annos(root: Path, n_classes: int = 4, per_class: int = 2) -> Path:
    """``cars_annos.mat`` + ``car_ims/NNNNNN.jpg``; the official ``test`` flag alternates.

    Image k (1-based) has class ``(k - 1) % n_classes + 1``: classes interleave, as in the file.
    """
    from scipy.io import savemat

    rows = []
    for k in range(1, n_classes * per_class + 1):
        rel = f"car_ims/{k:06d}.jpg"
        write_image(root / rel, seed=k)
        rows.append({
            "relative_im_path": rel, **_car_box(k),
            "class": np.array([[(k - 1) % n_classes + 1]], dtype=np.uint8),
            "test": np.array([[k % 2]], dtype=np.uint8),
        })
    names = [f"Make{c} Model {2000 + c}" for c in range(1, n_classes + 1)]
    savemat(root / "cars_annos.mat", {"annotations": _struct(rows), "class_names": _cell(names)})
    return root


def make_cars_devkit(
    root: Path, n_classes: int = 4, per_class: int = 2, test_annos_in_root: bool = False
) -> Path:
    """The devkit layout: ``devkit/cars_{train_annos,meta}.mat``,
    ``cars_test_annos_withlabels.mat``, ``cars_train/`` and ``cars_test/``; each class has
    ``per_class`` train and ``per_class`` test images."""
    from scipy.io import savemat

    for part in ("train", "test"):
        rows = []
        for k in range(1, n_classes * per_class + 1):
            fname = f"{k:05d}.jpg"
            write_image(root / f"cars_{part}" / fname, seed=k)
            rows.append({
                **_car_box(k),
                "class": np.array([[(k - 1) % n_classes + 1]], dtype=np.uint8),
                "fname": fname,
            })
        if part == "train":
            path = root / "devkit" / "cars_train_annos.mat"
        else:
            folder = root if test_annos_in_root else root / "devkit"
            path = folder / "cars_test_annos_withlabels.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(path, {"annotations": _struct(rows)})
    names = [f"Make{c} Model {2000 + c}" for c in range(1, n_classes + 1)]
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": _cell(names)})
    return root


# ---------------------------------------------------------------- Stanford Online Products


SOP_HEADER = "image_id class_id super_class_id path"


def make_sop(root: Path, n_classes: int = 4, per_class: int = 2) -> Path:
    """``Ebay_train.txt``/``Ebay_test.txt`` and ``<category>_final/<id>_<j>.JPG`` images.

    Classes 1..n/2 train, the rest test; class c belongs to super-class ``(c - 1) % 2 + 1``.
    """
    categories = ("bicycle_final", "chair_final")
    rows = {"train": [SOP_HEADER], "test": [SOP_HEADER]}
    k = 0
    for c in range(1, n_classes + 1):
        s = (c - 1) % 2 + 1
        for j in range(per_class):
            k += 1
            rel = f"{categories[s - 1]}/{100 + c}_{j}.JPG"
            write_image(root / rel, seed=k)
            rows["train" if c <= n_classes // 2 else "test"].append(f"{k} {c} {s} {rel}")
    for split, lines in rows.items():
        write_lines(root / f"Ebay_{split}.txt", lines)
    return root


# ---------------------------------------------------------------- DeepFashion In-Shop


INSHOP_HEADER = "image_name item_id evaluation_status"


def make_inshop(root: Path, in_eval_dir: bool = True) -> Path:
    """``Eval/list_eval_partition.txt`` and ``img/...`` images.

    Items 1 and 2 (2 images each) are train; items 3 and 4 have one query and two gallery
    images each.
    """
    rows = []
    plan = {1: ["train"] * 2, 2: ["train"] * 2, 3: ["query", "gallery", "gallery"],
            4: ["query", "gallery", "gallery"]}
    for item, statuses in plan.items():
        for j, status in enumerate(statuses):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{j:02d}_{j + 1}_front.jpg"
            write_image(root / rel, seed=10 * item + j)
            rows.append(f"{rel} id_{item:08d} {status}")
    folder = root / "Eval" if in_eval_dir else root
    write_lines(folder / "list_eval_partition.txt", [str(len(rows)), INSHOP_HEADER, *rows])
    return root


# ---------------------------------------------------------------- CIFAR python pickles


class Py2Pickler(pickle._Pickler):
    """Pickles the way Python 2's cPickle wrote the official CIFAR files: protocol 2, every
    string a byte string (SHORT_BINSTRING / BINSTRING), numpy arrays via
    ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def dump_py2(obj: object, path: Path) -> Path:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(raw)
    return path


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """``n`` random images as official rows: uint8 N x 3072, red, green, blue planes."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py/`` with 5 train batches and a test batch of ``per_batch``
    images each; returns the rows and labels written, train batches first."""
    base = root / "cifar-10-batches-py"
    rows, labels = [], []
    files = [(f"data_batch_{i}", f"training batch {i} of 5") for i in range(1, 6)]
    for b, (file, title) in enumerate([*files, ("test_batch", "testing batch 1 of 1")]):
        x = cifar_rows(per_batch, seed=b)
        y = [(b + j) % 10 for j in range(per_batch)]
        dump_py2({"batch_label": title, "labels": y, "data": x,
                  "filenames": [f"img_{b}_{j}.png" for j in range(per_batch)]}, base / file)
        rows.append(x)
        labels += y
    dump_py2({"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072},
             base / "batches.meta")
    return {"rows": np.concatenate(rows), "labels": np.array(labels)}


def make_cifar100(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """``root/cifar-100-python/{train,test,meta}``; fine label j has coarse label j // 5."""
    base = root / "cifar-100-python"
    out = {}
    for s, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = [(7 * j + seed) % 100 for j in range(n)]
        x = cifar_rows(n, seed)
        dump_py2({"filenames": [f"f_{j}.png" for j in range(n)], "batch_label": f"{s}ing batch",
                  "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": x},
                 base / s)
        out[s] = {"rows": x, "fine": np.array(fine)}
    dump_py2({"fine_label_names": [f"fine_{i}" for i in range(100)],
              "coarse_label_names": [f"coarse_{i}" for i in range(20)]}, base / "meta")
    return out


# ---------------------------------------------------------------- image folders


def make_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "ant", "bee"), per_class: int = 2,
    splits: bool = False, size: tuple[int, int] = (24, 16), suffix: str = ".jpg",
) -> Path:
    """``root/<class>/<j>.jpg`` or, with ``splits``, ``root/{train,test}/<class>/<j>.jpg``."""
    k = 0
    for top in (("train", "test") if splits else ("",)):
        for c in classes:
            for j in range(per_class):
                k += 1
                write_image(root / top / c / f"{j:04d}{suffix}", seed=k, size=size)
    return root

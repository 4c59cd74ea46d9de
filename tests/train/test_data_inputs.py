"""Hostile or odd data inputs: each is refused with one line naming the file, or read
correctly — never a traceback, a runaway allocation or a silent one-class task."""

from __future__ import annotations

import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnas.train.cifar import load_cifar_pickle
from mnas.train.data import make_datamodule
from tests.cifar_files import write_cifar10 as _cifar


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _setup(spec: str) -> None:
    make_datamodule(spec, resolution=8).setup("fit")


def _one_line(e: pytest.ExceptionInfo, needle: str) -> None:
    assert needle in str(e.value) and "\n" not in str(e.value)


# -- CIFAR pickles ------------------------------------------------------------------------

class _Reconstruct:
    """Pickles as numpy's ``_reconstruct(ndarray, shape, dtype)`` without any data."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, self.shape, b"u1"))


@pytest.mark.parametrize("shape", [(10**13,), (2000, 3072)])
def test_cifar_array_larger_than_file_is_refused(tmp_path, shape):
    root = _cifar(tmp_path / "c")
    _dump(root / "data_batch_1", {b"data": _Reconstruct(shape), b"labels": []})
    with pytest.raises(ValueError) as e:
        _setup(f"cifar10:{root}")
    _one_line(e, f"{root / 'data_batch_1'} is not a CIFAR python batch: array of")


class _Codec:
    """``_codecs.encode(b, "hex")`` doubles its input: chained, a tiny file explodes."""

    def __reduce__(self):
        import _codecs
        return (_codecs.encode, (b"x" * 8, "hex"))


class _ObjectState:
    """An array whose state claims object dtype with too little data (crashes numpy)."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, (10**6,), np.dtype("O"), False, [1, 2]))


@pytest.mark.parametrize("obj, needle", [(_Codec(), "other than latin1"),
                                         (_ObjectState(), "refusing array dtype")])
def test_cifar_pickle_tricks_refused(tmp_path, obj, needle):
    path = tmp_path / "batch"
    _dump(path, {b"data": obj})
    with pytest.raises(ValueError, match=needle):
        load_cifar_pickle(path)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_reads_numpy_arrays(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    labels = np.array([3, 1], dtype=">i4")
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol))
    out = load_cifar_pickle(path)
    assert type(out[b"data"]) is np.ndarray and np.array_equal(out[b"data"], data)
    assert out[b"labels"].tolist() == [3, 1]


@pytest.mark.parametrize("meta, needle", [
    ({b"label_names": 5}, "must be a list of class names, got int"),
    ({b"label_names": []}, "names 0 class(es): need at least 2"),
    ({b"label_names": [b"only"]}, "names 1 class(es): need at least 2"),
])
def test_cifar_bad_meta(tmp_path, meta, needle):
    root = _cifar(tmp_path / "c")
    _dump(root / "batches.meta", meta)
    with pytest.raises(ValueError) as e:
        _setup(f"cifar10:{root}")
    _one_line(e, f"{root / 'batches.meta'}: b'label_names' {needle}")


@pytest.mark.parametrize("labels, needle", [
    (["x"] * 10, "got <U1 values like 'x'"),
    ([0.5] * 10, "got float64 values like 0.5"),
    ([[1, 2]] * 10, "got shape (10, 2)"),
])
def test_cifar_bad_labels(tmp_path, labels, needle):
    root = _cifar(tmp_path / "c")
    _dump(root / "data_batch_2", {b"data": np.zeros((10, 3072), np.uint8), b"labels": labels})
    with pytest.raises(ValueError) as e:
        _setup(f"cifar10:{root}")
    _one_line(e, f"{root / 'data_batch_2'}: b'labels' must be a flat list of one integer "
                 f"label per image, {needle}")


def test_cifar_one_label_in_all_batches_refused(tmp_path):
    root = _cifar(tmp_path / "c")
    for i in range(1, 6):
        _dump(root / f"data_batch_{i}", {b"data": np.zeros((4, 3072), np.uint8),
                                         b"labels": [2] * 4})
    with pytest.raises(ValueError, match="fewer than 2 distinct labels"):
        _setup(f"cifar10:{root}")


def test_cifar_path_to_a_batch_file_says_folder(tmp_path):
    root = _cifar(tmp_path / "c")
    with pytest.raises(FileNotFoundError) as e:
        make_datamodule(f"cifar10:{root / 'data_batch_1'}")
    _one_line(e, "is a file; the path must be the folder holding data_batch_1")


def test_tilde_in_data_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    root = _cifar(tmp_path / "c")
    assert make_datamodule("cifar10:~/c").root == root
    assert make_datamodule("imagefolder:~/c").root == root


# -- image folders ------------------------------------------------------------------------

def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims ``w``x``h`` (no pixel data: never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _two_classes(root: Path) -> Path:
    for name, v in (("a", 0), ("b", 255)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (6, 6), (v, v, v)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("side", [20000, 13000, 4097])  # Pillow error, warning, ours
def test_imagefolder_huge_image_refused_before_decoding(tmp_path, side, recwarn):
    root = _two_classes(tmp_path / "imgs")
    _png_header_only(root / "a" / "huge.png", side, side)
    with pytest.raises(ValueError) as e:
        _setup(f"imagefolder:{root}")
    _one_line(e, f"image {root / 'a' / 'huge.png'} is larger than the 4096x4096-pixel limit")
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_imagefolder_one_class_refused(tmp_path):
    root = _two_classes(tmp_path / "imgs")
    for p in (root / "b").iterdir():
        p.unlink()
    with pytest.raises(ValueError) as e:
        _setup(f"imagefolder:{root}")
    _one_line(e, f"image folder {root} has only one class (a)")


def test_imagefolder_16bit_png_scaled_not_clipped(tmp_path):
    root = tmp_path / "imgs"
    for name, value in (("a", 65535 // 4), ("b", 65535)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), value, np.uint16)).save(root / name / f"{i}.png")
    assert Image.open(root / "a" / "0.png").mode.startswith("I")
    dm = make_datamodule(f"imagefolder:{root}", resolution=8)
    dm.setup("fit")
    imgs = torch.cat([dm.train_set.images, dm.val_set.images])
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert set(imgs[labels == 0].flatten().tolist()) == {64}     # 16383 / 257, not 255
    assert set(imgs[labels == 1].flatten().tolist()) == {255}


def test_imagefolder_skips_hidden_files(tmp_path):
    root = _two_classes(tmp_path / "imgs")
    (root / "a" / ".hidden.png").write_bytes(b"not an image")       # would fail if read
    (root / "b" / ".cache").mkdir()
    Image.new("RGB", (6, 6)).save(root / "b" / ".cache" / "x.png")
    files, _, _ = make_datamodule(f"imagefolder:{root}").files()
    assert len(files) == 6 and not any(".hidden" in str(p) or ".cache" in str(p)
                                       for p in files)


# -- module:pkg.mod:Class -------------------------------------------------------------------

@pytest.mark.parametrize("src, cls, needle", [
    ("raise RuntimeError('boom at import\\nmore')", "X",
     "cannot import data module 'bad_dm_mod': RuntimeError: boom at import"),
    ("def f(:\n", "X", "cannot import data module 'bad_dm_mod': SyntaxError"),
    ("import sys\nsys.exit(0)", "X", "cannot import data module 'bad_dm_mod': SystemExit: 0"),
    ("import lightning as L\nclass X(L.LightningDataModule):\n"
     "    def setup(self, stage=None):\n        raise KeyError('k')", "X",
     "setup(\"fit\") failed: KeyError: 'k'"),
    ("import lightning as L\nclass X(L.LightningDataModule):\n"
     "    def setup(self, stage=None):\n        raise SystemExit(0)", "X",
     "setup(\"fit\") failed: SystemExit: 0"),
    ("import lightning as L\nclass X(L.LightningDataModule):\n"
     "    def __init__(self, root):\n        super().__init__()", "X", "X() failed: TypeError"),
])
def test_module_failures_are_one_line(tmp_path, monkeypatch, src, cls, needle):
    (tmp_path / "bad_dm_mod.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ValueError) as e:
            make_datamodule(f"module:bad_dm_mod:{cls}")
    finally:
        sys.modules.pop("bad_dm_mod", None)
    _one_line(e, f"module:bad_dm_mod:{cls}: {needle}")


@pytest.mark.parametrize("cls, needle", [
    ("LabelsTooBig", "train_dataloader()'s first batch: labels must be in [0, 2] "
                     "(num_classes = 3), got 9..9"),
    ("OneChannel", "train_dataloader()'s first batch: images must be a float tensor [B, 3, H, W] (in_channels = 3), got "
                   "torch.float32 [16, 1, 16, 16]"),
    ("FloatLabels", "train_dataloader()'s first batch: labels must be an integer tensor [16], got torch.float32 [16]"),
    ("NoValBatch", "val_dataloader() yields no batch"),
])
def test_a_module_breaking_the_batch_contract_is_named_before_any_child(cls, needle):
    """Before, each child failed the same way (or trained on junk) for the whole budget."""
    with pytest.raises(ValueError) as e:
        make_datamodule(f"module:tests.train.bad_datamodules:{cls}")
    _one_line(e, f"module:tests.train.bad_datamodules:{cls}: {needle}")


def test_a_module_in_the_current_folder_names_pythonpath(tmp_path, monkeypatch):
    (tmp_path / "mydm.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    with pytest.raises(ValueError) as e:
        make_datamodule("module:mydm:X")
    _one_line(e, "mydm is in the current folder, which the `mnas` command does not import "
                 "from: run it with PYTHONPATH=.")


def test_resolution_is_bounded_by_the_range_and_by_memory(monkeypatch):
    import os

    with pytest.raises(ValueError, match=r"resolution must be an integer in \[1, 1024\], got "
                                         "100000"):
        make_datamodule("digits", resolution=100000)
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda k: 1 << 20 if k == "SC_PHYS_PAGES" else real(k))
    with pytest.raises(ValueError) as e:    # a host of 1 Mi pages (4 GiB): half is 2 GiB
        make_datamodule("digits", resolution=512).setup("fit")
    _one_line(e, "digits: 1797 images at 512x512 need 5.3 GiB in memory, over half of this "
                 "host's 4.0 GiB; give a smaller --resolution")

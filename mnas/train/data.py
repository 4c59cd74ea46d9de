"""Data modules for proxy training and the registry of data specs (``--data SPEC``).

Specs (``data_specs()`` lists them for the CLI):

- ``digits`` — scikit-learn's ``load_digits`` (ships inside scikit-learn, no download):
  1,797 8×8 grayscale digits, 10 classes, upsampled to the proxy resolution and
  replicated to 3 channels. The embedded default.
- ``imagefolder:PATH`` — ``PATH/<class>/<image>.png|jpg|jpeg``, read with Pillow.
- ``cifar10:PATH`` — the standard CIFAR-10 python-pickle batches, read locally.
- ``cifar100:PATH`` — the standard CIFAR-100 python version (``train``; fine labels).
- ``module:pkg.mod:Class`` — any ``LightningDataModule`` class, instantiated with no
  arguments; it must expose ``num_classes``.

The built-in modules hold their images in memory (uint8 at the proxy resolution, or
float for ``digits``), split off a seeded, stratified validation set from the
training files (accuracy is measured on it), normalise with the training split's
per-channel mean/std, and serve ``DataLoader``s with ``num_workers=0``. The training
order comes from a generator re-seeded at every ``train_dataloader()`` call, so a
child's result does not depend on how many children trained before it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mnas.train.cifar import batch_labels, class_names, load_cifar_pickle

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Per-image pixel bound for image folders: proxy training uses thumbnails, and a larger
# image is checked from its header before decoding (a 48 KB PNG can claim 20000x20000).
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
#: largest training resolution (deployment sizes are 224-512; the data is held in memory)
MAX_RESOLUTION = 1024


def check_fits(n: int, bytes_each: int, resolution: int, what: str) -> None:
    """ValueError unless ``n`` images of ``bytes_each`` bytes fit in half of this host's
    memory: the data is held in memory at ``resolution``, and asking for more than the
    host has ends in an allocation failure (or the OOM killer) instead of one line."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # not POSIX: no check
        return
    need = n * bytes_each
    if need > total / 2:
        raise ValueError(f"{what}: {n} images at {resolution}x{resolution} need "
                         f"{need / 2**30:.1f} GiB in memory, over half of this host's "
                         f"{total / 2**30:.1f} GiB; give a smaller --resolution")


@dataclass(frozen=True)
class DataSpec:
    """One registered form of ``--data``."""

    scheme: str
    example: str
    help: str
    factory: Callable[..., L.LightningDataModule]


DATA_SPECS: dict[str, DataSpec] = {}


def register_data(scheme: str, example: str, help: str) -> Callable:
    """Register ``factory(argument, resolution=, batch_size=, val_fraction=, seed=)``."""
    def deco(factory: Callable[..., L.LightningDataModule]) -> Callable:
        DATA_SPECS[scheme] = DataSpec(scheme, example, help, factory)
        return factory
    return deco


def data_specs() -> list[str]:
    """The valid forms of a data spec, e.g. ``['digits', 'imagefolder:PATH', ...]``."""
    return [s.example for s in DATA_SPECS.values()]


def make_datamodule(spec: str, resolution: int = 32, batch_size: int = 64,
                    val_fraction: float = 0.2, seed: int = 0) -> L.LightningDataModule:
    """The DataModule for ``spec``. Cheap checks (spec form, path exists) happen here;
    the data is read by ``setup()``. ValueError lists the valid forms for an unknown
    spec; FileNotFoundError names a missing path."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string; valid: {', '.join(data_specs())}")
    scheme, sep, arg = spec.partition(":")
    if scheme not in DATA_SPECS:
        raise ValueError(f"unknown data spec {spec!r}; valid: {', '.join(data_specs())}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) \
            or not 1 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be an integer in [1, {MAX_RESOLUTION}], got "
                         f"{resolution!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    needs_arg = ":" in DATA_SPECS[scheme].example
    if needs_arg and not arg:
        raise ValueError(f"data spec {spec!r} needs an argument: {DATA_SPECS[scheme].example}")
    if not needs_arg and sep:
        raise ValueError(f"data spec {scheme!r} takes no argument, got {spec!r}")
    return DATA_SPECS[scheme].factory(arg, resolution=resolution, batch_size=batch_size,
                                      val_fraction=float(val_fraction), seed=seed)


def error_line(e: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors."""
    msg = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _user_path(arg: str | Path) -> Path:
    """``~`` expanded: the shell leaves it alone after ``cifar10:`` and the like."""
    try:
        return Path(arg).expanduser()
    except RuntimeError:  # unknown ~user: the path is reported as not found
        return Path(arg)


# -- in-memory tensors ------------------------------------------------------------------
class ImageTensorDataset(Dataset):
    """Images ``[N, C, H, W]`` and labels in memory. uint8 images are scaled to [0, 1]
    and normalised per item (keeps memory at one byte per pixel); float images are
    returned as stored (already normalised)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.mean = None if mean is None else mean.view(-1, 1, 1).float()
        self.std = None if std is None else std.view(-1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x, self.labels[i]


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Seeded train/validation index split, stratified by label when every class has
    at least two samples and the validation set can hold one of each class."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_val = int(round(n * val_fraction))
    if n < 2 or n_val < 1 or n_val >= n:
        raise ValueError(f"cannot split {n} samples with val_fraction={val_fraction}: "
                         "need at least one training and one validation sample")
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    stratify = labels if counts.min() >= 2 and len(counts) <= min(n_val, n - n_val) else None
    idx = np.arange(n)
    train, val = train_test_split(idx, test_size=n_val, random_state=seed, shuffle=True,
                                  stratify=stratify)
    return np.sort(train), np.sort(val)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of images [N, C, H, W] in [0, 1] (uint8 scaled), chunked."""
    c = x.shape[1]
    s, s2, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for chunk in torch.split(x, 4096):
        f = chunk.double()
        if chunk.dtype == torch.uint8:
            f = f / 255.0
        s += f.sum(dim=(0, 2, 3))
        s2 += (f * f).sum(dim=(0, 2, 3))
        count += f.numel() // c
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float(), std.clamp_min(1e-3).float()


class InMemoryDataModule(L.LightningDataModule):
    """Base of the built-in modules: subclasses implement :meth:`load` returning all
    images (uint8 or float in [0, 1], ``[N, C, R, R]``), labels and the class count."""

    def __init__(self, resolution: int = 32, batch_size: int = 64, val_fraction: float = 0.2,
                 seed: int = 0) -> None:
        super().__init__()
        self.resolution, self.batch_size = resolution, batch_size
        self.val_fraction, self.seed = val_fraction, seed
        self.num_classes: int | None = None
        self.in_channels: int = 3
        self.class_names: list[str] = []
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None

    def load(self) -> tuple[torch.Tensor, np.ndarray, int]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:  # idempotent: data is read once and reused
            return
        images, labels, num_classes = self.load()
        tr, va = split_indices(labels, self.val_fraction, self.seed)
        y = torch.as_tensor(labels, dtype=torch.long)
        x_tr, x_va = images[torch.as_tensor(tr)], images[torch.as_tensor(va)]
        mean, std = _channel_stats(x_tr)
        if images.dtype == torch.uint8:
            self.train_set = ImageTensorDataset(x_tr, y[tr], mean, std)
            self.val_set = ImageTensorDataset(x_va, y[va], mean, std)
        else:  # small float sets: normalise once up front
            m, s = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
            self.train_set = ImageTensorDataset((x_tr - m) / s, y[tr])
            self.val_set = ImageTensorDataset((x_va - m) / s, y[va])
        self.num_classes = num_classes
        self.in_channels = int(images.shape[1])

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        g = torch.Generator().manual_seed(self.seed)
        # drop_last avoids a final batch of 1, which BatchNorm cannot train on
        drop = len(self.train_set) > self.batch_size
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=g, drop_last=drop, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 256), shuffle=False,
                          num_workers=0)

    def _require_setup(self) -> None:
        if self.train_set is None:
            self.setup("fit")


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of float images [N, C, H, W] (no-op at the same size)."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


# -- digits -------------------------------------------------------------------------------
class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's handwritten digits (8×8, 16 grey levels, 10 classes): scaled to
    [0, 1], bilinearly upsampled to ``resolution`` and replicated to 3 channels."""

    def load(self) -> tuple[torch.Tensor, np.ndarray, int]:
        from sklearn.datasets import load_digits

        d = load_digits()
        r = self.resolution
        check_fits(len(d.images), 3 * r * r * 4, r, "digits")    # float32, 3 channels
        x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = _resize(x, self.resolution).clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
        self.class_names = [str(c) for c in d.target_names]
        return x, d.target.astype(np.int64), 10


@register_data("digits", "digits", "scikit-learn's 8x8 digits, 10 classes (embedded default)")
def _digits(arg: str, **kw: Any) -> DigitsDataModule:
    return DigitsDataModule(**kw)


# -- image folder ---------------------------------------------------------------------------
class ImageFolderDataModule(InMemoryDataModule):
    """``root/<class>/<file>.png|jpg|jpeg``: classes are the sorted sub-folder names;
    images are converted to RGB (16-bit greys scaled to 8 bits) and resized (bilinear)
    to ``resolution`` with Pillow. Hidden files and folders are skipped; at least two
    classes and at most :data:`MAX_IMAGE_PIXELS` per image. The validation split is
    held out from the files."""

    def __init__(self, root: str | Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.root = _user_path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if not self.root.is_dir():
            raise ValueError(f"imagefolder path is not a directory: {self.root}")

    def files(self) -> tuple[list[Path], np.ndarray, list[str]]:
        classes = sorted(p.name for p in self.root.iterdir()
                         if p.is_dir() and not p.name.startswith("."))
        files: list[Path] = []
        labels: list[int] = []
        used: list[str] = []
        for name in classes:
            d = self.root / name
            # hidden files and folders are skipped, like hidden class folders
            imgs = sorted(p for p in d.rglob("*")
                          if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                          and not any(s.startswith(".") for s in p.relative_to(d).parts))
            if not imgs:
                continue  # an empty sub-folder is not a class
            files += imgs
            labels += [len(used)] * len(imgs)
            used.append(name)
        if not used:
            raise ValueError(f"no classes in image folder {self.root}: expected sub-folders "
                             f"with {'/'.join(IMAGE_SUFFIXES)} images (ROOT/<class>/<image>)")
        if len(used) < 2:  # one class: every child would score 100%
            raise ValueError(f"image folder {self.root} has only one class ({used[0]}): need "
                             "at least 2 class sub-folders with images")
        return files, np.asarray(labels, dtype=np.int64), used

    def load(self) -> tuple[torch.Tensor, np.ndarray, int]:
        files, labels, classes = self.files()
        r = self.resolution
        check_fits(len(files), 3 * r * r, r, f"image folder {self.root}")
        out = torch.empty((len(files), 3, r, r), dtype=torch.uint8)
        for i, path in enumerate(files):
            out[i] = torch.from_numpy(_read_image(path, r)).permute(2, 0, 1)
        self.class_names = classes
        return out, labels, len(classes)


def _read_image(path: Path, r: int) -> np.ndarray:
    """One image as uint8 RGB ``[r, r, 3]``; ValueError naming the file if it cannot be
    read or exceeds :data:`MAX_IMAGE_PIXELS` (checked from the header, before decoding)."""
    from PIL import Image

    too_big = (f"image {path} is larger than the {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}-pixel "
               "limit for training images: downscale it")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and over twice its limit raises) for huge images: same refusal
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{too_big} ({w}x{h})")
                if im.mode.startswith("I"):
                    # 16-bit PNGs (I;16*, or I holding 0..65535): scale, as convert() clips
                    a = np.clip(np.asarray(im).astype(np.float32) / 257.0, 0, 255)
                    im = Image.fromarray(a.round().astype(np.uint8), "L")
                im = im.convert("RGB").resize((r, r), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(too_big) from e
    except Exception as e:  # any decoder failure of an untrusted file: one line
        if str(e).startswith(too_big):
            raise
        raise ValueError(f"cannot read image {path}: {error_line(e)}") from e


@register_data("imagefolder", "imagefolder:PATH", "PATH/<class>/<image>.png|jpg, read with Pillow")
def _imagefolder(arg: str, **kw: Any) -> ImageFolderDataModule:
    return ImageFolderDataModule(arg, **kw)


# -- CIFAR-10 / CIFAR-100 -------------------------------------------------------------------
class Cifar10DataModule(InMemoryDataModule):
    """CIFAR-10 from the standard python version (``cifar-10-batches-py``):
    ``data_batch_1..5`` (training; the validation split is held out from them),
    ``batches.meta`` (class names; optional). ``test_batch`` is not used for search.
    ``PATH`` may be the batch folder or its parent. See :func:`load_cifar_pickle` for
    the pickle risk. :class:`Cifar100DataModule` is the same reader with other names."""

    TITLE = "CIFAR-10"
    FOLDER = "cifar-10-batches-py"
    TRAIN: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    META, NAMES_KEY, LABELS_KEY, NUM_CLASSES = "batches.meta", b"label_names", b"labels", 10

    def __init__(self, root: str | Path, **kw: Any) -> None:
        super().__init__(**kw)
        root = _user_path(root)
        if not root.exists():
            raise FileNotFoundError(f"{self.TITLE} folder not found: {root}")
        if not root.is_dir():  # FileNotFoundError, as for a folder without the batches
            raise FileNotFoundError(f"{self.TITLE} batch missing: {root} is a file; the path "
                                    f"must be the folder holding {', '.join(self.TRAIN)} "
                                    "(or its parent)")
        if not (root / self.TRAIN[0]).exists() and (root / self.FOLDER).is_dir():
            root = root / self.FOLDER
        for name in self.TRAIN:
            if not (root / name).is_file():
                raise FileNotFoundError(f"{self.TITLE} batch missing: {root / name} (expected "
                                        f"{', '.join(self.TRAIN)} in {root})")
        self.root = root

    def load(self) -> tuple[torch.Tensor, np.ndarray, int]:
        num_classes, names = self.NUM_CLASSES, [str(i) for i in range(self.NUM_CLASSES)]
        meta = self.root / self.META
        if meta.is_file():
            raw = load_cifar_pickle(meta).get(self.NAMES_KEY)
            if raw is not None:
                names = class_names(meta, raw, self.NAMES_KEY)
                num_classes = len(names)
        xs, ys = [], []
        for name in self.TRAIN:
            path = self.root / name
            b = load_cifar_pickle(path)
            data = b.get(b"data")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 \
                    or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError(f"{path}: b'data' must be a uint8 array [N, 3072]")
            xs.append(data)
            ys.append(batch_labels(path, b.get(self.LABELS_KEY), self.LABELS_KEY, len(data),
                                   num_classes))
        if len(np.unique(np.concatenate(ys))) < 2:  # one class: every child scores 100%
            raise ValueError(f"{self.TITLE} batches in {self.root} hold fewer than 2 distinct "
                             "labels: need at least 2 classes")
        r = self.resolution
        check_fits(sum(len(d) for d in xs), 3 * r * r, r, f"{self.TITLE} in {self.root}")
        x = torch.from_numpy(np.concatenate(xs)).view(-1, 3, 32, 32)
        if self.resolution != 32:  # resize in chunks, store uint8 at the proxy size
            x = torch.cat([_resize(c.float(), self.resolution).round_().clamp_(0, 255)
                           .to(torch.uint8) for c in torch.split(x, 2048)])
        self.class_names = names
        return x, np.concatenate(ys), num_classes


class Cifar100DataModule(Cifar10DataModule):
    """CIFAR-100 from the standard python version (``cifar-100-python``): ``train``
    (50,000 images; the validation split is held out from it) with its 100 *fine*
    labels — the task NAS-Bench-201's CIFAR-100 accuracies are of — and ``meta`` (class
    names; optional). ``test`` is not used for search."""

    TITLE = "CIFAR-100"
    FOLDER = "cifar-100-python"
    TRAIN = ("train",)
    META, NAMES_KEY, LABELS_KEY, NUM_CLASSES = "meta", b"fine_label_names", b"fine_labels", 100


@register_data("cifar10", "cifar10:PATH", "CIFAR-10 python batches (data_batch_1..5) in PATH")
def _cifar10(arg: str, **kw: Any) -> Cifar10DataModule:
    return Cifar10DataModule(arg, **kw)


@register_data("cifar100", "cifar100:PATH", "CIFAR-100 python version (train, fine labels) in PATH")
def _cifar100(arg: str, **kw: Any) -> Cifar100DataModule:
    return Cifar100DataModule(arg, **kw)


# -- any LightningDataModule ----------------------------------------------------------------
@register_data("module", "module:pkg.mod:Class", "any LightningDataModule, built with no args")
def _module(arg: str, **kw: Any) -> L.LightningDataModule:
    from mnas.train.module_data import load_module_datamodule

    return load_module_datamodule(arg)

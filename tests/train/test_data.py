"""Data specs: each form loads real (tiny, generated) data; bad specs fail clearly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnas.train.data import data_specs, make_datamodule, split_indices
from tests.cifar_files import write_cifar10 as _cifar
from tests.cifar_files import write_cifar100 as _cifar100

# -- registry and bad specs ---------------------------------------------------------


def test_registry_lists_every_form():
    assert data_specs() == ["digits", "imagefolder:PATH", "cifar10:PATH", "cifar100:PATH",
                            "module:pkg.mod:Class"]


@pytest.mark.parametrize("spec", ["mnist", "imagenet:/x", "", "Digits"])
def test_unknown_spec_lists_valid_forms(spec):
    with pytest.raises(ValueError) as e:
        make_datamodule(spec)
    for form in data_specs():
        assert form in str(e.value)


@pytest.mark.parametrize("spec, needle", [("imagefolder", "imagefolder:PATH"),
                                          ("cifar10:", "cifar10:PATH"),
                                          ("cifar100:", "cifar100:PATH"),
                                          ("digits:extra", "takes no argument")])
def test_spec_argument_checked(spec, needle):
    with pytest.raises(ValueError, match=needle):
        make_datamodule(spec)


@pytest.mark.parametrize("kw", [{"val_fraction": 0.0}, {"val_fraction": 1.0},
                                {"resolution": 0}, {"batch_size": 0}, {"batch_size": 2.5}])
def test_bad_knobs(kw):
    with pytest.raises(ValueError):
        make_datamodule("digits", **kw)


@pytest.mark.parametrize("scheme", ["imagefolder", "cifar10", "cifar100"])
def test_missing_path_names_it(tmp_path, scheme):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        make_datamodule(f"{scheme}:{missing}")


# -- split -------------------------------------------------------------------------------


def test_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    tr, va = split_indices(labels, 0.2, seed=3)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(labels)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(labels)))
    per_class = np.bincount(labels[va], minlength=5)
    assert per_class.tolist() == [2, 4, 6, 8, 10]  # 20% of each class
    tr2, va2 = split_indices(labels, 0.2, seed=3)
    assert np.array_equal(va, va2)
    _, va3 = split_indices(labels, 0.2, seed=4)
    assert not np.array_equal(va, va3)


def test_split_refuses_too_few_samples():
    with pytest.raises(ValueError, match="cannot split"):
        split_indices(np.array([0]), 0.2, seed=0)


# -- digits -------------------------------------------------------------------------------


def test_digits_shapes_split_and_normalisation():
    dm = make_datamodule("digits", resolution=16, batch_size=32, val_fraction=0.25, seed=1)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.in_channels == 3
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert len(dm.val_set) == round(1797 * 0.25)
    assert torch.bincount(dm.val_set.labels, minlength=10).min() >= 40  # every class held out
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey → 3 channels
    all_train = dm.train_set.images
    assert abs(float(all_train.mean())) < 1e-3 and abs(float(all_train.std()) - 1) < 1e-2
    # no validation image is also a training image (the split is over samples)
    tr = {t.numpy().tobytes() for t in dm.train_set.images[:, 0]}
    dup = sum(v.numpy().tobytes() in tr for v in dm.val_set.images[:, 0])
    assert dup <= 5  # load_digits itself holds a handful of identical images


def test_train_order_is_seeded_per_loader():
    dm = make_datamodule("digits", resolution=8, batch_size=64, seed=0)
    dm.setup("fit")
    a = next(iter(dm.train_dataloader()))[1]
    b = next(iter(dm.train_dataloader()))[1]  # a fresh loader starts the same order
    assert torch.equal(a, b)
    other = make_datamodule("digits", resolution=8, batch_size=64, seed=1)
    assert not torch.equal(a, next(iter(other.train_dataloader()))[1])


# -- imagefolder -------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}


def _image_folder(root: Path, per_class: int = 6) -> Path:
    for name, rgb in COLOURS.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("RGB", (10 + i, 12), rgb)
            fmt = "png" if i % 2 else "jpeg"
            img.save(d / f"{i}.{'png' if fmt == 'png' else 'jpg'}", format=fmt.upper())
    (root / "empty").mkdir()                       # not a class
    (root / "notes.txt").write_text("ignored")
    return root


def test_imagefolder_loads_classes_resized_rgb(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    dm = make_datamodule(f"imagefolder:{root}", resolution=16, batch_size=4, seed=0)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.in_channels == 3
    assert dm.class_names == ["blue", "green", "red"]
    assert len(dm.val_set) == round(18 * 0.2) and len(dm.train_set) == 18 - len(dm.val_set)
    assert dm.train_set.images.shape[1:] == (3, 16, 16)
    assert dm.train_set.images.dtype == torch.uint8
    # each class's pixels carry its colour: the dominant channel matches the label
    imgs = torch.cat([dm.train_set.images, dm.val_set.images]).float()
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    dominant = imgs.mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(dominant, torch.tensor([2, 1, 0])[labels])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32


def test_imagefolder_without_classes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "loose.png").write_bytes(b"")
    dm = make_datamodule(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="no classes"):
        dm.setup("fit")


def test_imagefolder_unreadable_image(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=3)
    (root / "red" / "broken.png").write_bytes(b"not a png")
    dm = make_datamodule(f"imagefolder:{root}")
    with pytest.raises(ValueError, match="broken.png"):
        dm.setup("fit")


# -- cifar10 ------------------------------------------------------------------------------


def test_cifar10_reads_train_batches_in_layout(tmp_path):
    root = _cifar(tmp_path / "cifar-10-batches-py")
    dm = make_datamodule(f"cifar10:{tmp_path}", resolution=32, batch_size=8, seed=0)  # parent
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.in_channels == 3 and dm.class_names[9] == "truck"
    assert dm.root == root
    imgs = torch.cat([dm.train_set.images, dm.val_set.images])
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert imgs.shape == (50, 3, 32, 32)               # 5 train batches, test batch unused
    assert torch.equal(imgs[:, 0, 5, 5].long(), labels * 20)
    assert set(imgs[:, 1, 0, 0].tolist()) == {0, 1, 2, 3, 4}
    assert (imgs[:, 2, 0, :] == 255).all() and (imgs[:, 2, 1, :] == 0).all()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32)


def test_cifar10_resized_to_proxy_resolution(tmp_path):
    _cifar(tmp_path / "c")
    dm = make_datamodule(f"cifar10:{tmp_path / 'c'}", resolution=16)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (3, 16, 16)
    assert dm.train_set.images.dtype == torch.uint8


def test_cifar10_missing_batch_named(tmp_path):
    root = _cifar(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        make_datamodule(f"cifar10:{root}")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("scheme", ["cifar10", "cifar100"])
def test_cifar_refuses_code_in_pickle(tmp_path, scheme):
    root = (_cifar if scheme == "cifar10" else _cifar100)(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(root / ("data_batch_2" if scheme == "cifar10" else "train"), "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": []}, f, protocol=2)
    dm = make_datamodule(f"{scheme}:{root}")
    with pytest.raises(ValueError, match="refusing to load global"):
        dm.setup("fit")
    assert not marker.exists()


def test_cifar10_wrong_shape(tmp_path):
    root = _cifar(tmp_path / "c")
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"uint8 array \[N, 3072\]"):
        make_datamodule(f"cifar10:{root}").setup("fit")


# -- cifar100 -----------------------------------------------------------------------------


def test_cifar100_reads_train_with_fine_labels(tmp_path):
    root = _cifar100(tmp_path / "cifar-100-python")
    dm = make_datamodule(f"cifar100:{tmp_path}", resolution=32, batch_size=8, seed=0)
    dm.setup("fit")
    assert dm.root == root
    assert dm.num_classes == 100 and dm.class_names[99] == "fine99"
    imgs = torch.cat([dm.train_set.images, dm.val_set.images])
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert imgs.shape == (300, 3, 32, 32)              # train only, test unused
    assert (imgs[:, 1] == 0).all()
    assert torch.equal(imgs[:, 0, 7, 3].long(), labels * 2)   # fine, not coarse, labels
    assert labels.max() >= 20


def test_cifar100_missing_train_named(tmp_path):
    root = _cifar100(tmp_path / "c")
    (root / "train").unlink()
    with pytest.raises(FileNotFoundError, match="CIFAR-100 batch missing: .*train"):
        make_datamodule(f"cifar100:{root}")


def test_cifar100_without_fine_labels_is_refused(tmp_path):
    """A CIFAR-10 batch renamed ``train`` has ``labels``, not ``fine_labels``."""
    root = _cifar100(tmp_path / "c")
    with open(root / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match="0 labels .*fine_labels.* for 2 images"):
        make_datamodule(f"cifar100:{root}").setup("fit")


# -- module:pkg.mod:Class -------------------------------------------------------------------

def test_module_spec_instantiates_class(user_module):
    dm = make_datamodule(f"module:{user_module}:Good")
    assert type(dm).__name__ == "Good" and dm.num_classes == 4 and dm.in_channels == 1
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 8, 8)


@pytest.mark.parametrize("target, exc, needle", [
    ("{m}:NoClasses", ValueError, "num_classes"),
    ("{m}:NotADataModule", TypeError, "not a LightningDataModule"),
    ("{m}:Missing", ValueError, "no attribute 'Missing'"),
    ("no_such_pkg_xyz.mod:Good", ValueError, "cannot import"),
    ("{m}", ValueError, "module:pkg.mod:Class"),
])
def test_module_spec_errors(user_module, target, exc, needle):
    with pytest.raises(exc, match=needle):
        make_datamodule("module:" + target.format(m=user_module))

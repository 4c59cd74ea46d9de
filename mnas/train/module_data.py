"""``--data module:pkg.mod:Class``: a user's own LightningDataModule, checked up front.

The class is user code: any failure while importing, building or setting it up (an
exception, ``sys.exit()``) is one line naming the target, and its first training and
validation batches are checked against the contract (float images ``[B, C, H, W]`` with
``C = in_channels``, integer labels ``[B]`` in ``[0, num_classes)``) before any child
trains, so a mistake is said once instead of failing every child the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mnas.train.data import error_line


def load_module_datamodule(target: str) -> L.LightningDataModule:
    """``pkg.mod:Class`` → ``Class()`` (no arguments), set up for fitting. The class must
    be a ``LightningDataModule`` exposing ``num_classes``; ``in_channels`` defaults to 3.
    Proxy knobs (resolution, batch size, split, seed) are the class's own business, and
    so is the validation split (accuracy is measured on ``val_dataloader()``). Lightning
    calls ``setup("fit")`` again for every child trained: make it idempotent so the
    data is not reloaded each time."""
    mod_name, _, cls_name = target.rpartition(":")
    if not mod_name or not cls_name:
        raise ValueError(f"module data spec must be module:pkg.mod:Class, got module:{target}")

    def user(what: str, fn: Callable[[], Any]) -> Any:
        # user code: any failure, sys.exit() included, is one line naming the target
        try:
            return fn()
        except (Exception, SystemExit) as e:
            raise ValueError(f"module:{target}: {what}: {error_line(e)}") from e

    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        top = mod_name.split(".")[0]
        here = e.name == top and (Path(f"{top}.py").is_file() or Path(top).is_dir())
        # the `mnas` script, unlike `python -m`, does not import from the current folder
        hint = (f"; {top} is in the current folder, which the `mnas` command does not "
                "import from: run it with PYTHONPATH=." if here else "")
        raise ValueError(f"module:{target}: cannot import data module {mod_name!r}: "
                         f"{error_line(e)}{hint}") from e
    except (Exception, SystemExit) as e:
        raise ValueError(f"module:{target}: cannot import data module {mod_name!r}: "
                         f"{error_line(e)}") from e
    cls = user("attribute lookup failed", lambda: getattr(mod, cls_name, None))
    if cls is None:
        raise ValueError(f"module {mod_name!r} has no attribute {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise TypeError(f"{mod_name}:{cls_name} is not a LightningDataModule class")
    dm = user(f"{cls_name}() failed", cls)
    user("prepare_data() failed", dm.prepare_data)
    user('setup("fit") failed', lambda: dm.setup("fit"))
    n = user("num_classes failed", lambda: getattr(dm, "num_classes", None))
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"{mod_name}:{cls_name} must expose an integer attribute "
                         f"num_classes >= 2 (got {n!r})")
    if not isinstance(getattr(dm, "in_channels", None), int):
        dm.in_channels = 3
    check_first_batch(dm, target)
    return dm


def check_first_batch(dm: Any, target: str) -> None:
    """ValueError naming ``module:target`` unless the first training and validation
    batches are ``(float images [B, in_channels, H, W], integer labels [B])`` with labels
    in ``[0, num_classes)``."""
    for split in ("train", "val"):
        try:
            loader = getattr(dm, f"{split}_dataloader")()
            batch = next(iter(loader))
        except StopIteration:
            raise ValueError(f"module:{target}: {split}_dataloader() yields no batch") from None
        except (Exception, SystemExit) as e:
            raise ValueError(f"module:{target}: {split}_dataloader() failed: "
                             f"{error_line(e)}") from e
        where = f"module:{target}: {split}_dataloader()'s first batch"
        if not (isinstance(batch, list | tuple) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) for t in batch)):
            raise ValueError(f"{where} must be (images, labels) tensors, got "
                             f"{type(batch).__name__}")
        x, y = batch
        if x.ndim != 4 or not x.is_floating_point() or x.shape[1] != dm.in_channels:
            raise ValueError(f"{where}: images must be a float tensor [B, {dm.in_channels}, H, "
                             f"W] (in_channels = {dm.in_channels}), got {x.dtype} "
                             f"{list(x.shape)}")
        if y.ndim != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
            raise ValueError(f"{where}: labels must be an integer tensor [{len(x)}], got "
                             f"{y.dtype} {list(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= dm.num_classes):
            raise ValueError(f"{where}: labels must be in [0, {dm.num_classes - 1}] "
                             f"(num_classes = {dm.num_classes}), got {int(y.min())}.."
                             f"{int(y.max())}")

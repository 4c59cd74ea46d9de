"""Helpers of the ENAS strategy's inner loop: option checks, private minibatch streams
and vectorised fetching from the proxy's in-memory datasets."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum:,}], got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite float in the range; ValueError naming ``name`` otherwise."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high
    if not ok:
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")
    return float(value)


class Stream:
    """Minibatch indices over ``n`` items: a fresh permutation from a private generator
    each epoch, incomplete tail batches dropped (BatchNorm needs > 1 example)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, max(1, min(batch, n))
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos: self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])


def datasets(dm: Any) -> tuple[Any, Any]:
    """``(training, validation)`` datasets of a set-up data module."""
    train = getattr(dm, "train_set", None)
    val = getattr(dm, "val_set", None)
    if train is None or val is None:
        train, val = dm.train_dataloader().dataset, dm.val_dataloader().dataset
    return train, val


def fetch(ds: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples ``idx`` of ``ds`` as one batch ``(x, y)``."""
    from mnas.train.data import ImageTensorDataset

    if isinstance(ds, ImageTensorDataset):  # vectorised: one indexing op per batch
        x, y = ds[idx]
        return x, y
    from torch.utils.data import default_collate

    x, y = default_collate([ds[int(i)] for i in idx])[:2]
    return x, y


def cpu_copy(obj: Any) -> Any:
    """Deep copy of ``obj`` (dicts, lists, tuples, tensors) with every tensor on the CPU,
    so a checkpoint written on an accelerator loads on a machine without one."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)

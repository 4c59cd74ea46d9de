"""Tiny CIFAR-10 / CIFAR-100 folders in the exact python-pickle formats of the real
downloads (``cifar-10-batches-py``, ``cifar-100-python``), for the data and ENAS tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, per_batch: int = 10) -> Path:
    """A tiny CIFAR-10 in the exact python format: dicts with bytes keys, uint8
    [N, 3072] rows (1024 red, 1024 green, 1024 blue, row-major), pickle protocol 2."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        for j, lab in enumerate(labels):
            data[j, :1024] = lab * 20          # red plane encodes the label
            data[j, 1024:2048] = k             # green plane: which batch
            data[j, 2048:2048 + 32] = 255      # blue plane: first row white
        d = {b"batch_label": f"batch {k}".encode(), b"labels": labels, b"data": data,
             b"filenames": [f"{k}_{j}.png".encode() for j in range(per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f, protocol=2)
    return root


def write_cifar100(root: Path, n: int = 300) -> Path:
    """A tiny CIFAR-100 in the exact python format (``cifar-100-python``): ``train`` and
    ``test`` dicts with bytes keys — ``data`` uint8 [N, 3072], ``fine_labels`` (100),
    ``coarse_labels`` (20), ``filenames``, ``batch_label`` — and ``meta`` with both
    label-name lists; pickle protocol 2."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, k in (("train", n), ("test", n // 3)):
        fine = [int(v) for v in rng.integers(0, 100, k)]
        data = np.zeros((k, 3072), dtype=np.uint8)
        for j, lab in enumerate(fine):
            data[j, :1024] = lab * 2               # red plane encodes the fine label
            data[j, 1024:2048] = name == "test"    # green plane: which file
        d = {b"filenames": [f"{name}_{j}.png".encode() for j in range(k)],
             b"batch_label": f"{name} batch 1 of 1".encode(), b"fine_labels": fine,
             b"coarse_labels": [v // 5 for v in fine], b"data": data}
        with open(root / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
                    f, protocol=2)
    return root

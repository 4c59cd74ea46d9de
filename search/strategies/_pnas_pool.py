"""The candidate pool the ``pnas`` strategy ranks each stage, and its small helpers
(kept apart so pnas.py stays readable)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Pool:
    """Candidates being ranked: canonical strings, encodings, and the measured cell each
    one comes from (None for random cells)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.rows: list[np.ndarray] = []  # 2-d blocks of encodings, in key order
        self.parents: list[str | None] = []
        self.grown: list[bool] = []  # an expansion of its parent (vs a same-size neighbour)
        self._seen: set[str] = set()

    def add(self, key: str, row: np.ndarray, parent: str | None, grown: bool = False) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        self.keys.append(key)
        self.rows.append(row[None, :])
        self.parents.append(parent)
        self.grown.append(grown)
        return True

    def add_rows(self, idx: list[int], keys: list[str], rows: np.ndarray, parent: str) -> None:
        """Expansions ``keys[i]`` (encodings ``rows[i]``) of ``parent`` for i in ``idx``,
        as one block."""
        idx = [i for i in idx if keys[i] not in self._seen]
        if not idx:
            return
        new = [keys[i] for i in idx]
        self._seen.update(new)
        self.keys += new
        self.rows.append(rows[idx])
        self.parents += [parent] * len(idx)
        self.grown += [True] * len(idx)

    def matrix(self) -> np.ndarray:
        return np.concatenate(self.rows)


def pos_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fmt_stat(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"

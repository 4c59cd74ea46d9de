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


def best_per_target(targets: list[float | None], n_items: int, score: Any, k: int
                    ) -> list[tuple[int, float | None]]:
    """The best ``k`` of ``n_items`` by ``score(T)`` (an array; ties: lower index) with
    the target each was picked for: with several targets, each target's best unpicked
    item in turn, so every target gets a share of any top k."""
    n = min(k, n_items)
    orders = [np.argsort(-score(t), kind="stable").tolist() for t in targets]
    if len(orders) == 1:
        return [(i, targets[0]) for i in orders[0][:n]]
    out: list[tuple[int, float | None]] = []
    taken: set[int] = set()
    pos = [0] * len(orders)
    while len(out) < n:
        for j, order in enumerate(orders):
            while pos[j] < len(order) and order[pos[j]] in taken:
                pos[j] += 1
            if pos[j] < len(order) and len(out) < n:
                taken.add(order[pos[j]])
                out.append((order[pos[j]], targets[j]))
    return out


def pos_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fmt_stat(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"

"""Static layouts for :meth:`search.controller.Controller.evaluate`: where each decision's
head, embedding rows and anchor candidates sit in the batched torch computation, built
once per decision list (:class:`Plan`), and the two indexing helpers it uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from mnas.decisions import Categorical, Decision, Pointer, Subset, validate_choices

Key = tuple  # ("cat"|"ptr"|"sub", name, size) | ("start", k)


def emb_key(d: Decision) -> Key | None:
    """Key of the token-embedding table a decision feeds back through (None: none)."""
    if isinstance(d, Categorical):
        return ("cat", d.name, d.size)
    if isinstance(d, Pointer):
        return ("ptr", d.name, d.n)
    if isinstance(d, Subset):
        return ("sub", d.name, d.n)
    raise TypeError(f"unknown decision type {type(d).__name__}; valid: "
                    "Categorical, Pointer, Subset")


def rows_of(x: torch.Tensor, idx: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x`` indexed along ``dim`` by a 2-D index: index_select, whose backward is a
    plain index_add (advanced indexing's accumulating index_put sorts: far slower)."""
    out = x.index_select(dim, idx.reshape(-1))
    return out.reshape(*x.shape[:dim], *idx.shape, *x.shape[dim + 1:])


def softmax_steps(z: torch.Tensor, mask: torch.Tensor, chosen: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last axis with ``mask``ed (True) entries excluded:
    (log p of ``chosen`` per step, entropy summed over steps)."""
    lp = F.log_softmax(z.masked_fill(mask, float("-inf")), dim=-1)
    return (lp.gather(2, chosen[..., None])[..., 0],
            -(lp.exp() * lp.masked_fill(mask, 0.0)).sum((1, 2)))


class Plan:
    """Static layout of one decision list for :meth:`Controller.evaluate`.

    Anchor candidates are indices into ``Hext = [start[S-1], …, start[0], out_0, …]``:
    ``start[k]`` sits at ``S-1-k``, the output of step ``t`` at ``S+t``.
    """

    def __init__(self, decisions: tuple[Decision, ...], emb_index: dict[Key, int],
                 head_index: dict[Key, int]) -> None:
        self.decisions = decisions
        # Subset sizes exceed int64 beyond n = 62 (refused by Controller.missing)
        self.sizes = np.array([min(d.size, 2**62) for d in decisions], dtype=np.int64)
        # token-embedding rows of every step but the last (its token is never fed back)
        self.emb_keys = [emb_index[emb_key(d)] for d in decisions[:-1]]
        rows = [d.n + 1 if isinstance(d, Subset) else d.size for d in decisions[:-1]]
        off = np.cumsum([0] + rows)[:-1]
        self.bag_subsets = [t for t, d in enumerate(decisions[:-1]) if isinstance(d, Subset)]
        width = max([decisions[t].n + 1 for t in self.bag_subsets], default=1)
        self.bag_base = np.zeros((len(rows), width), dtype=np.int64)
        self.bag_base[:, 0] = off
        for t in self.bag_subsets:
            self.bag_base[t, :decisions[t].n + 1] = off[t] + np.arange(decisions[t].n + 1)
        self.bag_sub_t = torch.tensor(self.bag_subsets, dtype=torch.long)
        self.bag_single = np.array([not isinstance(d, Subset) for d in decisions[:-1]],
                                   dtype=np.int64)
        # categorical heads: (steps, width) rows into the concatenated head weights
        self.cat_steps = [t for t, d in enumerate(decisions) if isinstance(d, Categorical)]
        self.head_keys = [head_index[emb_key(decisions[t])] for t in self.cat_steps]
        sizes = [decisions[t].size for t in self.cat_steps]
        hoff = np.cumsum([0] + sizes)[:-1]
        width = max(sizes, default=0)
        self.head_rows = torch.zeros(len(sizes), width, dtype=torch.long)
        self.cat_mask = torch.zeros(len(sizes), width, dtype=torch.bool)
        for i, (s0, n) in enumerate(zip(hoff, sizes, strict=True)):
            self.head_rows[i, :n] = torch.arange(int(s0), int(s0) + n)
            self.cat_mask[i, :n] = True
        # anchors recorded before each step (output positions), start anchors needed
        pos: list[int] = []
        cand: dict[int, list[int]] = {}
        self.n_start = 0
        for t, d in enumerate(decisions):
            if t > 0 and decisions[t - 1].anchor:
                pos.append(t)
            if not isinstance(d, Categorical):
                self.n_start = max(self.n_start, d.n - len(pos))
                cand[t] = pos[-d.n:] if d.n else []
        S = self.n_start
        self.cand = {t: list(range(S - (decisions[t].n - len(ps)), S)) + [S + p for p in ps]
                     for t, ps in cand.items()}
        self.ptr_steps, self.ptr_idx, self.ptr_mask, self.ptr_rows = self._pad(
            [t for t in cand if isinstance(decisions[t], Pointer)])
        self.sub_steps, self.sub_idx, self.sub_mask, self.sub_rows = self._pad(
            [t for t in cand if isinstance(decisions[t], Subset) and decisions[t].n > 0])
        self.ptr_keys = [emb_key(decisions[t]) for t in self.ptr_steps]
        self.sub_keys = [emb_key(decisions[t]) for t in self.sub_steps]
        self.sub_shift = torch.arange(self.sub_idx.shape[1])
        self.cat_t, self.ptr_t, self.sub_t = (torch.tensor(x, dtype=torch.long) for x in
                                              (self.cat_steps, self.ptr_steps, self.sub_steps))
        self.cat_pad, self.ptr_pad = ~self.cat_mask, ~self.ptr_mask
        # attention reads only these Hext rows: remap the candidate indices onto them
        used = sorted({i for c in self.cand.values() for i in c})
        where = {u: j for j, u in enumerate(used)}
        self.used = torch.tensor(used, dtype=torch.long)
        for name in ("ptr_idx", "sub_idx"):
            old = getattr(self, name)
            setattr(self, name, old.apply_(lambda i: where.get(i, 0)))

    def validate(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """``rows`` as a (B, T) int64 array, checked against the decisions in one
        vectorised pass (per-row :func:`validate_choices` names the first bad one)."""
        try:
            arr = np.asarray(rows, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            arr = None
        T = len(self.decisions)
        if arr is None or arr.ndim != 2 or arr.shape[1] != T or (arr < 0).any() or \
                not (arr < self.sizes).all():
            for r in rows:
                validate_choices(self.decisions, r)
            if arr is None or arr.ndim != 2:     # e.g. ragged rows that each passed
                raise ValueError(f"expected rows of {T} choices")
        return arr.reshape(len(rows), T)

    def _pad(self, steps: list[int]
             ) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidates of ``steps`` padded to one width: Hext indices, mask, and rows into
        the steps' concatenated slot biases (padding → the trailing zero)."""
        width = max((self.decisions[t].n for t in steps), default=0)
        total = sum(self.decisions[t].n for t in steps)
        idx = torch.zeros(len(steps), width, dtype=torch.long)
        mask = torch.zeros(len(steps), width, dtype=torch.bool)
        rows = torch.full((len(steps), width), total, dtype=torch.long)
        off = 0
        for i, t in enumerate(steps):
            c = self.cand[t]
            idx[i, :len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, :len(c)] = True
            rows[i, :len(c)] = torch.arange(off, off + len(c))
            off += len(c)
        return steps, idx, mask, rows

    def bags(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows (and weights) of the fed-back token embeddings of steps ``0..T-2``:
        ``(B, T-1)`` rows when there is no Subset, else ``(B, T-1, width)`` bags whose
        weights give one row to a Categorical/Pointer and Subset's normalised bag."""
        tok = C[:, :-1] * self.bag_single
        if not self.bag_subsets:
            return self.bag_base[:, 0] + tok, None
        idx = self.bag_base + 0 * tok[..., None]
        idx[..., 0] += tok
        w = np.zeros(idx.shape)
        w[..., 0] = 1.0
        for t in self.bag_subsets:
            n = self.decisions[t].n
            bits = (C[:, t, None] >> np.arange(n)) & 1
            k = 1.0 / (1.0 + bits.sum(1))
            w[:, t, 0] = k
            w[:, t, 1:n + 1] = bits * k[:, None]
        return idx, w

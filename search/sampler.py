"""The controller's sampler: children drawn in float64 NumPy, many at once.

:meth:`search.controller.Controller.evaluate` is the differentiable, batched torch form of
the policy; this module is its fast forward-only twin. torch's per-op overhead would cost
several ms per child, so :func:`snapshot` copies the weights to NumPy once per weight
update (folding the first LSTM layer's input projection into per-token gate rows) and
:func:`sample_batch` runs the autoregressive loop over ``n`` children at once — one
matrix product per step for all of them, so sampling a whole update's batch costs little
more than sampling one child.

Randomness: every draw comes from the given ``numpy.random.Generator`` — ``random(n)``
per Categorical/Pointer step (inverse CDF) and ``random((n, k))`` per Subset step — so
``n = 1`` reproduces, draw for draw, the stream of drawing children one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mnas.decisions import Categorical, Decision, Pointer, Subset

if TYPE_CHECKING:
    from search.controller import Controller


def snapshot(ctl: Controller) -> dict[str, Any]:
    """NumPy float64 copy of the weights the sampler reads."""

    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(torch.float64).numpy()

    H = ctl.hidden
    # gates reordered to (i, f, o, g) and the sigmoid rows halved, so one tanh over the
    # pre-activation gives all four: sigmoid(z) = 0.5 + 0.5·tanh(z/2)
    order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
    scale = np.r_[np.full(3 * H, 0.5), np.ones(H)]
    lstm = []
    for k in range(ctl.layers):
        W = np.concatenate([np64(getattr(ctl.lstm, f"weight_ih_l{k}")),
                            np64(getattr(ctl.lstm, f"weight_hh_l{k}"))], axis=1)
        b = np64(getattr(ctl.lstm, f"bias_ih_l{k}")) + np64(getattr(ctl.lstm, f"bias_hh_l{k}"))
        lstm.append(((W[order] * scale[:, None]).T.copy(), b[order] * scale))
    # the first layer's input is always a token embedding (or a Subset's mean of them):
    # fold W_ih·e + b into per-token gate rows once per weight update
    W0T, b0 = lstm[0]
    W0xT, W0hT = W0T[:H], np.ascontiguousarray(W0T[H:])
    starts = [np64(s) for s in ctl.start]
    snap = {
        "lstm": lstm[1:], "W0hT": W0hT,
        "g": np64(ctl.g_emb) @ W0xT + b0,
        # a condition's gates: with its bias as the first input, without as the term it
        # adds to every later input
        "cond": (np.stack([np64(c) for c in ctl.conds]) @ W0xT) if len(ctl.conds)
        else np.zeros((0, 4 * H)),
        "b0": b0,
        "gates": {k: np64(ctl.embs[i].weight) @ W0xT + b0 for k, i in ctl._emb.items()},
        "head": {k: (np64(ctl.heads[i].weight).T.copy(), np64(ctl.heads[i].bias))
                 for k, i in ctl._head.items()},
        "slot": {k: (np64(ctl.slot_heads[i].weight).T.copy(), np64(ctl.slot_heads[i].bias))
                 for k, i in ctl._slot.items()},
    }
    for kind in ("ptr", "sub"):
        prev = np64(getattr(ctl, f"{kind}_prev").weight)
        snap[kind] = (prev.T.copy(), np64(getattr(ctl, f"{kind}_curr").weight).T.copy(),
                      np64(getattr(ctl, f"{kind}_v").weight)[0])
        snap[f"{kind}_start"] = [prev @ a for a in starts]   # W_prev·start[k]
    return snap


def _recent(keys: list[np.ndarray], start: list[np.ndarray], n: int, rows: int
            ) -> np.ndarray:
    """(rows, n, H): the n most recent anchor keys, oldest first, start anchors padding."""
    real = keys[-n:]
    pad = [np.broadcast_to(start[k], real[0].shape if real else (rows, start[k].size))
           for k in range(n - len(real) - 1, -1, -1)]
    return np.stack(pad + real, axis=1)


def _draw(z: np.ndarray, gen: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One draw per row of softmax(z): (index, log p[index], entropy), by inverse CDF."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    total = e.sum(1)
    u = gen.random(z.shape[0]) * total
    a = np.minimum((np.cumsum(e, 1) <= u[:, None]).sum(1), z.shape[1] - 1)
    log_total = np.log(total)
    rows = np.arange(z.shape[0])
    return a, z[rows, a] - log_total, log_total - (e * z).sum(1) / total


def sample_batch(snap: dict[str, Any], decisions: Sequence[Decision], layers: int,
                 gen: np.random.Generator, n: int, cond: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` children of ``decisions``: choices ``(n, T)`` int64, per-decision
    log-probabilities ``(n, T)`` and path entropies ``(n,)``; ``cond`` (one condition
    index per child) starts each from its condition's embedding instead."""
    T = len(decisions)
    choices = np.zeros((n, T), dtype=np.int64)
    logps = np.zeros((n, T))
    ent = np.zeros(n)
    if n == 0 or T == 0:
        return choices, logps, ent
    W0hT, deep = snap["W0hT"], snap["lstm"]
    H = W0hT.shape[0]
    H2, H3 = 2 * H, 3 * H
    hs = [np.zeros((n, H)) for _ in range(layers)]
    cs = [np.zeros((n, H)) for _ in range(layers)]
    # first layer's input gates per row
    condx = None if cond is None else snap["cond"][cond]
    g0 = np.broadcast_to(snap["g"], (n, 4 * H)) if condx is None else condx + snap["b0"]
    gates, head, slot = snap["gates"], snap["head"], snap["slot"]
    (WpT, WcT, v), (SpT, ScT, sv) = snap["ptr"], snap["sub"]
    ptr_keys: list[np.ndarray] = []                # W_prev·a_j of every anchor, per kind
    sub_keys: list[np.ndarray] = []
    use_ptr = any(type(d) is Pointer for d in decisions)
    use_sub = any(type(d) is Subset for d in decisions)
    prev_anchor = False
    for t, d in enumerate(decisions):
        g = np.tanh(g0 + hs[0] @ W0hT)
        ifo = 0.5 * g[:, :H3] + 0.5
        cs[0] = c = ifo[:, H:H2] * cs[0] + ifo[:, :H] * g[:, H3:]
        hs[0] = x = ifo[:, H2:] * np.tanh(c)
        for layer, (WT, b) in enumerate(deep, 1):
            g = np.tanh(np.concatenate((x, hs[layer]), 1) @ WT + b)
            ifo = 0.5 * g[:, :H3] + 0.5
            cs[layer] = c = ifo[:, H:H2] * cs[layer] + ifo[:, :H] * g[:, H3:]
            hs[layer] = x = ifo[:, H2:] * np.tanh(c)
        out = x
        if prev_anchor:
            if use_ptr:
                ptr_keys.append(out @ WpT)
            if use_sub:
                sub_keys.append(out @ SpT)
        if type(d) is Categorical:
            key = ("cat", d.name, len(d.options))
            a = np.zeros(n, dtype=np.int64)
            if len(d.options) > 1:
                WhT, bh = head[key]
                a, logps[:, t], h_ = _draw(out @ WhT + bh, gen)
                ent += h_
            g0 = gates[key][a]
        elif type(d) is Pointer:
            key = ("ptr", d.name, d.n)
            z = np.tanh(_recent(ptr_keys, snap["ptr_start"], d.n, n)
                        + (out @ WcT)[:, None]) @ v
            if key in slot:
                z = z + out @ slot[key][0] + slot[key][1]
            a, logps[:, t], h_ = _draw(z, gen)
            ent += h_
            g0 = gates[key][a]
        elif type(d) is Subset:
            key = ("sub", d.name, d.n)
            G = gates[key]
            a = np.zeros(n, dtype=np.int64)
            g0 = np.broadcast_to(G[0], (n, 4 * H))
            if d.n:
                z = np.tanh(_recent(sub_keys, snap["sub_start"], d.n, n)
                            + (out @ ScT)[:, None]) @ sv
                if key in slot:
                    z = z + out @ slot[key][0] + slot[key][1]
                # log σ(z) stably; log(1 − σ(z)) = log σ(z) − z
                lsp = -np.logaddexp(0.0, -z)
                q = 1.0 - np.exp(lsp)
                bits = (gen.random((n, d.n)) >= q).astype(np.float64)
                logps[:, t] = lsp.sum(1) - (z * (1.0 - bits)).sum(1)
                ent -= lsp.sum(1) - (q * z).sum(1)
                a = bits.astype(np.int64) @ (1 << np.arange(d.n, dtype=np.int64))
                # gates are affine in x, and the bag's weights sum to 1
                g0 = (G[0] + bits @ G[1:]) / (1.0 + bits.sum(1))[:, None]
        else:
            raise TypeError(f"unknown decision type {type(d).__name__}; valid: "
                            "Categorical, Pointer, Subset")
        if condx is not None:
            g0 = g0 + condx             # the condition is part of every step's input
        choices[:, t] = a
        prev_anchor = d.anchor
    return choices, logps, ent

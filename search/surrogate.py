"""Surrogate predictors for PNAS: an MLP ensemble for accuracy, ridge for latency.

PNAS (Liu et al., 2018) ranks thousands of untrained cells with a predictor fit on the
few it trained; what matters is **rank** correlation with the truth, on cells one block
larger than any it was fit on, from little data. The paper's predictors are an LSTM and
an ensemble of MLPs; this module has the MLP ensemble (numpy, no torch: small, exactly
reproducible, no thread pools), :mod:`search.surrogate_lstm` the LSTM.

:class:`MLPEnsemble` — ``members`` two-hidden-layer ReLU MLPs, each fit with Adam on a
bootstrap resample of the data (different init, different resample), targets
standardised. ``predict`` returns the members' mean and standard deviation. Inputs are
fixed-length encodings (``Encodable.vector``). An input column that is constant over
the training rows carries no information, yet its random first-layer weights would add
noise when a new cell changes it (block b+1's slot, when fit on cells of ≤ b blocks):
after fitting, its contribution is folded into the bias and its weights zeroed, so unseen
slots move nothing and the size-free summary features carry the prediction.

:class:`RidgeLatency` — ridge regression of latency (ms) on an encoding: a network's
latency is, to first order, a constant plus a sum of per-operation costs, so a linear
model on operation counts extrapolates to larger cells (the ``pnas`` strategy feeds it
the encoding's size-free count columns). The ``pnas`` strategy's fast latency predictor
between measurements.

Both are deterministic functions of their seed and data, and picklable through
``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks); nan for < 2 points or a
    constant input."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two equal-length 1-d sequences, got {a.shape}, {b.shape}")
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return float("nan")
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=float)
    ranks[order] = np.arange(len(v), dtype=float)
    # average the ranks of ties
    _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def _check_xy(X: Any, y: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d array (rows = encodings), got shape {X.shape}")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} values")
    if len(y) < 2:
        raise ValueError(f"fitting needs at least 2 rows, got {len(y)}")
    if not np.isfinite(X).all() or not np.isfinite(y).all():
        raise ValueError("X and y must be finite")
    return X, y


class MLPEnsemble:
    """Bootstrap ensemble of small MLPs: ``fit(X, y)``, ``predict(X) -> (mean, std)``."""

    def __init__(self, members: int = 5, hidden: int = 32, epochs: int = 300,
                 lr: float = 3e-3, weight_decay: float = 1e-4, bootstrap: bool = True,
                 seed: int = 0) -> None:
        if int(members) < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not 1 <= int(epochs) <= 100_000:   # each refit runs them all
            raise ValueError(f"epochs must be in [1, 100,000], got {epochs}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.members, self.hidden, self.epochs = int(members), int(hidden), int(epochs)
        self.lr, self.weight_decay, self.bootstrap = float(lr), float(weight_decay), bool(bootstrap)
        self.rng = np.random.default_rng(seed)
        self.nets: list[list[np.ndarray]] = []
        self.y_mean, self.y_std = 0.0, 1.0

    @property
    def fitted(self) -> bool:
        return bool(self.nets)

    def fit(self, X: Any, y: Any, warm_steps: int = 0) -> MLPEnsemble:
        """Fit on ``(X, y)``: ``epochs`` full-batch steps from fresh weights, or, with
        ``warm_steps > 0`` and an ensemble already fitted on as many columns, that many
        steps from the current weights (fresh resamples and optimiser state) — a refit
        after the data has grown by a little, at a fraction of a fit's cost."""
        X, y = _check_xy(X, y)
        assert y is not None
        warm = int(warm_steps) > 0 and self.fitted and self.nets[0][0].shape[0] == X.shape[1]
        old_mean, old_std = self.y_mean, self.y_std
        self.y_mean = float(y.mean())
        self.y_std = float(y.std()) or 1.0
        t = (y - self.y_mean) / self.y_std
        # columns constant over the training rows carry no information: fold them into
        # the first-layer bias and zero their weights, so a value never seen in training
        # (a new block's slot) moves no prediction
        const = (X[0] == X).all(axis=0)
        # members drawn in turn (resample, then initial weights) and trained together:
        # one stacked matmul per layer instead of one per member (Python's overhead,
        # not the arithmetic, is the cost at these sizes)
        idx, params = [], []
        for k in range(self.members):
            idx.append(self.rng.integers(0, len(X), len(X)) if self.bootstrap
                       else np.arange(len(X)))
            if warm:    # the same function under the new target scaling
                net = [p.copy() for p in self.nets[k]]
                net[4] *= old_std / self.y_std
                net[5] = (net[5] * old_std + old_mean - self.y_mean) / self.y_std
                params.append(net)
            else:
                params.append(self._init(X.shape[1]))
        # trained in single precision: half the time of double at the same fit quality
        f32 = np.float32
        stacked = [np.stack(ps).astype(f32) for ps in zip(*params, strict=True)]
        trained = self._train(X[np.stack(idx)].astype(f32), t[np.stack(idx)].astype(f32),
                              stacked, int(warm_steps) if warm else self.epochs)
        self.nets = []
        for k in range(self.members):
            net = [p[k].astype(np.float64) for p in trained]
            net[1] = net[1] + X[0, const] @ net[0][const]
            net[0][const] = 0.0
            self.nets.append(net)
        return self

    def _init(self, d: int) -> list[np.ndarray]:
        h, rng = self.hidden, self.rng
        return [rng.normal(0, np.sqrt(2.0 / max(d, 1)), (d, h)), np.zeros(h),
                rng.normal(0, np.sqrt(2.0 / h), (h, h)), np.zeros(h),
                rng.normal(0, np.sqrt(1.0 / h), (h, 1)), np.zeros(1)]

    def _train(self, X: np.ndarray, t: np.ndarray, params: list[np.ndarray], steps: int
               ) -> list[np.ndarray]:
        """Full-batch Adam on every member at once: ``X`` is (members, n, d), ``t``
        (members, n), ``params`` the members' weights stacked on a leading axis."""
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        n = X.shape[1]
        t = t[..., None]
        Xt = X.transpose(0, 2, 1)
        for step in range(1, steps + 1):  # full batch: the data sets are small
            W1, c1, W2, c2, W3, c3 = params
            z1 = X @ W1 + c1[:, None]
            a1 = np.maximum(z1, 0.0)
            z2 = a1 @ W2 + c2[:, None]
            a2 = np.maximum(z2, 0.0)
            out = a2 @ W3 + c3[:, None]
            g = 2.0 * (out - t) / n
            gW3, gc3 = a2.transpose(0, 2, 1) @ g, g.sum(1)
            g2 = (g @ W3.transpose(0, 2, 1)) * (z2 > 0)
            gW2, gc2 = a1.transpose(0, 2, 1) @ g2, g2.sum(1)
            g1 = (g2 @ W2.transpose(0, 2, 1)) * (z1 > 0)
            gW1, gc1 = Xt @ g1, g1.sum(1)
            grads = [gW1, gc1, gW2, gc2, gW3, gc3]
            for k, (p, gk) in enumerate(zip(params, grads, strict=True)):
                if k % 2 == 0:  # decay weights, not biases
                    gk = gk + self.weight_decay * p
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mh = m[k] / (1 - b1**step)
                vh = v[k] / (1 - b2**step)
                p -= self.lr * mh / (np.sqrt(vh) + eps)
        return params

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the members' predictions, per row."""
        if not self.nets:
            raise ValueError("predict before fit: call fit(X, y) with at least 2 rows first")
        X, _ = _check_xy(X)
        if X.shape[1] != self.nets[0][0].shape[0]:
            raise ValueError(f"X has {X.shape[1]} columns, the ensemble was fit on "
                             f"{self.nets[0][0].shape[0]}")
        preds = []
        for W1, c1, W2, c2, W3, c3 in self.nets:
            a = np.maximum(X @ W1 + c1, 0.0)
            a = np.maximum(a @ W2 + c2, 0.0)
            preds.append((a @ W3 + c3)[:, 0])
        P = np.stack(preds) * self.y_std + self.y_mean
        return P.mean(axis=0), P.std(axis=0)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "nets": [[p.copy() for p in net]
                                                              for net in self.nets],
                "y_mean": self.y_mean, "y_std": self.y_std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.nets = [[np.array(p) for p in net] for net in state["nets"]]
        self.y_mean, self.y_std = float(state["y_mean"]), float(state["y_std"])


class RidgeLatency:
    """Ridge regression of latency (ms) on an encoding; ``predict`` returns ms, floored at
    a tenth of the smallest latency it was fit on (a linear model can go negative).
    ``log=True`` fits log latency instead (relative errors, multiplicative costs). ``l2``
    is per row, so the penalty does not fade as data accumulates."""

    def __init__(self, l2: float = 1e-3, log: bool = False) -> None:
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2 = float(l2)
        self.log = bool(log)
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.floor = 0.0

    @property
    def fitted(self) -> bool:
        return self.w is not None

    def fit(self, X: Any, latency_ms: Any) -> RidgeLatency:
        X, y = _check_xy(X, latency_ms)
        assert y is not None
        if (y <= 0).any():
            raise ValueError("latencies must be > 0 ms")
        t = np.log(y) if self.log else y
        xm, tm = X.mean(axis=0), float(t.mean())
        Xc = X - xm
        A = Xc.T @ Xc + self.l2 * len(X) * np.eye(X.shape[1])
        self.w = np.linalg.solve(A, Xc.T @ (t - tm))
        self.b = tm - float(xm @ self.w)
        self.floor = 0.1 * float(y.min())
        return self

    def predict(self, X: Any, floor: bool = True) -> np.ndarray:
        """Predicted ms per row; ``floor=False`` returns the raw linear values (for
        differences between rows)."""
        if self.w is None:
            raise ValueError("predict before fit: call fit(X, latency_ms) first")
        X, _ = _check_xy(X)
        t = X @ self.w + self.b
        if self.log:
            return np.exp(t)
        return np.maximum(t, self.floor) if floor else t

    def state_dict(self) -> dict[str, Any]:
        return {"w": None if self.w is None else self.w.copy(), "b": self.b,
                "floor": self.floor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = None if state["w"] is None else np.array(state["w"])
        self.b, self.floor = float(state["b"]), float(state["floor"])

"""The controller policy: one autoregressive LSTM that emits any mix of decisions.

One LSTM step per decision (see :mod:`mnas.decisions`); the top hidden state ``h`` of
that step scores the decision, and the sampled token is fed back as the next step's
input (the first step reads a learned start input):

* ``Categorical`` — a linear softmax head over the options.
* ``Pointer(n)`` — attention over the ``n`` most recent anchors,
  ``logit_j = vᵀ tanh(W_prev·a_j + W_curr·h)``, softmax over ``j`` (NASNet's input
  selection, ENAS's form).
* ``Subset(n)`` — for each of the ``n`` most recent anchors an independent Bernoulli,
  ``P(j → i) = sigmoid(vᵀ tanh(W_prev·a_j + W_curr·h))`` (NAS-RL's anchor points; its own
  ``W_prev, W_curr, v``); bit ``j`` of the mask is anchor ``j``, oldest first.

Anchors: a decision with ``anchor=True`` records the controller state *after* it — the
top hidden state once its token has been fed back, i.e. the next step's output — as a
new anchor ``a_j``. Where a ``Pointer``/``Subset`` needs more anchors than exist, the
missing oldest ones are *learned start anchors*: ``start[0]`` sits just before the first
real anchor, ``start[1]`` before that, and so on. (A space that prefers controller
states can list size-1 ``Categorical`` decisions with ``anchor=True``: they cost no
probability and record an anchor — the ``nasnet`` space does this for h_i, h_{i-1}.)

Token embeddings: a ``Categorical`` or ``Pointer`` feeds back a learned embedding of
the chosen index; a ``Subset`` feeds back ``(e_0 + Σ_{j chosen} e_{1+j}) / (1 + k)``.
Feeding back tokens rather than anchor states keeps every input known under teacher
forcing, so :meth:`Controller.evaluate` runs the LSTM over the whole sequence in one call
and scores all heads in three batched, masked passes — a few dozen torch ops per batch
whatever the length, which is what keeps training cost per child low.

Growing decision lists (NAS-RL's depth schedule): the LSTM, the start input, the two
attention blocks and the start anchors are shared by every position; heads and token
embeddings are per decision, keyed by ``(kind, name, size)``, created lazily the first
time a key is seen (new layers get fresh ones, old layers keep theirs). Every creation is
recorded in :attr:`Controller.growth` (one group per :meth:`ensure` call that created
something) and announced through ``new_params_hook``, which a strategy points at
``optimizer.add_param_group`` so the optimiser always holds exactly the controller's
parameters in creation order; :meth:`load_checkpoint` replays the same groups. Initial
values come from a generator seeded by ``(seed, key)``, so a parameter created after a
resume equals the one an uninterrupted run creates.

Two implementations of the same policy: :meth:`evaluate` is batched torch with autograd
(training, PPO ratios); :meth:`sample` draws one child in float64 NumPy from a snapshot
of the weights (per-op torch overhead would make a 42-decision child cost several ms).
Tests check that they agree.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mnas.decisions import Categorical, Decision, Pointer, Subset, validate_choices

Key = tuple  # ("cat"|"ptr"|"sub", name, size) | ("start", k)


def _key_seed(seed: int, key: Key) -> int:
    return (seed * 1_000_003 + zlib.crc32(repr(key).encode())) % (2**63)


def _emb_key(d: Decision) -> Key | None:
    """Key of the token-embedding table a decision feeds back through (None: none)."""
    if isinstance(d, Categorical):
        return ("cat", d.name, d.size)
    if isinstance(d, Pointer):
        return ("ptr", d.name, d.n)
    if isinstance(d, Subset):
        return ("sub", d.name, d.n)
    raise TypeError(f"unknown decision type {type(d).__name__}; valid: "
                    "Categorical, Pointer, Subset")


class Controller(nn.Module):
    """Autoregressive LSTM policy over a list of decisions.

    Args:
        hidden: LSTM hidden size (also the embedding and anchor size).
        layers: stacked LSTM layers.
        init_range: every weight is drawn from ``U(-init_range, init_range)``.
        seed: seeds the initial weights (shared ones and lazily created ones).
    """

    def __init__(self, hidden: int = 100, layers: int = 1, init_range: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden}, {layers}")
        if not init_range > 0:
            raise ValueError(f"init_range must be > 0, got {init_range}")
        self.hidden, self.layers, self.init_range, self.seed = hidden, layers, init_range, seed
        H = hidden
        with torch.random.fork_rng(devices=[]):  # default inits must not touch global RNG
            self.lstm = nn.LSTM(H, H, num_layers=layers, batch_first=True)
            self.g_emb = nn.Parameter(torch.empty(H))        # input of the first step
            self.ptr_prev = nn.Linear(H, H, bias=False)
            self.ptr_curr = nn.Linear(H, H, bias=False)
            self.ptr_v = nn.Linear(H, 1, bias=False)
            self.sub_prev = nn.Linear(H, H, bias=False)
            self.sub_curr = nn.Linear(H, H, bias=False)
            self.sub_v = nn.Linear(H, 1, bias=False)
        gen = torch.Generator().manual_seed(_key_seed(seed, ("shared",)))
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range, generator=gen)
        self.heads = nn.ModuleList()         # Linear(H, size) per categorical key
        self.embs = nn.ModuleList()          # Embedding(rows, H) per embedding key
        self.start = nn.ParameterList()      # learned start anchors, start[0] newest
        self._head: dict[Key, int] = {}
        self._emb: dict[Key, int] = {}
        self.growth: list[list[Key]] = []
        self.new_params_hook: Callable[[list[nn.Parameter]], None] | None = None
        self._snap: dict[str, Any] | None = None
        self._snap_version: tuple[int, ...] = ()
        self._params: list[nn.Parameter] = []
        self._params_growth = -1
        self._plans: dict[tuple[Decision, ...], _Plan] = {}
        self._ensured: Sequence[Decision] | None = None
        self._ensured_kinds = (False, False)

    # -- lazily created parameters ------------------------------------------------
    def _create(self, key: Key) -> list[nn.Parameter]:
        key = tuple(key)
        H = self.hidden
        with torch.random.fork_rng(devices=[]):
            if key[0] == "start":
                if key[1] != len(self.start):
                    raise ValueError(f"start anchors must be created in order, got {key}")
                self.start.append(nn.Parameter(torch.empty(H)))
                new = [self.start[-1]]
            elif key[0] in ("cat", "ptr", "sub"):
                rows = key[2] + 1 if key[0] == "sub" else key[2]   # sub: base row + bits
                emb = nn.Embedding(rows, H)
                self._emb[key] = len(self.embs)
                self.embs.append(emb)
                new = [emb.weight]
                if key[0] == "cat":
                    head = nn.Linear(H, key[2])
                    self._head[key] = len(self.heads)
                    self.heads.append(head)
                    new = [head.weight, head.bias, emb.weight]
            else:
                raise ValueError(f"unknown controller parameter key {key!r}")
        gen = torch.Generator().manual_seed(_key_seed(self.seed, key))
        with torch.no_grad():
            for p in new:
                p.data = p.data.to(self.g_emb.dtype).uniform_(
                    -self.init_range, self.init_range, generator=gen)
        return new

    def missing(self, decisions: Sequence[Decision]) -> list[Key]:
        """Keys of the parameters ``decisions`` need that do not exist yet."""
        keys: list[Key] = []
        seen: set[Key] = set()
        anchors, need_start = 0, 0
        for d in decisions:
            k = _emb_key(d)
            if k not in self._emb and k not in seen:
                seen.add(k)
                keys.append(k)
            if not isinstance(d, Categorical):
                need_start = max(need_start, d.n - anchors)
            anchors += bool(d.anchor)
        keys += [("start", k) for k in range(len(self.start), need_start)]
        return keys

    def ensure(self, decisions: Sequence[Decision]) -> list[nn.Parameter]:
        """Create the parameters ``decisions`` need; return the new ones (one group)."""
        keys = self.missing(decisions)
        if not keys:
            return []
        new = [p for k in keys for p in self._create(k)]
        self.growth.append(keys)
        if self.new_params_hook is not None:
            self.new_params_hook(new)
        return new

    def checkpoint(self) -> dict[str, Any]:
        """Picklable copy of the weights and the growth history."""
        return {"growth": [list(g) for g in self.growth],
                "params": {k: v.detach().clone() for k, v in self.state_dict().items()}}

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Grow to the checkpoint's parameter set (replaying its groups through
        ``new_params_hook``) and load its weights."""
        saved = [[tuple(k) for k in g] for g in state["growth"]]
        if saved[: len(self.growth)] != self.growth:
            raise ValueError("checkpoint was made for other decisions: its parameter groups "
                             f"{saved[:2]}... do not extend this controller's "
                             f"{self.growth[:2]}...")
        for keys in saved[len(self.growth):]:
            new = [p for k in keys for p in self._create(k)]
            self.growth.append(keys)
            if self.new_params_hook is not None:
                self.new_params_hook(new)
        self.load_state_dict(state["params"])

    # -- torch: batched, differentiable ----------------------------------------------
    def _plan(self, decisions: tuple[Decision, ...]) -> _Plan:
        plan = self._plans.get(decisions)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[decisions] = _Plan(decisions, self._emb, self._head)
        return plan

    def evaluate(self, decisions: Sequence[Decision],
                 choices: Sequence[int] | Sequence[Sequence[int]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and path entropy of given choices (differentiable).

        ``choices`` is one choice vector (returns scalars) or a batch of them (returns
        shape ``(B,)``). The entropy is the sum of the per-step conditional entropies
        along each path; its expectation is the joint entropy (chain rule).
        """
        decisions = tuple(decisions)
        single = len(choices) == 0 or isinstance(choices[0], int | np.integer)
        rows = [validate_choices(decisions, c) for c in ([choices] if single else choices)]
        self.ensure(decisions)
        plan = self._plan(decisions)
        B, H, T = len(rows), self.hidden, len(decisions)
        dtype = self.g_emb.dtype
        logp = torch.zeros(B, dtype=dtype)
        ent = torch.zeros(B, dtype=dtype)
        if T == 0 or B == 0:
            return (logp[0], ent[0]) if single else (logp, ent)
        C = np.asarray(rows, dtype=np.int64).reshape(B, T)
        Ct = torch.from_numpy(C)
        # inputs: step t+1 reads step t's token embedding (a bag of rows for a Subset)
        x = self.g_emb.expand(B, 1, H)
        if T > 1:
            table = torch.cat([self.embs[k].weight for k in plan.emb_keys])   # (R, H)
            idx, w = plan.bags(C)
            if w is None:
                tokens = table[torch.from_numpy(idx)]
            else:
                tokens = F.embedding_bag(torch.from_numpy(idx.reshape(-1, idx.shape[-1])),
                                         table, per_sample_weights=torch.from_numpy(
                                             w.reshape(-1, w.shape[-1])).to(dtype),
                                         mode="sum").reshape(B, T - 1, H)
            x = torch.cat([x, tokens], dim=1)
        outs, _ = self.lstm(x)                                          # (B, T, H)
        if plan.cat_steps:
            # block-diagonal heads: each step's rows gathered into a padded (steps, S, H)
            W = torch.cat([self.heads[k].weight for k in plan.head_keys])[plan.head_rows]
            b = torch.cat([self.heads[k].bias for k in plan.head_keys])[plan.head_rows]
            z = torch.einsum("bth,tsh->bts", outs[:, plan.cat_steps], W) + b
            lp = F.log_softmax(z.masked_fill(~plan.cat_mask, float("-inf")), dim=-1)
            logp = logp + lp.gather(2, Ct[:, plan.cat_steps, None])[..., 0].sum(-1)
            ent = ent - (lp.exp() * lp.masked_fill(~plan.cat_mask, 0.0)).sum((1, 2))
        if plan.ptr_steps or plan.sub_steps:
            starts = [self.start[k] for k in range(plan.n_start - 1, -1, -1)]
            hext = (torch.cat([torch.stack(starts).expand(B, -1, -1), outs], dim=1)
                    if starts else outs)[:, plan.used]      # only states some step reads
        if plan.ptr_steps:
            z = self._attend(hext, outs, plan.ptr_steps, plan.ptr_idx,
                             self.ptr_prev, self.ptr_curr, self.ptr_v)
            lp = F.log_softmax(z.masked_fill(~plan.ptr_mask, float("-inf")), dim=-1)
            logp = logp + lp.gather(2, Ct[:, plan.ptr_steps, None])[..., 0].sum(-1)
            ent = ent - (lp.exp() * lp.masked_fill(~plan.ptr_mask, 0.0)).sum((1, 2))
        if plan.sub_steps:
            z = self._attend(hext, outs, plan.sub_steps, plan.sub_idx,
                             self.sub_prev, self.sub_curr, self.sub_v)
            m = plan.sub_mask.to(dtype)
            bits = ((Ct[:, plan.sub_steps, None] >> plan.sub_shift) & 1).to(dtype)
            lsp, lsq = F.logsigmoid(z), F.logsigmoid(-z)
            logp = logp + (m * (bits * lsp + (1 - bits) * lsq)).sum((1, 2))
            p = lsp.exp()
            ent = ent - (m * (p * lsp + (1 - p) * lsq)).sum((1, 2))
        if single:
            return logp[0], ent[0]
        return logp, ent

    @staticmethod
    def _attend(hext: torch.Tensor, outs: torch.Tensor, steps: list[int], idx: torch.Tensor,
                prev: nn.Linear, curr: nn.Linear, v: nn.Linear) -> torch.Tensor:
        """(B, S, width) logits ``vᵀ tanh(W_prev·a_j + W_curr·h)`` of the given steps."""
        keys = prev(hext)[:, idx]                                  # (B, S, width, H)
        return v(torch.tanh(keys + curr(outs[:, steps])[:, :, None]))[..., 0]

    # -- numpy: one child, fast ---------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        if self._params_growth != len(self.growth):   # cache the list: parameters() is slow
            self._params = list(self.parameters())
            self._params_growth = len(self.growth)
        version = tuple(p._version for p in self._params)
        if self._snap is not None and version == self._snap_version:
            return self._snap

        def np64(t: torch.Tensor) -> np.ndarray:
            return t.detach().to(torch.float64).numpy()

        H = self.hidden
        # gates reordered to (i, f, o, g) and the sigmoid rows halved, so one tanh over
        # the pre-activation gives all four: sigmoid(z) = 0.5 + 0.5·tanh(z/2)
        order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
        scale = np.r_[np.full(3 * H, 0.5), np.ones(H)]
        lstm = []
        for k in range(self.layers):
            W = np.concatenate([np64(getattr(self.lstm, f"weight_ih_l{k}")),
                                np64(getattr(self.lstm, f"weight_hh_l{k}"))], axis=1)
            b = (np64(getattr(self.lstm, f"bias_ih_l{k}"))
                 + np64(getattr(self.lstm, f"bias_hh_l{k}")))
            lstm.append((W[order] * scale[:, None], b[order] * scale))
        self._snap = {
            "lstm": lstm,
            "g": np64(self.g_emb),
            "ptr": (np64(self.ptr_prev.weight), np64(self.ptr_curr.weight),
                    np64(self.ptr_v.weight)[0]),
            "sub": (np64(self.sub_prev.weight), np64(self.sub_curr.weight),
                    np64(self.sub_v.weight)[0]),
            "head": {k: (np64(self.heads[i].weight), np64(self.heads[i].bias))
                     for k, i in self._head.items()},
            "emb": {k: np64(self.embs[i].weight) for k, i in self._emb.items()},
            "start": [np64(s) for s in self.start],
        }
        snap = self._snap
        snap["ptr_start"] = [snap["ptr"][0] @ a for a in snap["start"]]
        snap["sub_start"] = [snap["sub"][0] @ a for a in snap["start"]]
        self._snap_version = version
        return self._snap

    @torch.no_grad()
    def sample(self, decisions: Sequence[Decision], generator: np.random.Generator
               ) -> tuple[tuple[int, ...], float, float]:
        """Sample one choice vector: ``(choices, log_prob, entropy)`` (floats, no grad).

        ``generator`` (a ``numpy.random.Generator``) is the only source of randomness,
        so its state fixes the sample.
        """
        if decisions is not self._ensured:
            decisions = tuple(decisions)
            self.ensure(decisions)
            self._ensured = decisions
            self._ensured_kinds = (any(type(d) is Pointer for d in decisions),
                                   any(type(d) is Subset for d in decisions))
        use_ptr, use_sub = self._ensured_kinds
        s = self._snapshot()
        H, H2, H3 = self.hidden, 2 * self.hidden, 3 * self.hidden
        hs = [np.zeros(H) for _ in range(self.layers)]
        cs = [np.zeros(H) for _ in range(self.layers)]
        x = s["g"]
        head, emb, lstm = s["head"], s["emb"], s["lstm"]
        (Wp, Wc, v), (Sp, Sc, sv) = s["ptr"], s["sub"]
        ptr_keys: list[np.ndarray] = []     # W_prev·a_j of every anchor, per kind
        sub_keys: list[np.ndarray] = []
        choices: list[int] = []
        logp = ent = 0.0
        prev_anchor = False
        for d in decisions:
            for layer, (W, b) in enumerate(lstm):
                t = np.tanh(W @ np.concatenate((x, hs[layer])) + b)
                ifo = 0.5 * t[:H3] + 0.5
                cs[layer] = c = ifo[H:H2] * cs[layer] + ifo[:H] * t[H3:]
                hs[layer] = x = ifo[H2:] * np.tanh(c)
            out = x
            if prev_anchor:
                if use_ptr:
                    ptr_keys.append(Wp @ out)
                if use_sub:
                    sub_keys.append(Sp @ out)
            if type(d) is Categorical:
                key = ("cat", d.name, len(d.options))
                a = 0
                if len(d.options) > 1:
                    Wh, bh = head[key]
                    a, lp_a, h_ = _draw(Wh @ out + bh, generator)
                    logp, ent = logp + lp_a, ent + h_
                x = emb[key][a]
            elif type(d) is Pointer:
                keys = _recent_np(ptr_keys, s["ptr_start"], d.n)
                a, lp_a, h_ = _draw(np.tanh(keys + Wc @ out) @ v, generator)
                logp, ent = logp + lp_a, ent + h_
                x = emb[("ptr", d.name, d.n)][a]
            elif type(d) is Subset:
                E = emb[("sub", d.name, d.n)]
                a, x = 0, E[0]
                if d.n:
                    z = np.tanh(_recent_np(sub_keys, s["sub_start"], d.n) + Sc @ out) @ sv
                    lsp, lsq = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
                    p = np.exp(lsp)
                    bits = generator.random(d.n) < p
                    logp += float(np.where(bits, lsp, lsq).sum())
                    ent -= float((p * lsp + (1 - p) * lsq).sum())
                    chosen = np.flatnonzero(bits).tolist()
                    a = sum(1 << j for j in chosen)
                    if chosen:
                        x = (E[0] + bits @ E[1:]) / (1.0 + len(chosen))
            else:
                raise TypeError(f"unknown decision type {type(d).__name__}; valid: "
                                "Categorical, Pointer, Subset")
            choices.append(a)
            prev_anchor = d.anchor
        return tuple(choices), logp, ent


def _recent_np(keys: list[np.ndarray], start: list[np.ndarray], n: int) -> np.ndarray:
    """(n, H): the n most recent anchor keys, oldest first, start anchors padding."""
    real = keys[-n:]
    return np.stack([start[k] for k in range(n - len(real) - 1, -1, -1)] + real)


def _draw(logits: np.ndarray, gen: np.random.Generator) -> tuple[int, float, float]:
    """Sample from softmax(logits): (index, log p[index], entropy). Plain Python floats:
    for a handful of options that is several times faster than NumPy calls."""
    z = logits.tolist()
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = math.fsum(e)
    u = gen.random() * total
    a, acc = len(e) - 1, 0.0
    for i, v in enumerate(e):
        acc += v
        if u < acc:
            a = i
            break
    log_total = math.log(total)
    return a, z[a] - m - log_total, log_total - sum(
        ei * (zi - m) for ei, zi in zip(e, z, strict=True)) / total


class _Plan:
    """Static layout of one decision list for :meth:`Controller.evaluate`.

    Anchor candidates are indices into ``Hext = [start[S-1], …, start[0], out_0, …]``:
    ``start[k]`` sits at ``S-1-k``, the output of step ``t`` at ``S+t``.
    """

    def __init__(self, decisions: tuple[Decision, ...], emb_index: dict[Key, int],
                 head_index: dict[Key, int]) -> None:
        self.decisions = decisions
        # token-embedding rows of every step but the last (its token is never fed back)
        self.emb_keys = [emb_index[_emb_key(d)] for d in decisions[:-1]]
        rows = [d.n + 1 if isinstance(d, Subset) else d.size for d in decisions[:-1]]
        off = np.cumsum([0] + rows)[:-1]
        self.bag_subsets = [t for t, d in enumerate(decisions[:-1]) if isinstance(d, Subset)]
        width = max([decisions[t].n + 1 for t in self.bag_subsets], default=1)
        self.bag_base = np.zeros((len(rows), width), dtype=np.int64)
        self.bag_base[:, 0] = off
        for t in self.bag_subsets:
            self.bag_base[t, :decisions[t].n + 1] = off[t] + np.arange(decisions[t].n + 1)
        self.bag_single = np.array([not isinstance(d, Subset) for d in decisions[:-1]],
                                   dtype=np.int64)
        # categorical heads: (steps, width) rows into the concatenated head weights
        self.cat_steps = [t for t, d in enumerate(decisions) if isinstance(d, Categorical)]
        self.head_keys = [head_index[_emb_key(decisions[t])] for t in self.cat_steps]
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
        self.ptr_steps, self.ptr_idx, self.ptr_mask = self._pad(
            [t for t in cand if isinstance(decisions[t], Pointer)])
        self.sub_steps, self.sub_idx, self.sub_mask = self._pad(
            [t for t in cand if isinstance(decisions[t], Subset) and decisions[t].n > 0])
        self.sub_shift = torch.arange(self.sub_idx.shape[1])
        # attention reads only these Hext rows: remap the candidate indices onto them
        used = sorted({i for c in self.cand.values() for i in c})
        where = {u: j for j, u in enumerate(used)}
        self.used = torch.tensor(used, dtype=torch.long)
        for name in ("ptr_idx", "sub_idx"):
            old = getattr(self, name)
            setattr(self, name, old.apply_(lambda i: where.get(i, 0)))

    def _pad(self, steps: list[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        width = max((self.decisions[t].n for t in steps), default=0)
        idx = torch.zeros(len(steps), width, dtype=torch.long)
        mask = torch.zeros(len(steps), width, dtype=torch.bool)
        for i, t in enumerate(steps):
            c = self.cand[t]
            idx[i, :len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, :len(c)] = True
        return steps, idx, mask

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

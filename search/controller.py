"""The controller policy: one autoregressive LSTM that emits any mix of decisions.

One LSTM step per decision (:mod:`mnas.decisions`); the step's top hidden state ``h``
scores the decision and the sampled token is fed back as the next input (the first step
reads a learned start input). A *conditioned* child (condition ``k``, e.g. the reward
target it will be scored at) reads the learned embedding ``cond[k]`` (key ``("cond", k)``,
created in order the first time a condition ``≥ k`` is asked for) as its first input,
and ``cond[k]`` is added to every later input, so every decision sees the condition
directly rather than through the LSTM's memory alone (through the first input alone the
policy learnt a different optimum per condition only partly):

* ``Categorical`` — a linear softmax head over the options.
* ``Pointer(n)`` — softmax over the ``n`` most recent anchors of
  ``vᵀ tanh(W_prev·a_j + W_curr·h) + s_j(h)`` (NASNet's input selection, ENAS's form).
* ``Subset(n)`` — one Bernoulli per recent anchor,
  ``P(j → i) = sigmoid(vᵀ tanh(W_prev·a_j + W_curr·h) + s_j(h))`` (NAS-RL's anchor points,
  with its own ``W_prev, W_curr, v``); bit ``j`` of the mask is anchor ``j``, oldest first.

``s_j(h) = u_jᵀh + c_j`` is a per-decision *slot head*, zero-initialised, so the initial
policy is exactly the papers' attention; it lets a decision learn "anchor slot j" as
directly as a categorical option (attention alone must first make the anchors' states
distinct, which took thousands of children on NASNet's space). ``slot_head=False``
leaves the papers' form alone.

Anchors: a decision with ``anchor=True`` records the controller state *after* it (the
next step's output, once its token has been fed back). Where a Pointer/Subset needs more
anchors than exist, the missing oldest ones are *learned start anchors*: ``start[0]``
just before the first real anchor, ``start[1]`` before that, … (a space can instead list
size-1 ``Categorical`` decisions with ``anchor=True``: they cost no probability and
record a controller state — the ``nasnet`` space does so for ``h_i, h_{i-1}``).

Fed-back tokens: a learned embedding of the chosen option or slot; a Subset feeds back
``(e_0 + Σ_{j chosen} e_{1+j}) / (1 + k)``. Tokens rather than anchor states keep every
input known under teacher forcing, so :meth:`Controller.evaluate` runs the LSTM over the
whole sequence in one call and scores all heads in batched, masked passes: a few dozen
torch ops per batch whatever the length.

Growing decision lists (NAS-RL's depth schedule): the LSTM, start input, attention
weights and start anchors are shared by every position; heads, slot heads and token
embeddings belong to one decision, keyed by ``(kind, name, size)``, and are created the
first time a key is seen (new layers get fresh ones; old layers keep theirs). Each
creation is one group in :attr:`Controller.growth`, announced through
``new_params_hook`` — a strategy points it at ``optimizer.add_param_group``, so the
optimiser always holds exactly the controller's parameters in creation order, and
:meth:`Controller.load_checkpoint` replays the groups. Initial values are seeded by
``(seed, key)``: a parameter created after a resume equals the uninterrupted run's.

Two implementations of one policy: :meth:`Controller.evaluate` (batched torch, autograd:
training and PPO ratios) and :meth:`Controller.sample_batch` (:mod:`search.sampler`: many
children at once in float64 NumPy from a snapshot of the weights, since torch's per-op
overhead would cost several ms per child).
Tests check they agree with each other and with a plain step-by-step reference.
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

from mnas.decisions import Categorical, Decision, Subset
from search.controller_plan import Key, Plan, emb_key, rows_of, softmax_steps
from search.sampler import sample_batch, snapshot


def _key_seed(seed: int, key: Key) -> int:
    return (seed * 1_000_003 + zlib.crc32(repr(key).encode())) % (2**63)


class Controller(nn.Module):
    """Autoregressive LSTM policy over a list of decisions.

    Args:
        hidden: LSTM hidden size (also the embedding and anchor size).
        layers: stacked LSTM layers.
        init_range: every weight is drawn from ``U(-init_range, init_range)``.
        seed: seeds the initial weights (shared ones and lazily created ones).
    """

    def __init__(self, hidden: int = 100, layers: int = 1, init_range: float = 0.1,
                 seed: int = 0, slot_head: bool = True) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden}, {layers}")
        if not 0 < init_range <= 1e6:
            raise ValueError(f"init_range must be in (0, 1e6], got {init_range}")
        self.hidden, self.layers, self.init_range, self.seed = hidden, layers, init_range, seed
        self.use_slot_head = bool(slot_head)
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
        self.conds = nn.ParameterList()      # condition embeddings (first input, + every later)
        self.slot_heads = nn.ModuleList()    # Linear(H, n) per Pointer/Subset key
        self._head: dict[Key, int] = {}
        self._emb: dict[Key, int] = {}
        self._slot: dict[Key, int] = {}
        self.growth: list[list[Key]] = []
        self.new_params_hook: Callable[[list[nn.Parameter]], None] | None = None
        self._snap: dict[str, Any] | None = None
        self._snap_version: tuple[int, ...] = ()
        self._params: list[nn.Parameter] = []
        self._params_growth = -1
        self._generation = 0
        self._plans: dict[tuple[Decision, ...], Plan] = {}
        self._ensured: Sequence[Decision] | None = None

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
            elif key[0] == "cond":
                if key[1] != len(self.conds):
                    raise ValueError(f"conditions must be created in order, got {key}")
                self.conds.append(nn.Parameter(torch.empty(H)))
                new = [self.conds[-1]]
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
                elif self.use_slot_head and key[2] > 0:
                    slot = nn.Linear(H, key[2]).to(self.g_emb.dtype)
                    self._slot[key] = len(self.slot_heads)
                    self.slot_heads.append(slot)
            else:
                raise ValueError(f"unknown controller parameter key {key!r}")
        gen = torch.Generator().manual_seed(_key_seed(self.seed, key))
        if key in self._slot:       # zero: the initial policy is the papers' attention
            slot = self.slot_heads[self._slot[key]]
            with torch.no_grad():
                slot.weight.zero_()
                slot.bias.zero_()
            new += [slot.weight, slot.bias]
        with torch.no_grad():
            for p in new[:3 if key[0] == "cat" else 1]:
                p.data = p.data.to(self.g_emb.dtype).uniform_(
                    -self.init_range, self.init_range, generator=gen)
        return new

    def missing(self, decisions: Sequence[Decision]) -> list[Key]:
        """Keys of the parameters ``decisions`` need that do not exist yet."""
        keys: list[Key] = []
        seen: set[Key] = set()
        anchors, need_start = 0, 0
        for d in decisions:
            k = emb_key(d)
            if k not in self._emb and k not in seen:
                seen.add(k)
                keys.append(k)
            if not isinstance(d, Categorical):
                need_start = max(need_start, d.n - anchors)
                if isinstance(d, Subset) and d.n > 62:   # masks travel as int64
                    raise ValueError(f"Subset {d.name!r} has n={d.n}; at most 62 supported")
            anchors += bool(d.anchor)
        keys += [("start", k) for k in range(len(self.start), need_start)]
        return keys

    def ensure(self, decisions: Sequence[Decision]) -> list[nn.Parameter]:
        """Create the parameters ``decisions`` need; return the new ones (one group)."""
        return self._grow(self.missing(decisions))

    def ensure_conditions(self, n: int) -> list[nn.Parameter]:
        """Create the condition embeddings ``0 … n-1`` that do not exist yet (one group)."""
        return self._grow([("cond", k) for k in range(len(self.conds), n)])

    def _grow(self, keys: list[Key]) -> list[nn.Parameter]:
        """Create ``keys``' parameters as one recorded growth step, announced once."""
        if not keys:
            return []
        new = [p for k in keys for p in self._create(k)]
        self.growth.append(keys)
        if self.new_params_hook is not None:
            self.new_params_hook(new)
        return new

    def _conditions(self, cond: int | Sequence[int] | np.ndarray | None, n: int
                    ) -> np.ndarray | None:
        """``cond`` as one condition index per child (``None``: unconditioned)."""
        if cond is None:
            return None
        idx = np.broadcast_to(np.asarray(cond, dtype=np.int64), (n,))
        if n and idx.min() < 0:
            raise ValueError(f"condition indices must be >= 0, got {idx.min()}")
        if n:
            self.ensure_conditions(int(idx.max()) + 1)
        return idx

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
    def _plan(self, decisions: tuple[Decision, ...]) -> Plan:
        plan = self._plans.get(decisions)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[decisions] = Plan(decisions, self._emb, self._head)
        return plan

    def evaluate(self, decisions: Sequence[Decision],
                 choices: Sequence[int] | Sequence[Sequence[int]], per_step: bool = False,
                 cond: int | Sequence[int] | np.ndarray | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and path entropy of given choices (differentiable).

        ``choices`` is one choice vector (returns scalars) or a batch of them (returns
        shape ``(B,)``). The entropy is the sum of the per-step conditional entropies
        along each path; its expectation is the joint entropy (chain rule). With
        ``per_step`` the log-probability is given per decision (shape ``(…, T)``).
        ``cond``: the children's condition (one index, or one per child; ``None``: the
        unconditioned start input).
        """
        decisions = tuple(decisions)
        single = len(choices) == 0 or isinstance(choices[0], int | np.integer)
        self.ensure(decisions)
        plan = self._plan(decisions)
        rows = plan.validate([choices] if single else choices)
        B, H, T = len(rows), self.hidden, len(decisions)
        cidx = self._conditions(cond, B)
        dtype = self.g_emb.dtype
        ent = torch.zeros(B, dtype=dtype)
        steps: list[list[int]] = []           # per-step log-probs, (steps, (B, k)) pieces
        parts: list[torch.Tensor] = []

        def result() -> tuple[torch.Tensor, torch.Tensor]:
            if per_step:
                logp = torch.zeros(B, T, dtype=dtype)
                if parts:
                    cols = torch.tensor([t for s in steps for t in s], dtype=torch.long)
                    logp = logp.index_copy(1, cols, torch.cat(parts, 1))
            else:
                logp = sum((p.sum(-1) for p in parts), torch.zeros(B, dtype=dtype))
            return (logp[0], ent[0]) if single else (logp, ent)

        if T == 0 or B == 0:
            return result()
        C, Ct = rows, torch.from_numpy(rows)
        # inputs: step t+1 reads step t's token embedding (a bag of rows for a Subset)
        c = None if cidx is None else \
            torch.stack(list(self.conds))[torch.from_numpy(cidx.copy())][:, None]
        x = self.g_emb.expand(B, 1, H) if c is None else c
        if T > 1:
            table = torch.cat([self.embs[k].weight for k in plan.emb_keys])   # (R, H)
            idx, w = plan.bags(C)
            if w is None:
                tokens = table[torch.from_numpy(idx)]
            else:
                # every step's first row, weighted; the Subset steps' other rows as bags
                # (one embedding_bag over all steps would sort B·T·width rows backward)
                tokens = rows_of(table, torch.from_numpy(idx[..., 0])) * \
                    torch.from_numpy(w[..., 0, None]).to(dtype)
                sub = plan.bag_subsets
                extra = F.embedding_bag(
                    torch.from_numpy(idx[:, sub, 1:].reshape(-1, idx.shape[-1] - 1)), table,
                    per_sample_weights=torch.from_numpy(
                        w[:, sub, 1:].reshape(-1, w.shape[-1] - 1)).to(dtype), mode="sum")
                tokens = tokens.index_add(1, plan.bag_sub_t, extra.reshape(B, len(sub), H))
            x = torch.cat([x, tokens if c is None else tokens + c], dim=1)
        outs, _ = self.lstm(x)                                          # (B, T, H)
        if plan.cat_steps:
            # block-diagonal heads: each step's rows gathered into a padded (steps, S, H)
            W = rows_of(torch.cat([self.heads[k].weight for k in plan.head_keys]),
                      plan.head_rows)
            b = rows_of(torch.cat([self.heads[k].bias for k in plan.head_keys]), plan.head_rows)
            z = torch.einsum("bth,tsh->bts", outs.index_select(1, plan.cat_t), W) + b
            lp, en = softmax_steps(z, plan.cat_pad, Ct[:, plan.cat_steps])
            steps.append(plan.cat_steps)
            parts.append(lp)
            ent = ent + en
        if plan.ptr_steps or plan.sub_steps:
            starts = [self.start[k] for k in range(plan.n_start - 1, -1, -1)]
            hext = (torch.cat([torch.stack(starts).expand(B, -1, -1), outs], dim=1)
                    if starts else outs).index_select(1, plan.used)  # states some step reads
        if plan.ptr_steps:
            z = self._anchor_logits("ptr", hext, outs, plan)
            lp, en = softmax_steps(z, plan.ptr_pad, Ct[:, plan.ptr_steps])
            steps.append(plan.ptr_steps)
            parts.append(lp)
            ent = ent + en
        if plan.sub_steps:
            z = self._anchor_logits("sub", hext, outs, plan)
            m = plan.sub_mask.to(dtype)
            bits = ((Ct[:, plan.sub_steps, None] >> plan.sub_shift) & 1).to(dtype)
            lsp, lsq = F.logsigmoid(z), F.logsigmoid(-z)
            steps.append(plan.sub_steps)
            parts.append((m * (bits * lsp + (1 - bits) * lsq)).sum(2))
            p = lsp.exp()
            ent = ent - (m * (p * lsp + (1 - p) * lsq)).sum((1, 2))
        return result()

    def _anchor_logits(self, kind: str, hext: torch.Tensor, outs: torch.Tensor,
                       plan: Plan) -> torch.Tensor:
        """(B, steps, width) ``vᵀ tanh(W_prev·a_j + W_curr·h) + u_jᵀh + c_j`` of every
        Pointer (``kind="ptr"``) or Subset (``"sub"``) step; padding reads zero rows."""
        steps, idx, rows = (getattr(plan, f"{kind}_{n}") for n in ("t", "idx", "rows"))
        prev, curr, v = (getattr(self, f"{kind}_{n}") for n in ("prev", "curr", "v"))
        h = outs.index_select(1, steps)
        z = v(torch.tanh(rows_of(prev(hext), idx, dim=1) + curr(h)[:, :, None]))[..., 0]
        if not self.use_slot_head:
            return z
        heads = [self.slot_heads[self._slot[k]] for k in getattr(plan, f"{kind}_keys")]
        W = rows_of(torch.cat([u.weight for u in heads] + [h.new_zeros(1, self.hidden)]), rows)
        c = rows_of(torch.cat([u.bias for u in heads] + [h.new_zeros(1)]), rows)
        return z + torch.einsum("bsh,swh->bsw", h, W) + c

    # -- numpy: one child, fast ---------------------------------------------------------
    def changed(self) -> None:
        """Tell the sampler the weights changed. In-place torch ops are noticed through
        tensors' version counters; fused optimisers bypass them, so call this after
        their ``step()``."""
        self._generation += 1

    def _snapshot(self) -> dict[str, Any]:
        if self._params_growth != len(self.growth):   # cache the list: parameters() is slow
            self._params = list(self.parameters())
            self._params_growth = len(self.growth)
        version = (self._generation, *(p._version for p in self._params))
        if self._snap is None or version != self._snap_version:
            self._snap, self._snap_version = snapshot(self), version
        return self._snap

    @torch.no_grad()
    def sample_batch(self, decisions: Sequence[Decision], generator: np.random.Generator,
                     n: int, cond: int | Sequence[int] | np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``n`` children at once (see :mod:`search.sampler`): choices ``(n, T)``,
        per-decision log-probabilities ``(n, T)`` and path entropies ``(n,)``; ``cond``
        conditions them (one index, or one per child; see :meth:`evaluate`).

        ``generator`` (a ``numpy.random.Generator``) is the only source of randomness,
        so its state fixes the samples; ``n = 1`` draws exactly what :meth:`sample` does.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if decisions is not self._ensured:
            decisions = tuple(decisions)
            self.ensure(decisions)
            self._ensured = decisions
        cidx = self._conditions(cond, n)
        return sample_batch(self._snapshot(), decisions, self.layers, generator, n, cidx)

    def sample(self, decisions: Sequence[Decision], generator: np.random.Generator,
               per_step: bool = False) -> tuple[tuple[int, ...], Any, float]:
        """Sample one choice vector: ``(choices, log_prob, entropy)`` (floats, no grad;
        with ``per_step`` the log-probability is an array, one entry per decision)."""
        choices, logps, ent = self.sample_batch(decisions, generator, 1)
        lp = logps[0] if per_step else math.fsum(logps[0].tolist())
        return tuple(choices[0].tolist()), lp, float(ent[0])

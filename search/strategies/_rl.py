"""Shared machinery of the controller-based strategies (REINFORCE, PPO).

``ask`` samples children from the controller with the space's *current* decisions
(``space.decisions(children_seen)``; ``children_seen`` counts children asked, so
NAS-RL's "+2 layers every 1,600 sampled children" is literal). Each asked child is
remembered as pending with its decisions and the per-decision log-probabilities it was
sampled with. ``tell`` matches trials to pending children by their choice vector (the
same vector asked twice is matched twice), buffers ``(decisions, choices, old
log-probs, reward, target, accuracy)`` and runs one update per ``batch`` buffered rewards. Failed
trials (no reward) are dropped unless ``failed_reward`` gives them one; trials this
strategy did not ask are counted in ``ignored`` and logged.

Repeats (``novel``): a sample whose choice vector was already asked is drawn again, up to
``novel`` times per child, so the search budget is not spent re-scoring a known
architecture. A redrawn sample is still an on-policy sample: when that architecture's
reward is already known it goes into the batch with that reward (the update sees every
sample, as if the evaluator had answered from its cache); when it is still pending or
failed without a reward it is dropped. After ``novel`` redraws the repeat is returned.
``novel = 0`` is the papers' plain sampling.

Determinism: sampling draws only from ``self.gen`` (a NumPy generator seeded with
``seed``) and initial weights come from per-parameter seeded generators, so the global
torch RNG plays no part; ``state_dict`` holds the generator state, weights and their
growth history, Adam's state, the baselines, pending, buffered and known children.

Baseline: an exponential moving average of previous rewards,
``b ← decay·b + (1 − decay)·R`` after every reward, kept **per target latency** T
(``trial.target_ms``): with ``--targets`` the loop spreads children over several T, and
the same architecture's reward ``ACC × (LAT/T)^w`` differs by T, so one shared baseline
would credit or blame an architecture for the target it happened to be scored at. With
one target this is the papers' single baseline. The advantage of a batch uses each
target's baseline from *before* that batch (so ``b`` never depends on the actions it
scores); a target's first batch, with no previous reward, uses its own mean.

Unconstrained share (``unconstrained``, default 0): every child's advantage becomes
``(1 − u)·(R − b_T) + u·(ACC − b_∞)``, where ``ACC − b_∞`` is the child's advantage
under MnasNet's hard reward with no latency bound (T = ∞: accuracy alone), with its own
baseline (kept under the key ``inf``). The controller is one policy for every target, so
with hard targets nothing rewards a child slower than the largest target however
accurate; a hypervolume (a front) also counts those. ``u`` is the weight of that open
end of the front; the rewards the loop records are untouched (the mix is only what the
controller learns from). Failed children with a ``failed_reward`` get that reward for
both terms. Measured on the nb201 table's validation columns (PPO's hard-reward setting;
Galaxy S7 targets 11/16/21 ms, FPGA 1.95/2.47/3.21 ms; seeds 100–119), it did not pay:
u = 0.1 moved the hypervolume ratio by < 0.001, u ≥ 0.2 lowered it (S7, 200 children:
0.9635 → 0.9615 at 0.2, 0.9588 at 0.35, 0.9539 at 0.5), and even u = 1 (accuracy
alone) added only 0.005 of hypervolume above the largest target while losing 0.02 below
the smallest — the controller is one policy for every target, so the pull toward
accuracy moves every target's children. Off by default; no benchmark row uses it.

Target-conditioned policy (``conditional``, default False): with several targets the
loop scores each child at one of them, and the hard reward of one architecture differs
by target, so an unconditioned policy learns the average of conflicting signals. With
``conditional=True`` the strategy picks each child's target itself — round-robin over
the loop's targets (:meth:`Strategy.set_targets`) by its own child counter — says so in
the candidate's meta (``target_ms``, which the loop honours) and samples it from the
controller conditioned on that target (a learned embedding per target: the LSTM's first
input, and added to every later input, :class:`Controller`); updates re-evaluate every
child under the same condition.
A redrawn repeat (``novel``) whose known reward was scored at another target is
dropped. Without targets (no loop) every child has condition 0 and no ``target_ms``.
``open_end=True`` adds one more condition to the round-robin: accuracy alone (MnasNet's
reward at T = ∞, its own baseline under the key ``inf``), whose children the loop
records at the largest target — the part of the front above the largest target, which
no hard target asks for; as its own condition it no longer pulls the targets' children
(``unconstrained`` mixes it into every child's advantage instead). Measured on the
nb201 table (see ``ppo``): conditioning gained at 100 children on the validation columns
but not at 200 nor on the benchmark's column; ``open_end`` lowered the fronts. Off in
every benchmark row.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mnas.decisions import Decision
from mnas.spaces.base import SearchSpace
from mnas.trial import Trial
from search.base import Candidate, Strategy
from search.controller import Controller

log = logging.getLogger(__name__)

# decisions, choices, per-decision log-probs when sampled, reward, target latency (ms),
# accuracy (the unconstrained objective; None in records of old checkpoints), condition
# (index into the targets; None: unconditioned)
Record = tuple[tuple[Decision, ...], tuple[int, ...], np.ndarray, float, float | None,
               float | None, int | None]


def parse_failed_reward(value: float | int | str | None) -> float | None:
    """``None``/``"none"``/``""`` → skip failed trials; anything else → that reward."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"failed_reward must be a number or 'none', got {value!r}") from e
    if not math.isfinite(out):
        raise ValueError(f"failed_reward must be finite, got {value!r}")
    return out


class ControllerStrategy(Strategy):
    """Base of the RL strategies; subclasses implement :meth:`_update`.

    Subclasses declare every option with a typed default in their own ``__init__`` (the
    CLI types ``--opt key=value`` from those defaults) and pass them all here.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, *, hidden: int, layers: int,
                 lr: float, init_range: float, baseline_decay: float, batch: int,
                 entropy_weight: float, failed_reward: float | int | str | None,
                 slot_head: bool, novel: int = 0, unconstrained: float = 0.0,
                 conditional: bool = False, open_end: bool = False, **extra: Any) -> None:
        super().__init__(space, seed)
        for name, flag in (("conditional", conditional), ("open_end", open_end)):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if open_end and not conditional:
            raise ValueError("open_end=True needs conditional=True (the open end is one more "
                             "condition of the policy)")
        if not (math.isfinite(unconstrained) and 0.0 <= unconstrained <= 1.0):
            raise ValueError(f"unconstrained must be a weight in [0, 1] (0: the reward "
                             f"alone, 1: accuracy alone), got {unconstrained}")
        if not 0 <= novel <= 10_000:   # a saturated space would redraw each child that often
            raise ValueError(f"novel must be in [0, 10,000] redraws, got {novel}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        if not 0 < lr < math.inf:   # an infinite step turns the controller's weights NaN
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if not 0 <= entropy_weight < math.inf:
            raise ValueError(f"entropy_weight must be a finite number >= 0, got "
                             f"{entropy_weight}")
        self.options: dict[str, Any] = {
            "hidden": int(hidden), "layers": int(layers), "lr": float(lr),
            "init_range": float(init_range), "baseline_decay": float(baseline_decay),
            "batch": int(batch), "entropy_weight": float(entropy_weight),
            "failed_reward": parse_failed_reward(failed_reward), "slot_head": bool(slot_head),
            "novel": int(novel), "unconstrained": float(unconstrained),
            "conditional": bool(conditional), "open_end": bool(open_end), **extra}
        self.lr, self.batch = float(lr), int(batch)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.failed_reward = self.options["failed_reward"]
        self.novel = int(novel)
        self.unconstrained = float(unconstrained)
        self.conditional, self.open_end = bool(conditional), bool(open_end)
        self.controller = Controller(hidden, layers, init_range, seed, slot_head=slot_head)
        # fused: one kernel for all the small per-decision tensors (5x faster on CPU)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr,
                                          fused=True)
        self.controller.new_params_hook = self._add_params
        self.gen = np.random.default_rng(seed)
        self.baselines: dict[float | None, float] = {}
        # every choice vector told so far → (reward or None, target, accuracy or None)
        self.known: dict[tuple[int, ...],
                         tuple[float | None, float | None, float | None]] = {}
        self.redrawn = 0
        self.pending: dict[tuple[int, ...],
                           list[tuple[tuple[Decision, ...], np.ndarray, int | None]]] = {}
        self.buffer: list[Record] = []
        self.updates = 0
        self.ignored = 0
        self._decisions_cache: tuple[Decision, ...] | None = None
        # children drawn ahead from the current policy, per condition (see _sample)
        self._queue: dict[int | None, list[tuple[tuple[int, ...], np.ndarray]]] = {}
        self._queue_ds: tuple[Decision, ...] | None = None
        self._queue_updates = 0
        self.controller.ensure(self._decisions(0))

    def _add_params(self, params: list[torch.nn.Parameter]) -> None:
        self.optimizer.add_param_group({"params": params})

    def _decisions(self, seen: int) -> tuple[Decision, ...]:
        ds = tuple(self.space.decisions(seen))
        # keep one tuple object while the space's answer is unchanged (the controller
        # skips its parameter check for a list it has just seen)
        if ds != self._decisions_cache:
            self._decisions_cache = ds
        return self._decisions_cache

    # -- ask / tell ------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = []
        for _ in range(n):
            ds = self._decisions(self.children_seen)
            cond = self._condition()
            for redraw in range(self.novel + 1):
                choices, logp = self._sample(ds, cond)
                if redraw == self.novel or (choices not in self.known
                                            and choices not in self.pending):
                    break
                self.redrawn += 1
                reward, target, acc = self.known.get(choices, (None, None, None))
                if reward is not None and self._open(cond):     # learns accuracy alone
                    reward, target = acc, math.inf
                elif cond is not None and self.targets and target != self.targets[cond]:
                    reward = None           # known at another target: no reward at this one
                if reward is not None:      # known: an on-policy sample, free of budget
                    self.buffer.append((ds, choices, logp, reward, target, acc, cond))
                    self._flush()
            self.pending.setdefault(choices, []).append((ds, logp, cond))
            self.children_seen += 1
            meta: dict[str, Any] = {"log_prob": float(logp.sum())}
            if cond is not None and self.targets:
                # the open end's children are recorded at the largest target
                meta["target_ms"] = max(self.targets) if self._open(cond) else self.targets[cond]
            out.append(self.candidate(choices, **meta))
        return out

    def _condition(self) -> int | None:
        """The next child's condition: its target's index, round-robin (None: off)."""
        if not self.conditional:
            return None
        n = len(self.targets) + self.open_end if self.targets else 1
        return self.children_seen % n

    def _open(self, cond: int | None) -> bool:
        """Whether condition ``cond`` is the open end (accuracy alone, T = ∞)."""
        return self.open_end and bool(self.targets) and cond == len(self.targets)

    def _sample(self, ds: tuple[Decision, ...], cond: int | None = None
                ) -> tuple[tuple[int, ...], np.ndarray]:
        """One child of the current policy: ``(choices, per-decision log-probs)``.

        Children are drawn in one NumPy pass for as many as the next update still needs
        (:meth:`Controller.sample_batch`: the per-step work is shared, so a batch costs
        little more than one child) and handed out one at a time. An update or a new
        decision list drops what is left, so every child comes from the weights current
        when it is asked, exactly as if drawn then. Conditioned children have a queue per
        condition (each drawn for its share of the next update)."""
        if self._queue_updates != self.updates or not (
                ds is self._queue_ds or ds == self._queue_ds):
            self._queue = {}
            self._queue_ds, self._queue_updates = ds, self.updates
        queue = self._queue.get(cond)
        if not queue:
            waiting = sum(len(v) for v in self.pending.values())
            k = max(1, self.batch - len(self.buffer) - waiting)
            if cond is not None:
                k = -(-k // max(1, len(self.targets) + self.open_end))
            if k > 1 and self.space.decisions(self.children_seen + k - 1) != ds:
                k = 1                   # the list grows within these k: one at a time
            choices, logps, _ = self.controller.sample_batch(ds, self.gen, k, cond)
            queue = self._queue[cond] = list(zip(map(tuple, choices.tolist()), logps,
                                                 strict=True))
        return queue.pop(0)

    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            key = tuple(int(c) for c in t.choices)
            recs = self.pending.get(key)
            if not recs:
                self.ignored += 1
                log.warning("%s: trial %s was not asked by this strategy (or told twice); "
                            "ignored", self.name, t.number)
                continue
            ds, logp, cond = recs.pop(0)
            if not recs:
                del self.pending[key]
            reward = t.reward if t.ok and t.reward is not None else None
            if reward is not None and not math.isfinite(reward):
                reward = None
            acc = t.accuracy if reward is not None else None
            if reward is None:
                reward = self.failed_reward
            if acc is None or not math.isfinite(acc):
                acc = reward                # a failed child: failed_reward (or skipped)
            target = t.target_ms
            self.known.setdefault(key, (None if reward is None else float(reward), target,
                                        None if acc is None else float(acc)))
            if reward is not None and self._open(cond):
                reward, target = acc, math.inf     # the open end learns accuracy alone
            if reward is None:
                continue
            self.buffer.append((ds, key, logp, float(reward), target, float(acc), cond))
        self._flush()

    def _flush(self) -> None:
        while len(self.buffer) >= self.batch:
            batch, self.buffer = self.buffer[: self.batch], self.buffer[self.batch:]
            self._learn(batch)

    def _learn(self, batch: list[Record]) -> None:
        rewards = np.array([r[3] for r in batch])
        targets = [r[4] for r in batch]
        u = self.unconstrained
        if u:   # accuracy alone is the reward at T = ∞ (old records: their reward)
            rewards = np.concatenate([rewards, [r[3] if r[5] is None else r[5]
                                                for r in batch]])
            targets = targets + [math.inf] * len(batch)
        b = dict(self.baselines)
        for t in set(targets) - b.keys():   # a target's first batch: its own mean
            b[t] = float(np.mean([r for r, v in zip(rewards, targets, strict=True) if v == t]))
        adv = rewards - np.array([b[t] for t in targets])
        if u:
            adv = (1.0 - u) * adv[:len(batch)] + u * adv[len(batch):]
        self._update(batch, torch.tensor(adv, dtype=torch.float32))
        for r, t in zip(rewards, targets, strict=True):
            b[t] = self.baseline_decay * b[t] + (1.0 - self.baseline_decay) * float(r)
        self.baselines = b
        self.updates += 1

    @property
    def baseline(self) -> float | None:
        """The baseline when every reward so far had one target (else None); the
        unconstrained share's own baseline (key ``inf``) is not a target's."""
        per_target = [v for k, v in self.baselines.items() if k != math.inf]
        return per_target[0] if len(per_target) == 1 else None

    def _update(self, batch: list[Record], adv: torch.Tensor) -> None:
        raise NotImplementedError

    def _evaluate(self, batch: list[Record], per_step: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of the batch under the current policy, in batch
        order, each under the condition it was sampled with; children sampled from
        different decision lists are evaluated per list (per-step log-probs are then
        zero-padded to the longest list)."""
        def conds(rows: list[Record]) -> list[int] | None:
            return None if rows[0][6] is None else [r[6] for r in rows]

        groups: dict[tuple[Decision, ...], list[int]] = {}
        for i, (ds, *_rest) in enumerate(batch):
            groups.setdefault(ds, []).append(i)
        if len(groups) == 1:
            return self.controller.evaluate(batch[0][0], [c for _, c, *_ in batch],
                                            per_step=per_step, cond=conds(batch))
        logp: list[torch.Tensor] = [torch.zeros(())] * len(batch)
        ent: list[torch.Tensor] = [torch.zeros(())] * len(batch)
        for ds, idx in groups.items():
            lp, en = self.controller.evaluate(ds, [batch[i][1] for i in idx],
                                              per_step=per_step,
                                              cond=conds([batch[i] for i in idx]))
            for j, i in enumerate(idx):
                logp[i], ent[i] = lp[j], en[j]
        if per_step:
            return torch.nn.utils.rnn.pad_sequence(logp, batch_first=True), torch.stack(ent)
        return torch.stack(logp), torch.stack(ent)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.controller.changed()       # fused Adam leaves version counters alone

    # -- introspection and checkpoints ---------------------------------------------------
    def probabilities(self, decisions: Sequence[Decision] | None = None,
                      cond: int | None = None) -> list[np.ndarray]:
        """Per-decision marginal choice frequencies of 200 samples (for reports/tests),
        under condition ``cond`` (conditional strategies: default 0); uses its own
        generator, so the strategy's random stream is untouched."""
        ds = tuple(decisions) if decisions is not None else self._decisions(self.children_seen)
        if cond is None and self.conditional:
            cond = 0
        choices, _, _ = self.controller.sample_batch(ds, np.random.default_rng(12345), 200,
                                                     cond)
        return [np.bincount(col, minlength=d.size) / 200
                for d, col in zip(ds, choices.T, strict=True)]

    def first_learning(self) -> tuple[int, str] | None:
        return self.batch, "batch"

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.options}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "config": self.config(),
                "gen": copy.deepcopy(self.gen.bit_generator.state),
                "controller": self.controller.checkpoint(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "baselines": dict(self.baselines),
                "known": dict(self.known),
                "redrawn": self.redrawn,
                "pending": {k: list(v) for k, v in self.pending.items()},
                "buffer": list(self.buffer),
                "targets": self.targets,
                "queue": ({k: list(v) for k, v in self._queue.items()}, self._queue_ds,
                          self._queue_updates),
                "updates": self.updates,
                "ignored": self.ignored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        for k in ("hidden", "layers", "slot_head", "conditional", "open_end"):
            if saved.get(k, False if k in ("conditional", "open_end") else None) \
                    != self.options[k]:
                raise ValueError(f"checkpoint has {k}={saved.get(k)}, this strategy "
                                 f"{k}={self.options[k]}: build it with the same options")
        saved_targets = tuple(state.get("targets", ()))
        if self.conditional and saved_targets and self.targets and \
                saved_targets != self.targets:
            raise ValueError(f"checkpoint's policy is conditioned on targets "
                             f"{list(saved_targets)} ms, this search has {list(self.targets)}")
        super().load_state_dict(state)
        self.gen.bit_generator.state = copy.deepcopy(state["gen"])
        self.controller.load_checkpoint(state["controller"])
        self.controller.changed()
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the options given now win
            group["lr"] = self.lr
        # checkpoints written before per-target baselines and redraws had a single
        # "baseline" of unknown target: each target then restarts from its own mean
        self.baselines = dict(state.get("baselines", {}))
        # older records: (reward, target) known, 4/5-field buffer records (no accuracy)
        self.known = {k: (*v, None)[:3] for k, v in state.get("known", {}).items()}
        self.redrawn = state.get("redrawn", 0)
        # older records: no condition (and buffer records without accuracy)
        self.pending = {k: [(*r, None)[:3] for r in v] for k, v in state["pending"].items()}
        self.buffer = [(*r, None, None, None)[:7] for r in state["buffer"]]
        queue, self._queue_ds, self._queue_updates = state.get("queue", ([], None, 0))
        self._queue = {k: list(v) for k, v in queue.items()} if isinstance(queue, dict) \
            else {None: list(queue)}
        self.updates = state["updates"]
        self.ignored = state["ignored"]

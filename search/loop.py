"""The search loop: ask → score → record → tell, checkpointed after every child.

The loop owns no I/O beyond its ledger and checkpoint file; the CLI wires run folders,
reports and progress bars around it through ``callbacks``.

Resume invariant: the checkpoint is written (strategy state + the candidates asked but
not yet told, each with a ``slot``) *before* any of those candidates is opened in the
ledger, and again after each child is told. On restart a pending slot that the ledger
already finished is told from the ledger (never re-scored); a slot left RUNNING is
scored under its existing trial number; a slot never opened is opened. So a search killed
at any instant loses and repeats nothing.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mnas.reward import Reward
from mnas.trial import Trial
from search import safe_pickle
from search.base import Strategy
from search.executor import Executor
from search.ledger import Ledger, to_trial

CHECKPOINT_VERSION = 1


class ChildScorer:
    """Scores one child: params/MACs at deployment size, accuracy, latency, reward.

    Any exception becomes a failed trial whose reason names the stage; the search goes on.
    Architectures already scored in this run are not scored again (their result is
    reused and the trial's meta says ``duplicate_of``).
    """

    def __init__(self, space: Any, accuracy: Callable[[Any, Any], float],
                 latency: Callable[[Any, Any], Any], rewards: Sequence[Reward],
                 count_stats: bool = True) -> None:
        if not rewards:
            raise ValueError("at least one reward (target) is needed")
        self.space = space
        self.accuracy = accuracy
        self.latency = latency
        self.rewards = list(rewards)
        self.count_stats = count_stats
        self.seen: dict[str, Trial] = {}

    @property
    def targets(self) -> list[float]:
        """The rewards' target latencies (ms), in order."""
        return [r.target_ms for r in self.rewards]

    def reward_for(self, number: int, meta: dict[str, Any] | None = None) -> Reward:
        """The reward of the target the strategy chose (``meta["target_ms"]``); without
        one, children are spread across targets round-robin by trial number."""
        chosen = (meta or {}).get("target_ms")
        if chosen is None:
            return self.rewards[number % len(self.rewards)]
        for r in self.rewards:
            if r.target_ms == chosen:
                return r
        raise ValueError(f"target_ms {chosen!r} is not one of the configured targets "
                         f"{self.targets}")

    def remember(self, trial: Trial) -> None:
        if trial.ok:
            self.seen.setdefault(trial.arch, trial)

    def __call__(self, number: int, choices: tuple[int, ...], arch_str: str,
                 meta: dict[str, Any] | None = None) -> Trial:
        """Score one child here: :meth:`prepare`, train, :meth:`finish`."""
        trial, arch = self.prepare(number, choices, arch_str, meta)
        if arch is None:
            return trial
        try:
            acc, seconds = train_child(self.accuracy, self.space, arch)
        except Exception as e:  # noqa: BLE001 — a failing child is a failed trial
            return self.finish(trial, None, 0.0, e)
        return self.finish(trial, acc, seconds)

    def prepare(self, number: int, choices: tuple[int, ...], arch_str: str,
                meta: dict[str, Any] | None = None, measure: bool = True
                ) -> tuple[Trial, Any]:
        """Everything but training: the trial with its target, size and (unless
        ``measure`` is False: :meth:`measure` later) latency, and the architecture to
        train — ``None`` when the trial is already final (failed, or a child scored
        before, whose result it reuses)."""
        try:
            reward = self.reward_for(number, meta)
        except (TypeError, ValueError) as e:    # the strategy's choice, not the child's
            return Trial(number=number, arch=arch_str, choices=tuple(choices),
                         meta=dict(meta or {}), state="failed",
                         reason=f"target: {type(e).__name__}: {e}"[:500]), None
        trial = Trial(number=number, arch=arch_str, choices=tuple(choices),
                      target_ms=reward.target_ms, meta=dict(meta or {}))
        prev = self.seen.get(arch_str)
        if prev is not None:
            trial.accuracy, trial.latency_ms = prev.accuracy, prev.latency_ms
            trial.params, trial.macs, trial.measurement = prev.params, prev.macs, prev.measurement
            trial.reward = reward(prev.accuracy, prev.latency_ms)
            trial.meta["duplicate_of"] = prev.number
            return trial, None
        stage = "decode"
        try:
            arch = self.space.decode(arch_str)
            if self.count_stats:
                stage = "build"
                from mnas.counting import arch_stats

                stats = arch_stats(self.space, arch, num_classes=self.space.deploy_classes,
                                   resolution=self.space.deploy_resolution)
                trial.params, trial.macs = int(stats["params"]), int(stats["macs"])
        except Exception as e:  # noqa: BLE001 — a failing child is a failed trial
            return _failed(trial, stage, e), None
        if measure and not self.measure(trial, arch):
            return trial, None
        return trial, arch

    @property
    def concurrency(self) -> int:
        """Children whose latency may be measured at once (a farm pool's size; else 1)."""
        return max(1, int(getattr(self.latency, "concurrency", 1)))

    def measure(self, trial: Trial, arch: Any) -> bool:
        """The prepared ``trial``'s latency; False (the trial failed) if it has none.
        A device that cannot be reached at all stops the search instead
        (:class:`devices.base.DeviceUnreachable`: every later child would fail the same
        way); the child is not told, so a resumed search scores it."""
        from devices.base import DeviceUnreachable

        try:
            t0 = time.perf_counter()
            m = self.latency(self.space, arch)
            trial.measure_seconds = time.perf_counter() - t0
            trial.measurement = _summary(m)
            trial.latency_ms = float(m.median_ms)
            if not (math.isfinite(trial.latency_ms) and trial.latency_ms > 0):
                raise RuntimeError(f"latency {trial.latency_ms} ms is not a positive number")
        except DeviceUnreachable:
            raise
        except Exception as e:  # noqa: BLE001 — a failing child is a failed trial
            _failed(trial, "latency", e)
            return False
        return True

    def finish(self, trial: Trial, accuracy: float | None, seconds: float,
               error: BaseException | None = None) -> Trial:
        """The prepared ``trial`` with its training's outcome: accuracy and reward, or
        failed with the reason."""
        trial.train_seconds = seconds
        stage = "accuracy"
        try:
            if error is not None:
                raise error
            acc = float(accuracy)  # type: ignore[arg-type]
            if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
                raise RuntimeError(f"accuracy {acc} is not in [0, 1]")
            trial.accuracy = acc
            stage = "reward"
            trial.reward = self.reward_for(trial.number, trial.meta)(acc, trial.latency_ms)
        except Exception as e:  # noqa: BLE001 — a failing child is a failed trial
            return _failed(trial, stage, e)
        return trial


def train_child(accuracy: Callable[[Any, Any], float], space: Any, arch: Any
                ) -> tuple[float, float]:
    """One child's training (in this process or a worker's): accuracy, seconds."""
    t0 = time.perf_counter()
    acc = float(accuracy(space, arch))
    return acc, time.perf_counter() - t0


def _failed(trial: Trial, stage: str, e: BaseException) -> Trial:
    trial.state = "failed"
    trial.reward = None
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    trial.reason = f"{stage}: {type(e).__name__}: {msg}"[:500]
    return trial


def _summary(m: Any) -> dict[str, Any]:
    """The measurement record without the bulky raw samples (kept in the latency cache)."""
    d = m.to_dict() if hasattr(m, "to_dict") else dict(m)
    samples = d.pop("samples_ms", None)
    if samples is not None:
        d["n_samples"] = len(samples)
    return d


class SearchLoop:
    """Runs a strategy against a scorer until ``budget`` children are finished."""

    def __init__(self, space: Any, strategy: Strategy, scorer: ChildScorer,
                 ledger: Ledger | None = None, budget: int = 10, batch: int = 1,
                 checkpoint: str | Path | None = None,
                 callbacks: Sequence[Callable[[Trial], None]] = (),
                 executor: Executor | None = None, overlap: bool = False) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 child, got {budget}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.space = space
        self.strategy = strategy
        self.scorer = scorer
        self.ledger = ledger if ledger is not None else Ledger(None)
        self.budget = budget
        self.batch = batch
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.callbacks = list(callbacks)
        #: trains a batch's children together (None: each child in turn, here)
        self.executor = executor
        #: measure latencies while the batch trains (a device other than this host)
        self.overlap = overlap
        self.batch_seq = 0
        self.pending: list[dict[str, Any]] = []
        #: children told to the strategy (the ledger recorded each before it was told)
        self.told = 0
        strategy.set_targets(scorer.targets)
        self._restore()

    # -- checkpoint --------------------------------------------------------------
    def _restore(self) -> None:
        if self.checkpoint is None:
            return
        if not self.checkpoint.exists():
            # children without the strategy that asked them: the next asks would land in
            # their slots (batch numbers start again) and be answered with their results
            n = self.ledger.finished_count()
            if n:
                raise ValueError(f"{self.checkpoint.name} is missing beside a study of "
                                 f"{n} children: the strategy's state is lost and the run "
                                 "cannot be resumed (`mnas front` still reports it; --force "
                                 "starts over)")
            return
        # the run folder may come from elsewhere: rebuild data, run none of the file's code
        try:
            with open(self.checkpoint, "rb") as f:
                ck = safe_pickle.load(f)
        except pickle.UnpicklingError as e:
            raise ValueError(f"{self.checkpoint} is not a strategy checkpoint mnas reads "
                             f"({e}); refused, none of its code ran") from None
        except (EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError,
                KeyError, struct.error) as e:   # how a pickle reader meets junk bytes
            raise ValueError(f"{self.checkpoint} is truncated or corrupt ({e!r}): the run "
                             "cannot be resumed") from None
        if not isinstance(ck, dict):
            raise ValueError(f"{self.checkpoint}: unsupported checkpoint version")
        if ck.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.checkpoint}: unsupported checkpoint version")
        self.strategy.load_state_dict(ck["strategy"])
        self.batch_seq = ck["batch_seq"]
        self.pending = list(ck["pending"])
        self.told = int(ck.get("told", 0))      # absent: a checkpoint from before the count
        n = self.ledger.finished_count()
        if n < self.told:   # the study was deleted, emptied or swapped
            raise ValueError(f"the study holds {n} finished children but {self.checkpoint.name} "
                             f"was saved after {self.told}: its children are lost or it is "
                             "another run's; restore the run's study.db, or --force starts over")

    def _save(self) -> None:
        if self.checkpoint is None:
            return
        ck = {"version": CHECKPOINT_VERSION, "strategy": self.strategy.state_dict(),
              "batch_seq": self.batch_seq, "pending": self.pending, "told": self.told}
        tmp = self.checkpoint.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(ck, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint)

    # -- the loop ----------------------------------------------------------------
    def run(self) -> list[Trial]:
        TS = self.ledger._optuna.trial.TrialState
        for t in self.ledger.trials():
            self.scorer.remember(t)
        # Read the ledger once: only slots restored from a checkpoint can already be in it,
        # and counting in memory keeps a 1,000-child loop linear rather than quadratic.
        slots = self.ledger.by_slot()
        done = self.ledger.finished_count()
        while True:
            if not self.pending:
                if done >= self.budget:
                    break
                cands = self.strategy.ask(min(self.batch, self.budget - done))
                self.batch_seq += 1
                self.pending = [{"slot": f"{self.batch_seq}:{i}", "choices": c.choices,
                                 "arch": c.arch, "meta": dict(c.meta)}
                                for i, c in enumerate(cands)]
                self._save()
            if self.executor is not None:
                done += self._batch(self.executor, slots, TS)
                continue
            while self.pending:
                p = self.pending[0]
                ft = slots.pop(p["slot"], None)
                trial = to_trial(ft, TS) if ft is not None else None
                new = trial is None     # never opened, or left RUNNING by a killed process
                if trial is None:
                    trial = self.scorer(self._number(p, ft), p["choices"], p["arch"], p["meta"])
                done += self._conclude(trial, new)
        return self.ledger.trials()

    def unfinished(self) -> int:
        """Children asked before a resume whose scores the ledger lacks: :meth:`run`
        scores them whatever the budget (a resumed search loses nothing)."""
        TS = self.ledger._optuna.trial.TrialState
        slots = self.ledger.by_slot()
        return sum(1 for p in self.pending if getattr(slots.get(p["slot"]), "state", None)
                   not in (TS.COMPLETE, TS.FAIL, TS.PRUNED))

    def _number(self, p: dict[str, Any], ft: Any) -> int:
        """The trial number of pending slot ``p``: its RUNNING trial's, or a new one."""
        return ft.number if ft is not None else self.ledger.open(
            p["slot"], p["choices"], p["arch"], p["meta"])

    def _conclude(self, trial: Trial, new: bool) -> int:
        """Record (if scored now), tell and checkpoint the first pending slot's trial."""
        if new:
            self.ledger.record(trial)
        self.scorer.remember(trial)
        self.strategy.tell([trial])
        self.told += 1
        self.pending.pop(0)
        self._save()
        for cb in self.callbacks:
            cb(trial)
        return int(new)

    def _measure_all(self, jobs: list[tuple[Trial, Any]]) -> list[bool]:
        """With ``overlap``, the latency of each (prepared trial, arch) — as many at once
        as the device measures (a farm's pool), else in turn; without, nothing to do."""
        if not self.overlap:
            return [True] * len(jobs)
        n = min(self.scorer.concurrency, len(jobs))
        if n <= 1:
            return [self.scorer.measure(t, a) for t, a in jobs]
        with ThreadPoolExecutor(n, thread_name_prefix="measure") as pool:
            return list(pool.map(lambda job: self.scorer.measure(*job), jobs))

    def _batch(self, executor: Executor, slots: dict[str, Any], TS: Any) -> int:
        """The pending batch on the executor: every slot opened, each child's latency
        measured here in turn, and all trained at once — after the measurements, or
        during them with ``overlap``; told and checkpointed in slot order, as one at a
        time would. Returns children scored."""
        trials: list[Trial | int] = []      # a trial, or the number of one scored later
        todo: list[tuple[int, Any]] = []    # (batch index, architecture) to train
        fresh: list[bool] = []
        training: set[str] = set()
        for i, p in enumerate(self.pending):
            ft = slots.pop(p["slot"], None)
            old = to_trial(ft, TS) if ft is not None else None
            fresh.append(old is None)
            if old is not None:
                trials.append(old)
                continue
            number = self._number(p, ft)
            if p["arch"] in training:       # its twin's result answers it, after the twin
                trials.append(number)
                continue
            trial, arch = self.scorer.prepare(number, p["choices"], p["arch"], p["meta"],
                                              measure=not self.overlap)
            trials.append(trial)
            if arch is not None:
                training.add(p["arch"])
                todo.append((i, arch))
        handle = executor.submit(train_child, (self.scorer.accuracy, self.space),
                                 [(arch,) for _, arch in todo])
        measured = self._measure_all([(trials[i], arch) for i, arch in todo])  # type: ignore[misc]
        outcomes = executor.collect(handle)
        for (i, _), ok, (value, err) in zip(todo, measured, outcomes, strict=True):
            if ok:      # a child without a latency stays failed, trained or not
                acc, seconds = value if err is None else (None, 0.0)
                trials[i] = self.scorer.finish(trials[i], acc, seconds, err)  # type: ignore[arg-type]
        scored = 0
        for trial, new in zip(trials, fresh, strict=True):
            p = self.pending[0]
            if isinstance(trial, int):
                trial = self.scorer(trial, p["choices"], p["arch"], p["meta"])
            scored += self._conclude(trial, new)
        return scored

"""Conformance suite: every registered strategy × every space it declares.

Parametrized over ``search.strategy_names()`` and ``mnas.spaces.space_names()``, so a new
strategy or space is covered the moment it registers. Each case drives ask/tell by hand
(no loop, no models): ``nb201`` children are scored from the real NAS-Bench-201 table,
other spaces by a deterministic synthetic accuracy/latency of the choices.

Checked for each pair: ask returns valid candidates for the current decisions; tell
accepts complete and failed trials in any order and interleaved with later asks
(asynchronous workers), including a first batch that failed entirely; the same seed
gives the same proposals; a pickled ``state_dict``, read back by the restricted loader
of ``search.safe_pickle``, resumes with the same next asks as the uninterrupted run; a fixed number of asks/tells terminates.

Strategies that need small settings to be quick register them in ``FAST_OPTIONS``;
spaces get small settings in ``SPACE_OPTIONS`` (``nasrl`` grows every few children so
strategies meet a changing decision list).
"""

from __future__ import annotations

import pickle
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from mnas.decisions import validate_choices
from mnas.evaluate import make_accuracy, make_latency
from mnas.reward import Reward
from mnas.spaces import get_space, space_names
from mnas.trial import Trial
from search import safe_pickle
from search.base import Strategy, get_strategy, strategy_factory, strategy_names

TABLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"

#: small settings for strategies whose defaults are sized for real searches
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "enas": {"resolution": 8, "width_mult": 0.25, "batch_size": 16, "warmup_steps": 0,
             "shared_steps": 1, "controller_steps": 1, "controller_batch": 2, "val_batch": 16,
             "candidates": 2, "rank_examples": 32},
    "evolution": {"population": 6, "sample": 3},
    "optuna:nsga2": {"sampler_options": {"population_size": 6}},
    "optuna:nsga3": {"sampler_options": {"population_size": 6}},
    "optuna:tpe": {"sampler_options": {"n_startup_trials": 5}},
    "pnas": {"initial": 4, "beam": 2, "members": 2, "epochs": 30},
}
#: small settings for spaces (only options the space's constructor takes)
SPACE_OPTIONS: dict[str, dict[str, Any]] = {
    "nasrl": {"start_depth": 3, "grow_every": 7, "max_depth": 5},
    "pnas": {"blocks": 3},  # cells grow 1 -> 3 blocks: prefixes, then full vectors
}
SEED = 7
ROUNDS = 8          # ask/tell rounds per run; ~2 children asked per round
REWARD = Reward(10.0)


def _strategy_class(name: str) -> type[Strategy]:
    factory = strategy_factory(name)
    return getattr(factory, "func", factory)


def _cases() -> list[Any]:
    cases = []
    for sname in strategy_names():
        cls = _strategy_class(sname)
        for space_name in space_names():
            space = get_space(space_name, **SPACE_OPTIONS.get(space_name, {}))
            declared = cls.spaces is None or space_name in cls.spaces
            capable = all(isinstance(space, cap) for cap in cls.requires)
            if declared and capable:
                cases.append(pytest.param(sname, space_name, id=f"{sname}-{space_name}"))
    return cases


CASES = _cases()


class Scorer:
    """Table look-ups for nb201, a deterministic function of the arch string elsewhere."""

    def __init__(self, space_name: str) -> None:
        self.table = space_name == "nb201"
        if self.table:
            self.acc = make_accuracy(f"table:{TABLE}#cifar100_acc")
            self.lat = make_latency(f"table:{TABLE}#raspi4_ms")

    def __call__(self, space: Any, number: int, cand: Any, fail: bool) -> Trial:
        t = Trial(number=number, arch=cand.arch, choices=cand.choices,
                  target_ms=REWARD.target_ms, meta=dict(cand.meta))
        if fail:
            t.state, t.reason = "failed", "synthetic failure"
            return t
        if self.table:
            arch = space.decode(cand.arch)
            acc, lat = self.acc(space, arch), self.lat(space, arch).median_ms
        else:
            h = zlib.crc32(cand.arch.encode())
            acc = 0.05 + 0.9 * (h % 1000) / 1000
            lat = 1.0 + sum(cand.choices) + (h >> 10) % 7
        t.accuracy, t.latency_ms, t.reward = acc, lat, REWARD(acc, lat)
        return t


def drive(strategy: Strategy, space: Any, scorer: Scorer, start: int = 0,
          outstanding: list | None = None, number: int = 0,
          checkpoint_at: int | None = None) -> dict[str, Any]:
    """Rounds ``start``..ROUNDS-1: ask 1–3 children, then tell a shuffled subset of all
    outstanding ones (every 3rd child fails; all of round 0 fails); the last round
    tells the rest.

    The schedule depends only on the round number, so two runs that see the same
    proposals make the same calls. Returns the proposals and, if asked, the pickled
    state after round ``checkpoint_at`` with what was outstanding then."""
    out: dict[str, Any] = {"log": []}
    outstanding = list(outstanding or [])
    for r in range(start, ROUNDS):
        rr = random.Random(r)  # schedule randomness, not the strategy's
        k = rr.randint(1, 3)
        before = strategy.children_seen
        cands = strategy.ask(k)
        assert len(cands) == k, f"ask({k}) returned {len(cands)} candidates"
        for c in cands:
            check_candidate(space, c, before, strategy.children_seen)
            outstanding.append((number, c))
            number += 1
        out["log"].append([c.choices for c in cands])
        rr.shuffle(outstanding)
        n_tell = rr.randint(0, len(outstanding)) if r < ROUNDS - 1 else len(outstanding)
        told, outstanding = outstanding[:n_tell], outstanding[n_tell:]
        strategy.tell([scorer(space, num, c, fail=r == 0 or num % 3 == 0) for num, c in told])
        if r == checkpoint_at:
            out["state"] = pickle.dumps((strategy.state_dict(), outstanding, number))
    return out


def check_candidate(space: Any, cand: Any, seen_before: int, seen_after: int) -> None:
    arch = space.from_choices(cand.choices)
    assert arch.encode() == cand.arch
    assert space.decode(cand.arch) == arch
    fits = []
    for seen in sorted({seen_before, seen_after}):
        ds = space.decisions(seen)
        if space.prefix_choices:     # a shorter vector must be a prefix of the decisions
            ds = ds[:max(1, len(cand.choices))]
        try:
            validate_choices(ds, cand.choices)
            fits.append(seen)
        except ValueError:
            pass
    assert fits, (f"{cand.choices} fits the decisions neither at children_seen="
                  f"{seen_before} nor {seen_after}")


def make(name: str, space_name: str, seed: int = SEED) -> tuple[Strategy, Any]:
    space = get_space(space_name, **SPACE_OPTIONS.get(space_name, {}))
    return get_strategy(name, space, seed=seed, **FAST_OPTIONS.get(name, {})), space


@pytest.mark.parametrize("name, space_name", CASES)
def test_ask_tell_contract_and_termination(name, space_name):
    strategy, space = make(name, space_name)
    assert strategy.ask(0) == []
    scorer = Scorer(space_name)
    out = drive(strategy, space, scorer)
    asked = sum(len(b) for b in out["log"])
    assert asked >= ROUNDS
    # a strategy that has seen only failures must still propose valid children
    strategy, space = make(name, space_name, seed=SEED + 1)
    for i in range(3):
        cands = strategy.ask(2)
        for c in cands:
            check_candidate(space, c, 0, strategy.children_seen)
        strategy.tell([scorer(space, 2 * i + j, c, fail=True) for j, c in enumerate(cands)])


@pytest.mark.parametrize("name, space_name", CASES)
def test_deterministic_and_resumes_from_pickled_state(name, space_name):
    mid = ROUNDS // 2
    a, space = make(name, space_name)
    run_a = drive(a, space, Scorer(space_name), checkpoint_at=mid)
    b, _ = make(name, space_name)
    b.preflight()       # the CLI's check before a new run writes anything
    run_b = drive(b, space, Scorer(space_name))
    assert run_a["log"] == run_b["log"], "same seed, same tells (preflight or not), " \
        "different proposals"

    # the restricted loader `mnas search --resume` reads strategy.ckpt with
    state, outstanding, number = safe_pickle.loads(run_a["state"])
    c, _ = make(name, space_name)
    c.load_state_dict(state)
    # finish what was outstanding at the checkpoint exactly as run A would have next
    resumed = drive(c, space, Scorer(space_name), mid + 1, outstanding, number)
    assert resumed["log"] == run_a["log"][mid + 1:], "resumed run diverged from the uninterrupted one"


def test_every_strategy_has_a_case():
    """No registered strategy silently escapes the suite (e.g. by declaring no space)."""
    covered = {p.values[0] for p in CASES}
    assert covered == set(strategy_names())
    assert {p.values[1] for p in CASES} >= {"nb201"}


def _learning_cases() -> list[Any]:
    """nb201 cases of the strategies that say when they first learn (first_learning)."""
    out = []
    for case in CASES:
        name, space_name = case.values
        if space_name == "nb201" and make(name, space_name)[0].first_learning() is not None:
            out.append(case)
    return out


class Inverted(Scorer):
    """The table with accuracy turned upside down: any learning proposes differently."""

    def __call__(self, space: Any, number: int, cand: Any, fail: bool) -> Trial:
        t = super().__call__(space, number, cand, fail)
        t.accuracy = 1.0 - t.accuracy
        t.reward = REWARD(t.accuracy, t.latency_ms)
        return t


@pytest.mark.parametrize("name, space_name", _learning_cases())
def test_first_learning_is_when_told_results_first_shape_a_proposal(name, space_name):
    """What ``mnas search`` tells a user whose budget ends before the strategy learns:
    the first ``n`` proposals are the same whatever the rewards, later ones are not."""
    runs = []
    for scorer in (Scorer(space_name), Inverted(space_name)):
        space = get_space(space_name)
        # the RL controllers' paper steps move sampling too little to see in a few children
        fast = {"lr": 0.1, "batch": 4} if name in ("ppo", "reinforce") else {}
        strategy = get_strategy(name, space, seed=SEED, **{**FAST_OPTIONS.get(name, {}), **fast})
        n, option = strategy.first_learning()
        assert option.split("=")[0] in strategy.config(), f"{option} is not an option"
        log = []
        for i in range(3 * n):
            cand, = strategy.ask(1)
            log.append(cand.choices)
            strategy.tell([scorer(space, i, cand, fail=False)])
        runs.append(log)
    assert runs[0][:n] == runs[1][:n], "proposals before first_learning() depend on rewards"
    assert runs[0][n:] != runs[1][n:], "rewards never shaped a proposal after first_learning()"

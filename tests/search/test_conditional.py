"""Target-conditioned children: the loop scores a child at the target its strategy chose
(``meta["target_ms"]``), and the RL strategies' ``conditional`` option samples each child
from the controller conditioned on its target."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mnas.reward import Reward
from mnas.trial import Trial
from search.base import get_strategy
from search.ledger import Ledger
from search.loop import ChildScorer, SearchLoop
from search.strategies.ppo import PPO
from tests.search.test_rl_strategies import MIXED, TinySpace, cat
from tests.search.toyloop import ToySpace, ToyStrategy, toy_accuracy, toy_latency

TARGETS = (3.0, 5.0, 8.0)


def _scorer(space, targets=TARGETS) -> ChildScorer:
    return ChildScorer(space, toy_accuracy(), toy_latency, [Reward.hard(t) for t in targets],
                       count_stats=False)


class Chooser(ToyStrategy):
    """The toy strategy, naming a target for each child from a fixed cycle."""

    def __init__(self, space, seed=0, cycle=(8.0, None, 3.0)):
        super().__init__(space, seed)
        self.cycle, self.asked = cycle, 0

    def ask(self, n=1):
        out = []
        for c in super().ask(n):
            t = self.cycle[self.asked % len(self.cycle)]
            self.asked += 1
            out.append(c if t is None else self.candidate(c.choices, target_ms=t))
        return out


# -- the loop hook ----------------------------------------------------------------------------
def test_loop_tells_the_strategy_its_targets_and_honours_a_chosen_target():
    space = ToySpace()
    st = Chooser(space, seed=4)
    trials = SearchLoop(space, st, _scorer(space), budget=30).run()
    assert st.targets == TARGETS
    acc, n_chosen, n_rr = toy_accuracy(), 0, 0
    for t in trials:
        chosen = t.meta.get("target_ms")
        expected = chosen if chosen is not None else TARGETS[t.number % len(TARGETS)]
        assert t.target_ms == expected
        n_chosen += chosen is not None
        n_rr += chosen is None
        if t.ok:
            arch = space.decode(t.arch)
            assert t.reward == Reward.hard(expected)(acc(space, arch), t.latency_ms)
    assert n_chosen == 20 and n_rr == 10


def test_a_duplicate_is_rescored_at_its_own_target():
    space = ToySpace()
    scorer = _scorer(space)
    first = scorer(0, (0, 0, 3, 0), "v0-v0-v3-v0", {"target_ms": 8.0})
    scorer.remember(first)
    again = scorer(1, (0, 0, 3, 0), "v0-v0-v3-v0", {"target_ms": 3.0})
    assert first.latency_ms == again.latency_ms == 4.0
    assert again.meta["duplicate_of"] == 0 and again.target_ms == 3.0
    assert first.reward == pytest.approx(4 / 13) and again.reward == pytest.approx(3 / 13)


@pytest.mark.parametrize("bad", [4.0, "5", float("nan")])
def test_a_target_that_is_not_configured_fails_that_trial_only(bad):
    space = ToySpace()
    st = Chooser(space, seed=2, cycle=(bad, None))
    trials = SearchLoop(space, st, _scorer(space), budget=10).run()
    failed = [t for t in trials if t.meta.get("target_ms") is not None]
    assert len(failed) == 5 and len(trials) == 10
    for t in failed:
        assert t.state == "failed" and t.reward is None
        assert t.reason.startswith("target: ValueError:")
        assert "not one of the configured targets [3.0, 5.0, 8.0]" in t.reason
    assert any(t.ok for t in trials if t.meta.get("target_ms") is None)


# -- the conditional controller ------------------------------------------------------------------
def _conditional(algo="ppo", seed=0, space=None, **opts):
    st = get_strategy(algo, space or TinySpace(MIXED), seed=seed, hidden=16,
                      conditional=True, **opts)
    st.set_targets(TARGETS)
    return st


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_children_are_assigned_targets_round_robin_and_scored_logprobs_match(algo):
    st = _conditional(algo, batch=7, lr=0.05)
    cands = st.ask(7)
    assert [c.meta["target_ms"] for c in cands] == [3.0, 5.0, 8.0] * 2 + [3.0]
    # the pending records carry the condition; the controller re-evaluates each child,
    # under that condition, to the log-probabilities it was sampled with
    for c in cands:
        for ds, logp, cond in st.pending[c.choices]:
            assert TARGETS[cond] == c.meta["target_ms"]
            lp, _ = st.controller.evaluate(ds, c.choices, per_step=True, cond=cond)
            np.testing.assert_allclose(lp.detach().numpy(), logp, atol=1e-5)
            assert c.meta["log_prob"] == pytest.approx(float(logp.sum()), abs=1e-9)
    # ... and the update's batch evaluation uses the same conditioning
    st.tell([Trial(i, c.arch, c.choices, reward=0.5, target_ms=c.meta["target_ms"])
             for i, c in enumerate(cands[:6])])
    assert len(st.buffer) == 6 and st.updates == 0
    lp, _ = st._evaluate(st.buffer, per_step=True)
    np.testing.assert_allclose(lp.detach().numpy(), np.stack([r[2] for r in st.buffer]),
                               atol=1e-5)


def test_unconditioned_children_name_no_target():
    plain = get_strategy("ppo", TinySpace(MIXED), seed=0, hidden=16)
    plain.set_targets(TARGETS)
    assert all("target_ms" not in c.meta for c in plain.ask(4))
    alone = get_strategy("ppo", TinySpace(MIXED), seed=0, hidden=16, conditional=True)
    assert all("target_ms" not in c.meta for c in alone.ask(4))     # no loop: no targets
    assert {r[2] for recs in alone.pending.values() for r in recs} == {0}


def _drive(st, children, reward_of, ask=3, number=0):
    """Ask/tell as the loop does: each child scored at the target it names."""
    history = []
    while number < children:
        cands = st.ask(ask)
        trials = []
        for c in cands:
            t = c.meta["target_ms"]
            trials.append(Trial(number, c.arch, c.choices, reward=reward_of(t, c.choices),
                                target_ms=t))
            history.append((c.choices, t))
            number += 1
        st.tell(trials)
    return history


THREE = TinySpace((cat("a", 4), cat("b", 4), cat("c", 4)))


def _targeted_reward(t, choices):
    """Each target its own optimum: (0, 1, 2) at 3 ms, (3, 2, 1) at 5 and 8 ms."""
    best = (0, 1, 2) if t == 3.0 else (3, 2, 1)
    return sum(c == b for c, b in zip(choices, best, strict=True)) / 3


def test_determinism_under_a_seed():
    def hist(seed):
        return _drive(_conditional(seed=seed, space=THREE, batch=4, lr=0.05), 40,
                      _targeted_reward)
    assert hist(5) == hist(5)
    assert hist(5) != hist(6)


def test_the_policy_learns_an_optimum_per_target():
    """One policy, two optima: the shared weights cannot give both unless each child sees
    its target (every decision conflicts between the two)."""
    st = _conditional(space=THREE, seed=1, batch=6, lr=0.03, epochs=2, entropy_weight=0.03)
    _drive(st, 300, _targeted_reward)
    first = [int(np.argmax(p)) for p in st.probabilities(cond=0)]
    second = [int(np.argmax(p)) for p in st.probabilities(cond=1)]
    assert first == [0, 1, 2] and second == [3, 2, 1]
    assert min(p.max() for p in st.probabilities(cond=0)) > 0.5


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_resume_reproduces_the_next_asks(algo):
    a = _conditional(algo, seed=3, space=THREE, batch=5, lr=0.05)
    cands = a.ask(4)
    a.tell([Trial(i, c.arch, c.choices, reward=_targeted_reward(c.meta["target_ms"],
                                                                c.choices),
                  target_ms=c.meta["target_ms"]) for i, c in enumerate(cands[:3])])
    carry = cands[3]                    # pending at the cut
    blob = pickle.dumps(a.state_dict())

    def later(st):
        t = carry.meta["target_ms"]
        st.tell([Trial(3, carry.arch, carry.choices, reward=_targeted_reward(t, carry.choices),
                       target_ms=t)])
        return _drive(st, 30, _targeted_reward, number=4)

    ref = later(a)
    b = _conditional(algo, seed=3, space=THREE, batch=5, lr=0.05)
    b.load_state_dict(pickle.loads(blob))
    assert later(b) == ref and a.updates == b.updates > 2
    for x, y in zip(a.controller.parameters(), b.controller.parameters(), strict=True):
        assert torch.equal(x, y)


class _Stop(Exception):
    pass


def _loop(out: Path | None, budget: int, stop_after: int = 0) -> SearchLoop:
    space = TinySpace((cat("a", 4), cat("b", 4), cat("c", 4), cat("d", 4)))
    st = get_strategy("ppo", space, seed=9, hidden=16, batch=4, lr=0.05, conditional=True)
    scorer = ChildScorer(space, lambda s, a: (1 + sum(a.values)) / 13.0, toy_latency,
                         [Reward.hard(t) for t in TARGETS], count_stats=False)
    seen = []

    def stop(trial):
        seen.append(trial)
        if stop_after and len(seen) == stop_after:
            raise _Stop
    return SearchLoop(space, st, scorer, ledger=Ledger(out / "study.db" if out else None,
                                                       study_name="cond"),
                      budget=budget, batch=5, checkpoint=out / "ck" if out else None,
                      callbacks=[stop])


def test_loop_resume_with_chosen_targets_is_exact(tmp_path):
    def history(trials):
        return [(t.number, t.choices, t.target_ms, t.reward, t.meta.get("target_ms"))
                for t in trials]

    ref = history(_loop(None, 40).run())
    assert {h[2] for h in ref} == set(TARGETS) and all(h[2] == h[4] for h in ref)
    with pytest.raises(_Stop):          # stopped mid-batch: children pending in the checkpoint
        _loop(tmp_path, 40, stop_after=17).run()
    assert history(_loop(tmp_path, 40).run()) == ref


# -- options --------------------------------------------------------------------------------------
def test_option_is_validated_configured_and_checked_on_resume():
    with pytest.raises(TypeError, match="conditional must be True or False"):
        get_strategy("ppo", TinySpace(MIXED), conditional="yes")
    st = _conditional(batch=4)
    assert st.config()["conditional"] is True
    assert PPO(TinySpace(MIXED)).config()["conditional"] is False
    st.ask(2)
    plain = get_strategy("ppo", TinySpace(MIXED), seed=0, hidden=16, batch=4)
    with pytest.raises(ValueError, match="conditional"):
        plain.load_state_dict(st.state_dict())
    other = get_strategy("ppo", TinySpace(MIXED), seed=0, hidden=16, batch=4, conditional=True)
    other.set_targets((3.0, 5.0))
    with pytest.raises(ValueError, match=r"conditioned on targets \[3.0, 5.0, 8.0\]"):
        other.load_state_dict(st.state_dict())


def test_open_end_is_one_more_condition_that_learns_accuracy_alone():
    with pytest.raises(ValueError, match="open_end=True needs conditional=True"):
        get_strategy("ppo", TinySpace(MIXED), open_end=True)
    st = _conditional(space=THREE, batch=9, open_end=True)
    cands = st.ask(8)
    nth = [sum(d.choices == c.choices for d in cands[:i]) for i, c in enumerate(cands)]
    conds = [st.pending[c.choices][k][2] for c, k in zip(cands, nth, strict=True)]
    assert conds == [0, 1, 2, 3] * 2
    # the open end's children are recorded at the largest target
    assert [c.meta["target_ms"] for c in cands] == [3.0, 5.0, 8.0, 8.0] * 2
    st.tell([Trial(i, c.arch, c.choices, reward=0.1 * i, accuracy=0.5 + 0.01 * i,
                   target_ms=c.meta["target_ms"]) for i, c in enumerate(cands)])
    for (_, _, _, reward, target, acc, cond), i in zip(st.buffer, range(8), strict=True):
        if cond == 3:
            assert (reward, target) == (acc, math.inf) == (0.5 + 0.01 * i, math.inf)
        else:
            assert (reward, target) == (pytest.approx(0.1 * i), TARGETS[cond])
    for i in (3, 7):                        # known as recorded: the loop's reward and T
        if nth[i] == 0:
            assert st.known[cands[i].choices][:2] == (pytest.approx(0.1 * i), 8.0)

"""The RL strategies' ``unconstrained`` share: every child's advantage mixes its target's
reward with accuracy alone (MnasNet's reward at T = ∞), each with its own baseline."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import pytest
import torch

from mnas.spaces import get_space
from mnas.trial import Trial
from search.base import get_strategy
from tests.search.test_rl_strategies import MIXED, TinySpace

ALGOS = ["reinforce", "ppo"]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_unconstrained_must_be_a_weight(algo, bad):
    with pytest.raises(ValueError, match=r"unconstrained must be a weight in \[0, 1\]"):
        get_strategy(algo, TinySpace(MIXED), unconstrained=bad)


def _params_after(algo: str, told: Sequence[Sequence[tuple[float, float]]], **opts
                  ) -> list[torch.Tensor]:
    """Parameters after one update per batch in ``told`` ((reward, accuracy) per child)."""
    st = get_strategy(algo, TinySpace(MIXED), seed=3, lr=0.01, batch=4, **opts)
    n = 0
    for batch in told:
        cands = st.ask(len(batch))
        st.tell([Trial(n + i, c.arch, c.choices, reward=r, accuracy=a, target_ms=10.0)
                 for i, (c, (r, a)) in enumerate(zip(cands, batch, strict=True))])
        n += len(batch)
    assert st.updates == len(told)
    return [p.detach().clone() for p in st.controller.parameters()]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


ACCS = [[0.61, 0.70, 0.20, 0.66], [0.55, 0.72, 0.68, 0.30], [0.64, 0.41, 0.69, 0.71]]
REWARDS = [[0.61, 0.07, 0.20, 0.33], [0.55, 0.18, 0.68, 0.30], [0.16, 0.41, 0.69, 0.12]]


@pytest.mark.parametrize("algo", ALGOS)
def test_unconstrained_one_learns_from_accuracy_alone(algo):
    """u = 1: the reward (latency-penalised) no longer matters, only accuracy; u = 0 (the
    default): accuracy no longer matters, only the reward."""
    def told(rs, accs):
        return [list(zip(r, a, strict=True)) for r, a in zip(rs, accs, strict=True)]

    other = [[1.0 - r for r in rs] for rs in REWARDS]
    assert _max_diff(_params_after(algo, told(REWARDS, ACCS), unconstrained=1.0),
                     _params_after(algo, told(other, ACCS), unconstrained=1.0)) < 1e-6
    assert _max_diff(_params_after(algo, told(REWARDS, ACCS)),
                     _params_after(algo, told(other, ACCS))) > 1e-3
    flipped = [[1.0 - a for a in accs] for accs in ACCS]
    assert _max_diff(_params_after(algo, told(REWARDS, ACCS)),
                     _params_after(algo, told(REWARDS, flipped))) < 1e-6


@pytest.mark.parametrize("algo", ALGOS)
def test_unconstrained_mix_is_the_weighted_advantage(algo):
    """With one target the baselines are linear in the rewards, so a share u learns exactly
    as the plain strategy told the reward (1 − u)·R + u·ACC, batch after batch."""
    u = 0.3
    mixed = [[((1 - u) * r + u * a, a) for r, a in zip(rs, accs, strict=True)]
             for rs, accs in zip(REWARDS, ACCS, strict=True)]
    plain = [list(zip(rs, accs, strict=True)) for rs, accs in zip(REWARDS, ACCS, strict=True)]
    assert _max_diff(_params_after(algo, plain, unconstrained=u),
                     _params_after(algo, mixed)) < 1e-5


def test_unconstrained_keeps_its_own_baseline():
    st = get_strategy("reinforce", TinySpace(MIXED), seed=0, batch=2, unconstrained=0.5,
                      baseline_decay=0.5)
    cands = st.ask(2)
    st.tell([Trial(i, c.arch, c.choices, reward=r, accuracy=a, target_ms=5.0)
             for i, (c, r, a) in enumerate(zip(cands, (0.1, 0.3), (0.6, 0.8), strict=True))])
    # first batch: each baseline starts at its batch mean, then one EMA step per reward
    assert st.baselines[5.0] == pytest.approx(0.25 * 0.2 + 0.25 * 0.1 + 0.5 * 0.3)
    assert st.baselines[math.inf] == pytest.approx(0.25 * 0.7 + 0.25 * 0.6 + 0.5 * 0.8)
    assert st.baseline == pytest.approx(st.baselines[5.0])  # still the target's baseline


@pytest.mark.parametrize("algo", ALGOS)
def test_unconstrained_resumes_exactly_through_the_conformance_driver(algo):
    """The conformance suite's schedule (asynchronous tells, failures, a pickled checkpoint
    mid-run) with the share set, redraws on, and updates happening."""
    from tests.search.test_conformance import ROUNDS, Scorer, drive

    space = get_space("nb201")
    opts = {"batch": 2, "lr": 0.05, "unconstrained": 0.4, "novel": 3}
    a = get_strategy(algo, space, seed=5, **opts)
    run_a = drive(a, space, Scorer("nb201"), checkpoint_at=ROUNDS // 2)
    assert a.updates > 0 and math.inf in a.baselines
    state, outstanding, number = pickle.loads(run_a["state"])
    assert state["config"]["unconstrained"] == 0.4
    b = get_strategy(algo, space, seed=5, **opts)
    b.load_state_dict(state)
    resumed = drive(b, space, Scorer("nb201"), ROUNDS // 2 + 1, outstanding, number)
    assert resumed["log"] == run_a["log"][ROUNDS // 2 + 1:]
    assert b.updates == a.updates and b.baselines == a.baselines


def test_checkpoint_without_accuracies_resumes_with_a_share():
    """Checkpoints written before the share kept (reward, target) per known child and
    5-field buffer records: they load, and their children count their reward for both
    terms."""
    space = get_space("nb201")
    a = get_strategy("ppo", space, seed=1, batch=2, novel=2)
    cands = a.ask(3)
    a.tell([Trial(0, cands[0].arch, cands[0].choices, reward=0.5, accuracy=0.6)])
    state = a.state_dict()
    state["known"] = {k: v[:2] for k, v in state["known"].items()}
    state["buffer"] = [r[:5] for r in state["buffer"]]
    b = get_strategy("ppo", space, seed=1, batch=2, novel=2, unconstrained=0.5)
    b.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert all(len(v) == 3 for v in b.known.values())
    b.tell([Trial(1, cands[1].arch, cands[1].choices, reward=0.4, accuracy=0.7)])
    assert b.updates == 1 and b.buffer == []
    # the old record's accuracy is its reward (0.5), the new one's is 0.7: the first
    # batch's mean 0.6, then one EMA step (decay 0.95) per record
    b_inf = 0.95 * (0.95 * 0.6 + 0.05 * 0.5) + 0.05 * 0.7
    assert b.baselines[math.inf] == pytest.approx(b_inf)

"""PPO's optional advantage normalisation (``adv_norm``) and KL early stop (``target_kl``)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest
import torch

from mnas.spaces import get_space
from mnas.trial import Trial
from search.base import get_strategy
from search.strategies.ppo import PPO
from tests.search.test_rl_strategies import MIXED, TinySpace


# -- PPO's advantage normalisation and KL early stop ------------------------------------------
def test_ppo_bad_adv_norm_and_target_kl():
    with pytest.raises(ValueError, match="adv_norm must be one of none, std, batch"):
        PPO(TinySpace(MIXED), adv_norm="zscore")
    with pytest.raises(ValueError, match="target_kl"):
        PPO(TinySpace(MIXED), target_kl=-0.1)


def _ppo_after_one_update(rewards: Sequence[float], **opts) -> list[torch.Tensor]:
    st = PPO(TinySpace(MIXED), seed=3, lr=0.01, batch=4, **opts)
    cands = st.ask(4)
    st.tell([Trial(i, c.arch, c.choices, reward=r)
             for i, (c, r) in enumerate(zip(cands, rewards, strict=True))])
    assert st.updates == 1
    return [p.detach().clone() for p in st.controller.parameters()]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def test_ppo_batch_normalised_advantages_ignore_the_reward_scale():
    """adv_norm='batch': an affine change of the rewards (another target's scale, the hard
    constraint's penalty) leaves the update unchanged up to float rounding (which Adam's
    first, sign-like step amplifies to ~1e-4); raw advantages move it by ~lr."""
    rewards = [0.61, 0.64, 0.58, 0.66]
    scaled = [10.0 * r + 3.0 for r in rewards]
    kw = {"entropy_weight": 0.03}
    assert _max_diff(_ppo_after_one_update(rewards, adv_norm="batch", **kw),
                     _ppo_after_one_update(scaled, adv_norm="batch", **kw)) < 2e-3
    assert _max_diff(_ppo_after_one_update(rewards, **kw),
                     _ppo_after_one_update(scaled, **kw)) > 2e-2
    # 'std' rescales the advantages too (a first batch's baseline is its own mean, so a
    # shift of every reward is absorbed by the baseline here)
    assert _max_diff(_ppo_after_one_update(rewards, adv_norm="std", **kw),
                     _ppo_after_one_update([10.0 * r for r in rewards], adv_norm="std",
                                           **kw)) < 2e-3


def test_ppo_target_kl_stops_the_epochs_early():
    """A large step on one batch: with a small target_kl the epochs stop after the first,
    so the policy moves less than with all ten epochs."""
    moved, stops = {}, {}
    for kl in (0.0, 1e-3):
        st = PPO(TinySpace(MIXED), seed=0, lr=0.05, batch=2, epochs=10, target_kl=kl)
        a, b = st.ask(2)
        with torch.no_grad():
            before = st.controller.evaluate(MIXED, [a.choices, b.choices])[0]
        st.tell([Trial(0, a.arch, a.choices, reward=1.0),
                 Trial(1, b.arch, b.choices, reward=0.0)])
        with torch.no_grad():
            after = st.controller.evaluate(MIXED, [a.choices, b.choices])[0]
        moved[kl] = float((after - before)[0] - (after - before)[1])
        stops[kl] = st.kl_stops
    assert stops == {0.0: 0, 1e-3: 1}
    assert 0 < moved[1e-3] < moved[0.0] / 2, moved


def test_ppo_new_options_resume_exactly_through_the_conformance_driver():
    """The conformance suite's schedule (asynchronous tells, failures, a pickled
    checkpoint mid-run) with adv_norm and target_kl set and a batch small enough that
    updates (and early stops) happen."""
    from tests.search.test_conformance import ROUNDS, Scorer, drive

    space = get_space("nb201")
    opts = {"batch": 2, "lr": 0.05, "adv_norm": "batch", "target_kl": 1e-3, "novel": 3}
    a = get_strategy("ppo", space, seed=5, **opts)
    run_a = drive(a, space, Scorer("nb201"), checkpoint_at=ROUNDS // 2)
    assert a.updates > 0 and a.kl_stops > 0
    state, outstanding, number = pickle.loads(run_a["state"])
    assert state["config"]["adv_norm"] == "batch" and state["config"]["target_kl"] == 1e-3
    b = get_strategy("ppo", space, seed=5, **opts)
    b.load_state_dict(state)
    resumed = drive(b, space, Scorer("nb201"), ROUNDS // 2 + 1, outstanding, number)
    assert resumed["log"] == run_a["log"][ROUNDS // 2 + 1:]
    assert (b.kl_stops, b.updates) == (a.kl_stops, a.updates)

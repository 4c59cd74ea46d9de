"""random / reinforce / ppo behind ask/tell: paper defaults, learning on synthetic rewards
over the real spaces, exact resume, and tell's bookkeeping."""

from __future__ import annotations

import inspect
import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mnas.cli.options import typed_options
from mnas.decisions import Categorical, Decision, Pointer, Subset
from mnas.spaces import get_space, space_names
from mnas.spaces.base import SearchSpace
from mnas.trial import Trial
from search.base import STRATEGIES, get_strategy, strategy_names
from search.strategies.ppo import PPO
from search.strategies.reinforce import Reinforce


@dataclass(frozen=True)
class TinyArch:
    values: tuple[int, ...]

    def encode(self) -> str:
        return ".".join(map(str, self.values))


class TinySpace(SearchSpace):
    """Decisions given at construction; ``grow`` more appended every ``every`` children."""

    name = "tiny"

    def __init__(self, decisions: Sequence[Decision], grow: Sequence[Decision] = (),
                 every: int = 0) -> None:
        self.base, self.grow, self.every = tuple(decisions), tuple(grow), every

    def decisions(self, children_seen: int = 0) -> tuple[Decision, ...]:
        k = children_seen // self.every if self.every else 0
        return self.base + self.grow[: k * 2]

    def from_choices(self, choices):
        return TinyArch(tuple(int(c) for c in choices))

    def to_choices(self, arch):
        return arch.values

    def decode(self, text):
        return TinyArch(tuple(int(t) for t in text.split(".")))

    def build(self, arch, num_classes=None, width_mult=1.0, in_channels=3):
        raise NotImplementedError


def cat(name: str, k: int, anchor: bool = False) -> Categorical:
    return Categorical(name, tuple(range(k)), anchor=anchor)


MIXED = (cat("h1", 1, True), cat("h0", 1, True), Pointer("b0.in", 2), cat("b0.op", 4, True),
         Pointer("b1.in", 3), cat("b1.op", 4, True), Subset("out", 4), cat("w", 3))
GROWING = TinySpace((cat("L0.f", 3, True), Subset("L1.in", 1), cat("L1.f", 3, True)),
                    grow=(Subset("L2.in", 2), cat("L2.f", 3, True),
                          Subset("L3.in", 3), cat("L3.f", 3, True)), every=12)


def make_reward(ds: Sequence[Decision], seed: int = 1):
    """Hidden optimum; reward = mean over decisions of the match (bits matched for a
    Subset). Its maximum, 1, is reached only at the optimum."""
    rng = random.Random(seed)
    best = [rng.randrange(d.size) for d in ds]

    def reward(choices) -> float:
        score = 0.0
        for d, c, b in zip(ds, choices, best, strict=False):
            if isinstance(d, Subset):
                score += (d.n - bin((c ^ b) & ((1 << d.n) - 1)).count("1")) / max(d.n, 1)
            else:
                score += float(c == b)
        return score / len(ds)

    return best, reward


def run(strategy, reward, children: int, ask: int | None = None, number: int = 0):
    """Ask/tell loop; returns the rewards of the last update's batch of children."""
    ask = ask or getattr(strategy, "batch", 8)
    rewards: list[float] = []
    while number < children:
        cands = strategy.ask(ask)
        trials = [Trial(number=number + i, arch=c.arch, choices=c.choices,
                        reward=reward(c.choices)) for i, c in enumerate(cands)]
        strategy.tell(trials)
        rewards += [t.reward for t in trials]
        number += len(cands)
    return rewards


def policy_mean_reward(strategy, reward, n: int = 200) -> float:
    gen = np.random.default_rng(99)
    ds = strategy.space.decisions(strategy.children_seen)
    return float(np.mean([reward(strategy.controller.sample(ds, gen)[0]) for _ in range(n)]))


# -- registry, defaults and options -------------------------------------------------------
def test_registered():
    assert {"random", "reinforce", "ppo"} <= set(strategy_names())


def test_defaults_are_the_papers():
    space = get_space("mnasnet")
    r = get_strategy("reinforce", space)
    assert (r.controller.lstm.hidden_size, r.controller.lstm.num_layers) == (35, 2)
    assert r.optimizer.param_groups[0]["lr"] == pytest.approx(6e-4)
    assert isinstance(r.optimizer, torch.optim.Adam)
    assert max(float(p.abs().max()) for p in r.controller.parameters()) <= 0.08
    assert r.batch == 8 and r.baseline_decay == 0.95
    p = get_strategy("ppo", space)
    assert (p.controller.lstm.hidden_size, p.controller.lstm.num_layers) == (100, 1)
    assert p.optimizer.param_groups[0]["lr"] == pytest.approx(3.5e-4)
    assert (p.clip, p.entropy_weight, p.baseline_decay, p.batch) == (0.2, 1e-5, 0.95, 20)


@pytest.mark.parametrize("name", ["random", "reinforce", "ppo"])
def test_config_lists_every_option(name):
    cls = STRATEGIES[name]
    st = cls(TinySpace(MIXED), seed=3)
    params = [p for p in inspect.signature(cls).parameters if p != "space"]
    cfg = st.config()
    assert cfg["name"] == name and set(params) <= set(cfg)
    for p in params:  # every option has a typed default the CLI can convert to
        default = inspect.signature(cls).parameters[p].default
        assert default is None or isinstance(default, int | float | str | bool), p


def test_cli_strings_become_typed_options():
    opts = typed_options(PPO, {"lr": "0.01", "batch": "5", "epochs": "2",
                               "failed_reward": "0"}, "strategy")
    st = PPO(TinySpace(MIXED), **opts)
    assert (st.lr, st.batch, st.epochs, st.failed_reward) == (0.01, 5, 2, 0.0)
    st = Reinforce(TinySpace(MIXED), **typed_options(Reinforce, {"failed_reward": "none"},
                                                     "strategy"))
    assert st.failed_reward is None
    with pytest.raises(ValueError, match="unknown strategy option 'hiden'"):
        typed_options(Reinforce, {"hiden": "3"}, "strategy")


@pytest.mark.parametrize("kwargs, match", [
    ({"batch": 0}, "batch"), ({"lr": 0.0}, "lr"), ({"baseline_decay": 1.0}, "baseline_decay"),
    ({"failed_reward": "bad"}, "failed_reward"), ({"hidden": 0}, "hidden")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reinforce(TinySpace(MIXED), **kwargs)
    with pytest.raises(ValueError, match="clip"):
        PPO(TinySpace(MIXED), clip=0.0)
    with pytest.raises(ValueError, match="epochs"):
        PPO(TinySpace(MIXED), epochs=0)


# -- random ---------------------------------------------------------------------------------
def test_random_is_uniform_and_follows_growth():
    st = get_strategy("random", GROWING, seed=0)
    cands = st.ask(12)
    assert {len(c.choices) for c in cands} == {3}
    assert len(st.ask(1)[0].choices) == 5            # 12 children seen: the space grew
    st = get_strategy("random", TinySpace(MIXED), seed=1)
    counts = np.zeros(4)
    for c in st.ask(2000):
        counts[c.choices[3]] += 1                    # b0.op, 4 options
    assert np.abs(counts / 2000 - 0.25).max() < 0.04
    bits = np.array([[(c >> j) & 1 for j in range(4)] for c in
                     (x.choices[6] for x in st.ask(2000))])
    assert np.abs(bits.mean(0) - 0.5).max() < 0.04


# -- learning -------------------------------------------------------------------------------
# larger learning rates than the papers' (and a small entropy bonus against premature
# commitment) so that a few hundred children suffice
FAST = {"reinforce": {"lr": 0.01, "entropy_weight": 0.003},
        "ppo": {"lr": 0.002, "batch": 10, "entropy_weight": 0.003}}


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_learns_mnasnet_synthetic_optimum(algo):
    space = get_space("mnasnet")
    ds = space.decisions(0)
    best, reward = make_reward(ds)
    st = get_strategy(algo, space, seed=0, **FAST[algo])
    rand = np.mean(run(get_strategy("random", space, seed=0), reward, 200))
    last = run(st, reward, 600)[-st.batch:]
    probs = st.probabilities(ds)
    p_opt = float(np.mean([p[b] for p, b in zip(probs, best, strict=True)]))
    assert p_opt > 0.9, p_opt
    assert np.mean(last) > 0.85 > rand + 0.4


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_learns_pointer_and_subset_decisions(algo):
    space = TinySpace(MIXED)
    best, reward = make_reward(MIXED)
    st = get_strategy(algo, space, seed=0, **FAST[algo])
    run(st, reward, 400)
    assert policy_mean_reward(st, reward) > 0.9
    probs = st.probabilities(MIXED)
    for i in (2, 4, 6):                 # the two pointers and the subset
        assert probs[i][best[i]] > 0.8, (MIXED[i], probs[i])


@pytest.mark.parametrize("space_name", sorted(set(space_names()) & {"nasnet", "nasrl"}))
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_learns_on_anchor_spaces(space_name, algo):
    space = get_space(space_name)
    ds = space.decisions(0)
    best, reward = make_reward(ds)
    st = get_strategy(algo, space, seed=0, **FAST[algo])
    before = policy_mean_reward(st, reward)
    run(st, reward, 500)
    after = policy_mean_reward(st, reward)
    assert after > 0.8 and after > before + 0.3, (before, after)
    probs = st.probabilities(ds)
    anchored = [probs[i][best[i]] for i, d in enumerate(ds)
                if isinstance(d, Pointer) or (isinstance(d, Subset) and d.n <= 3)]
    chance = [1 / d.size for d in ds if isinstance(d, Pointer)
              or (isinstance(d, Subset) and d.n <= 3)]
    assert np.mean(anchored) > np.mean(chance) + 0.3, (np.mean(anchored), np.mean(chance))


@pytest.mark.parametrize("algo, nats", [("reinforce", 1.0), ("ppo", 10.0)])
def test_paper_defaults_learn_too(algo, nats):
    """At the papers' settings the optimum's log-probability rises (slowly for NAS-RL's
    REINFORCE at lr 6e-4, whose paper sampled 12,800 children)."""
    space = get_space("mnasnet")
    ds = space.decisions(0)
    best, reward = make_reward(ds)
    st = get_strategy(algo, space, seed=0)
    with torch.no_grad():
        before = float(st.controller.evaluate(ds, best)[0])
    run(st, reward, 400)
    with torch.no_grad():
        after = float(st.controller.evaluate(ds, best)[0])
    assert after > before + nats, (before, after)


# -- updates --------------------------------------------------------------------------------
def test_update_moves_probability_towards_above_baseline_children():
    space = TinySpace(MIXED)
    for algo in ("reinforce", "ppo"):
        st = get_strategy(algo, space, seed=4, lr=0.01, batch=2)
        a, b = st.ask(2)
        assert a.choices != b.choices
        with torch.no_grad():
            before = st.controller.evaluate(MIXED, [a.choices, b.choices])[0]
        st.tell([Trial(0, a.arch, a.choices, reward=1.0), Trial(1, b.arch, b.choices,
                                                                 reward=0.0)])
        with torch.no_grad():
            after = st.controller.evaluate(MIXED, [a.choices, b.choices])[0]
        assert after[0] > before[0] and after[1] < before[1], algo
        assert st.updates == 1


def test_ppo_clip_limits_the_step():
    """Ten epochs on one batch: with a tight clip the log-odds of the better child over
    the worse one stop growing early; with a huge clip they keep growing."""
    space = TinySpace(MIXED)
    moved = {}
    for clip in (0.02, 10.0):
        st = PPO(space, seed=0, lr=0.003, batch=2, epochs=10, clip=clip)
        a, b = st.ask(2)

        def log_odds():
            with torch.no_grad():
                lp = st.controller.evaluate(MIXED, [a.choices, b.choices])[0]  # noqa: B023
            return float(lp[0] - lp[1])

        before = log_odds()
        st.tell([Trial(0, a.arch, a.choices, reward=1.0), Trial(1, b.arch, b.choices,
                                                                 reward=0.0)])
        moved[clip] = log_odds() - before
    assert 0 < moved[0.02] < moved[10.0] / 4, moved


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_asks_after_an_update_use_the_updated_policy(algo):
    """The fast sampler must see each optimiser step (fused Adam bypasses tensors'
    version counters): the log-prob an ask reports equals the current evaluation."""
    st = get_strategy(algo, TinySpace(MIXED), seed=0, batch=2, lr=0.05)
    for k in range(3):
        cands = st.ask(2)
        st.tell([Trial(2 * k + i, c.arch, c.choices, reward=float(i)) for i, c in
                 enumerate(cands)])
        assert st.updates == k + 1
        (c,) = st.ask(1)
        with torch.no_grad():
            now = float(st.controller.evaluate(MIXED, c.choices)[0])
        assert c.meta["log_prob"] == pytest.approx(now, abs=1e-5)
        st.tell([Trial(99, c.arch, c.choices, state="failed")])


def test_baseline_is_an_ema_of_previous_rewards():
    st = Reinforce(TinySpace(MIXED), seed=0, batch=2, baseline_decay=0.5)
    rewards = [0.2, 0.6, 1.0, 0.0]
    cands = st.ask(4)
    st.tell([Trial(i, c.arch, c.choices, reward=r) for i, (c, r) in
             enumerate(zip(cands[:2], rewards[:2], strict=True))])
    b = 0.4                                 # first batch: its own mean
    for r in rewards[:2]:
        b = 0.5 * b + 0.5 * r
    assert st.baseline == pytest.approx(b)
    st.tell([Trial(i + 2, c.arch, c.choices, reward=r) for i, (c, r) in
             enumerate(zip(cands[2:], rewards[2:], strict=True))])
    for r in rewards[2:]:
        b = 0.5 * b + 0.5 * r
    assert st.baseline == pytest.approx(b)


def test_tell_skips_failed_unknown_and_matches_duplicates():
    space = TinySpace((cat("a", 2),))
    st = Reinforce(space, seed=0, batch=3)
    cands = st.ask(4)                       # only two distinct choice vectors exist
    failed = Trial(0, cands[0].arch, cands[0].choices, state="failed", reason="NaN loss")
    st.tell([failed])
    st.tell([Trial(9, "1", (5,), reward=1.0)])           # never asked
    assert st.ignored == 1 and st.buffer == [] and st.updates == 0
    st.tell([Trial(i, c.arch, c.choices, reward=0.5) for i, c in enumerate(cands[1:])])
    assert st.updates == 1 and st.pending == {}
    st2 = Reinforce(space, seed=0, batch=1, failed_reward=0.0)
    (c,) = st2.ask(1)
    st2.tell([Trial(0, c.arch, c.choices, state="failed", reason="export")])
    assert st2.updates == 1


def test_growing_space_adds_parameters_to_the_optimiser():
    st = PPO(GROWING, seed=0, hidden=16, batch=4)
    n0 = len(st.optimizer.param_groups)
    run(st, make_reward(GROWING.decisions(100))[1], 40, ask=4)
    assert len(st.optimizer.param_groups) == n0 + 2         # grew twice
    ids = {id(p) for g in st.optimizer.param_groups for p in g["params"]}
    assert ids == {id(p) for p in st.controller.parameters()}


# -- resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["random", "reinforce", "ppo"])
def test_resume_reproduces_the_next_asks(algo):
    opts = {} if algo == "random" else {"hidden": 16, "batch": 5, "lr": 0.01}
    _, reward = make_reward(GROWING.decisions(100))

    def steps(st, start, n, carry):
        """Ask 3, tell 2 now and the third one step later (so a child is pending at
        the cut); every fourth step one child fails."""
        out = []
        for k in range(start, start + n):
            cands = st.ask(3)
            out.append([c.choices for c in cands])
            trials = [Trial(3 * k + i, c.arch, c.choices, reward=reward(c.choices))
                      for i, c in enumerate(cands)]
            if k % 4 == 1:
                trials[0] = Trial(3 * k, cands[0].arch, cands[0].choices, state="failed")
            st.tell(carry + trials[:2])
            carry = trials[2:]
        return out, carry

    a = get_strategy(algo, GROWING, seed=7, **opts)
    _, carry = steps(a, 0, 5, [])
    blob = pickle.dumps(a.state_dict())
    later, _ = steps(a, 5, 6, carry)        # crosses updates and a growth of the space
    b = get_strategy(algo, GROWING, seed=7, **opts)
    b.load_state_dict(pickle.loads(blob))
    assert steps(b, 5, 6, carry)[0] == later
    if algo != "random":
        assert a.updates == b.updates > 0
        for x, y in zip(a.controller.parameters(), b.controller.parameters(), strict=True):
            assert torch.equal(x, y)


def test_resume_refuses_a_different_controller():
    a = Reinforce(TinySpace(MIXED), seed=0, hidden=16)
    b = Reinforce(TinySpace(MIXED), seed=0, hidden=8)
    with pytest.raises(ValueError, match="hidden"):
        b.load_state_dict(a.state_dict())


# -- per-target baselines and redraws of repeats ---------------------------------------------
def test_baseline_is_kept_per_target():
    """Children scored at different targets T: each T has its own EMA, so an
    architecture is not credited for the (larger) reward scale of the target it drew."""
    st = Reinforce(TinySpace(MIXED), seed=0, batch=4, baseline_decay=0.5)
    cands = st.ask(4)
    rewards, targets = [0.2, 0.6, 1.0, 0.4], [5.0, 20.0, 5.0, 20.0]
    st.tell([Trial(i, c.arch, c.choices, reward=r, target_ms=t) for i, (c, r, t) in
             enumerate(zip(cands, rewards, targets, strict=True))])
    b5, b20 = 0.6, 0.5                      # first batch of each target: its own mean
    for r in (0.2, 1.0):
        b5 = 0.5 * b5 + 0.5 * r
    for r in (0.6, 0.4):
        b20 = 0.5 * b20 + 0.5 * r
    assert st.baselines == pytest.approx({5.0: b5, 20.0: b20})
    assert st.baseline is None              # no single baseline with two targets


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_novel_redraws_repeats_and_learns_from_known_rewards(algo):
    """With ``novel`` a repeat of a told child is redrawn (bounded) and its known reward
    feeds the update, so the budget goes to new architectures."""
    space = TinySpace((cat("a", 3), cat("b", 2)))          # six architectures
    st = get_strategy(algo, space, seed=0, batch=2, novel=50)
    seen = set()
    for i in range(6):
        (c,) = st.ask(1)
        assert c.choices not in seen        # six distinct before any repeat
        seen.add(c.choices)
        st.tell([Trial(i, c.arch, c.choices, reward=0.1 * (c.choices[0] + c.choices[1]))])
    told = st.updates
    assert st.redrawn > 0 and told > 3      # redrawn repeats went into batches
    (c,) = st.ask(1)                        # nothing new left: the repeat after 50 draws
    assert c.choices in seen and st.updates > told
    plain = get_strategy(algo, space, seed=0, batch=2)
    assert plain.novel == 0 and plain.redrawn == 0


def test_novel_resume_is_exact():
    space = TinySpace((cat("a", 3), cat("b", 3)))
    _, reward = make_reward(space.decisions())
    a = get_strategy("reinforce", space, seed=2, batch=3, lr=0.05, novel=5)
    run(a, reward, 9, ask=1)
    blob = pickle.dumps(a.state_dict())
    later = [c.choices for c in a.ask(5)]
    b = get_strategy("reinforce", space, seed=2, batch=3, lr=0.05, novel=5)
    b.load_state_dict(pickle.loads(blob))
    assert [c.choices for c in b.ask(5)] == later and a.known == b.known


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_checkpoint_from_before_per_target_baselines_still_resumes(algo):
    """A run folder written by the single-baseline version (no ``baselines``/``known``/
    ``queue``, 4-field buffer records) resumes and keeps learning."""
    space = get_space("nb201")
    a = get_strategy(algo, space, seed=1, batch=2)
    cands = a.ask(3)
    a.tell([Trial(number=0, arch=cands[0].arch, choices=cands[0].choices, reward=0.5)])
    state = a.state_dict()
    for key in ("baselines", "known", "redrawn", "queue"):
        del state[key]
    state["baseline"] = 0.5
    state["buffer"] = [r[:4] for r in state["buffer"]]
    b = get_strategy(algo, space, seed=1, batch=2)
    b.load_state_dict(pickle.loads(pickle.dumps(state)))
    before = b.updates
    b.tell([Trial(number=1, arch=cands[1].arch, choices=cands[1].choices, reward=0.4)])
    assert b.updates == before + 1 and b.buffer == []
    assert len(b.ask(2)) == 2

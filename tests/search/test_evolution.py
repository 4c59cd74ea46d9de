"""Regularized evolution: random start, tournament → mutation, aging, failed trials."""

from __future__ import annotations

import pytest

from mnas.spaces import get_space
from mnas.trial import Trial
from search.base import get_strategy


def scored(cand, reward, number=0, ok=True):
    return Trial(number=number, arch=cand.arch, choices=cand.choices,
                 state="complete" if ok else "failed", accuracy=reward if ok else None,
                 latency_ms=1.0 if ok else None, reward=reward if ok else None)


@pytest.fixture
def space():
    return get_space("nb201")


def test_random_start_then_single_edge_mutants_of_the_best(space):
    evo = get_strategy("evolution", space, seed=1, population=4, sample=4)
    first = evo.ask(4)
    assert all(c.meta["origin"] == "random" for c in first)
    best = first[2]
    evo.tell([scored(c, 0.9 if c is best else 0.1, i) for i, c in enumerate(first)])
    children = evo.ask(6)
    for c in children:
        # sample = population: the tournament always picks the best member
        assert c.meta == {"origin": "mutation", "parent": best.arch}
        diff = sum(a != b for a, b in zip(c.choices, best.choices, strict=True))
        assert diff == 1


def test_aging_removes_the_oldest_even_if_best(space):
    evo = get_strategy("evolution", space, seed=2, population=3, sample=3)
    cands = evo.ask(3)
    evo.tell([scored(cands[0], 0.99)] + [scored(c, 0.2) for c in cands[1:]])
    assert evo.ask(1)[0].meta["parent"] == cands[0].arch
    newer = evo.ask(1)[0]
    evo.tell([scored(newer, 0.5)])  # population 3: the 0.99 founder ages out
    assert [m[0] for m in evo.members] == [cands[1].choices, cands[2].choices, newer.choices]
    assert evo.ask(1)[0].meta["parent"] == newer.arch


def test_failed_trials_age_but_are_never_parents(space):
    evo = get_strategy("evolution", space, seed=3, population=3, sample=3)
    cands = evo.ask(3)
    evo.tell([scored(cands[0], 0.4), scored(cands[1], 0.0, ok=False),
              scored(cands[2], 0.0, ok=False)])
    assert len(evo.members) == 3
    for c in evo.ask(5):
        assert c.meta["parent"] == cands[0].arch
    # nothing alive: fall back to random proposals
    evo2 = get_strategy("evolution", space, seed=3, population=2, sample=1)
    cs = evo2.ask(2)
    evo2.tell([scored(c, 0.0, ok=False) for c in cs])
    assert evo2.ask(1)[0].meta["origin"] == "random"


def test_dedupe_avoids_repeats_in_a_small_space():
    space = get_space("nb201")
    evo = get_strategy("evolution", space, seed=0, population=10, sample=3)
    seen = set()
    for i in range(30):
        c = evo.ask(1)[0]
        assert c.choices not in seen
        seen.add(c.choices)
        evo.tell([scored(c, (i * 37 % 11) / 11, i)])


def test_pareto_selection_prefers_the_front(space):
    evo = get_strategy("evolution", space, seed=4, population=3, sample=3, selection="pareto")
    a, b, c = evo.ask(3)
    dominated = Trial(0, b.arch, b.choices, accuracy=0.5, latency_ms=9.0, reward=0.99)
    evo.tell([Trial(0, a.arch, a.choices, accuracy=0.6, latency_ms=5.0, reward=0.1),
              dominated,
              Trial(0, c.arch, c.choices, accuracy=0.7, latency_ms=8.0, reward=0.1)])
    parents = {evo.ask(1)[0].meta["parent"] for _ in range(12)}
    assert parents <= {a.arch, c.arch} and len(parents) == 2


@pytest.mark.parametrize("opts, needle", [
    ({"population": 1}, "population"),
    ({"population": 5, "sample": 6}, r"sample must be an int in \[1, population=5\]"),
    ({"selection": "best"}, "valid: reward, pareto"),
])
def test_bad_options(space, opts, needle):
    with pytest.raises(ValueError, match=needle):
        get_strategy("evolution", space, **opts)


def test_rewards_are_compared_within_one_target(space):
    # a soft reward's scale depends on its target: each target keeps its own parents
    evo = get_strategy("evolution", space, seed=5, population=4, sample=4)
    c = evo.ask(4)
    trials = [scored(x, r) for x, r in zip(c, (0.5, 0.2, 0.99, 0.98), strict=True)]
    for t, target in zip(trials, (5.0, 5.0, 20.0, 20.0), strict=True):
        t.target_ms = target
    evo.tell(trials)
    parents = [evo.ask(1)[0].meta["parent"] for _ in range(6)]
    assert set(parents) == {c[0].arch, c[2].arch}

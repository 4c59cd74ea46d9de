from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from mnas.pareto import dominates, hypervolume, pareto_front
from mnas.reward import Reward

pts = st.lists(st.tuples(st.floats(0, 1), st.floats(0.1, 100)), max_size=40)


@given(pts)
def test_front_is_exactly_the_non_dominated_set(points):
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        if dominated:
            assert i not in front
        else:  # non-dominated: on the front unless an identical earlier copy is
            twin = any(points[j] == p and j in front for j in range(len(points)))
            assert i in front or twin


def _grid_hv(points, ref, n=400):
    """Brute-force area by a fine grid (independent of the sweep)."""
    a0, l1 = ref
    amax = max([a for a, _ in points] + [a0])
    lmin = min([lat for _, lat in points] + [l1])
    cell = 0
    for i, j in itertools.product(range(n), range(n)):
        a = a0 + (amax - a0) * (i + 0.5) / n
        lat = lmin + (l1 - lmin) * (j + 0.5) / n
        if any(pa >= a and pl <= lat for pa, pl in points):
            cell += 1
    return cell * (amax - a0) * (l1 - lmin) / n / n


def test_hypervolume_matches_brute_force():
    rng = random.Random(0)
    for _ in range(5):
        points = [(rng.random(), rng.uniform(1, 10)) for _ in range(8)]
        ref = (0.0, 11.0)
        exact = hypervolume(points, ref)
        assert abs(exact - _grid_hv(points, ref)) / exact < 0.02


def test_hypervolume_simple_cases():
    assert hypervolume([(0.5, 2.0)], (0.0, 4.0)) == 1.0
    # a dominated point adds nothing
    assert hypervolume([(0.5, 2.0), (0.4, 3.0)], (0.0, 4.0)) == 1.0
    assert hypervolume([(0.5, 2.0), (0.8, 3.0)], (0.0, 4.0)) == 0.5 + 0.8
    assert hypervolume([(0.5, 5.0)], (0.0, 4.0)) == 0.0


def test_reward_soft_and_hard():
    soft = Reward(10.0)
    assert soft(0.8, 10.0) == 0.8
    # doubling latency costs ~5% relative accuracy (the paper's calibration)
    assert abs(soft(0.8, 20.0) / 0.8 - 2 ** -0.07) < 1e-12
    assert soft(0.8, 5.0) > 0.8          # faster than target is rewarded under soft
    hard = Reward.hard(10.0)
    assert hard(0.8, 5.0) == 0.8         # no bonus below target
    assert abs(hard(0.8, 20.0) - 0.4) < 1e-12
    assert Reward(10.0, transform="cube")(0.5, 10.0) == 0.125


def test_reward_rejects_bad_input():
    import pytest

    with pytest.raises(ValueError, match="target"):
        Reward(0.0)
    with pytest.raises(ValueError, match="transform"):
        Reward(1.0, transform="square")
    with pytest.raises(ValueError, match="accuracy"):
        Reward(1.0)(1.5, 1.0)

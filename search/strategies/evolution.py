"""``evolution``: regularized (aging) evolution (Real et al., AAAI 2019).

The first ``population`` children are random. After that each child is a mutation of a
tournament winner: sample ``sample`` members of the population, take the best, and
change one decision through the space's ``mutate`` capability (so it works on every
space). Every told trial joins the population and the *oldest* member leaves once it
holds ``population`` trials — aging, not the worst, which is what regularizes. Failed
trials age like any other (they take a slot and push out the oldest) but are never
chosen as parents.

``selection="reward"`` (default, the paper's) compares members by their trial reward.
Rewards are only compared between trials scored against the same target: when the loop
spreads children across several targets (``--targets``), each tournament is held inside
one target's members, the targets taking turns, so every target keeps its own line of
parents (a soft reward's scale depends on its target, so mixing them would be unfair).
``selection="pareto"`` compares them by non-domination rank in the population on
(accuracy ↑, latency ↓), then crowding distance (as NSGA-II does), so the population
spreads along the accuracy/latency front instead of chasing one trade-off; it ignores
the reward, so it also works when children are scored against several targets.

``dedupe`` (default on) retries a mutation (up to ``retries`` times) that would repeat a
child already asked, since a repeated child spends budget and teaches nothing.

Asks are numbered: the ``population`` first asks are random whatever has been told, so
batched asks (``ask(n)`` before any ``tell``) are fine. Everything random flows from
``self.rng``; ``state_dict`` holds it and the population, so a resumed search continues
exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from mnas.pareto import pareto_front
from mnas.spaces.base import Mutable
from mnas.trial import Trial
from search.base import Candidate, Strategy, register_strategy

SELECTIONS = ("reward", "pareto")


#: most redraws of a repeated mutation, per child
MAX_RETRIES = 10_000

@register_strategy
class RegularizedEvolution(Strategy):
    """Aging evolution: population ``population``, tournament size ``sample``."""

    name = "evolution"
    requires = (Mutable,)

    def __init__(self, space: Any, seed: int = 0, population: int = 20, sample: int = 5,
                 selection: str = "reward", dedupe: bool = True, retries: int = 20) -> None:
        super().__init__(space, seed=seed)
        if isinstance(population, bool) or int(population) < 2:
            raise ValueError(f"population must be an int >= 2, got {population!r}")
        if isinstance(sample, bool) or not 1 <= int(sample) <= int(population):
            raise ValueError(f"sample must be an int in [1, population={population}], "
                             f"got {sample!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
        if not 0 <= int(retries) <= MAX_RETRIES:
            raise ValueError(f"retries must be in [0, {MAX_RETRIES:,}] (on a space whose "
                             f"neighbours are all seen, each child would try them all), "
                             f"got {retries!r}")
        self.population = int(population)
        self.sample = int(sample)
        self.selection = selection
        self.dedupe = bool(dedupe)
        self.retries = int(retries)
        #: (choices, reward, accuracy, latency_ms, target_ms); reward None = failed (ages,
        #: never a parent)
        self.members: deque[tuple[Any, ...]]
        self.members = deque()
        self.asked: set[tuple[int, ...]] = set()

    # -- proposing -----------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        if isinstance(n, bool) or int(n) < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        out = []
        for _ in range(int(n)):
            parents = self._alive()
            if self.children_seen < self.population or not parents:
                choices, meta = self._fresh(self._random), {"origin": "random"}
            else:
                parent = self._tournament(parents)
                choices = self._fresh(lambda p=parent[0]: self._mutant(p))
                meta = {"origin": "mutation", "parent": self.space.from_choices(
                    parent[0]).encode()}
            self.asked.add(choices)
            self.children_seen += 1
            out.append(self.candidate(choices, **meta))
        return out

    def _random(self) -> tuple[int, ...]:
        arch = self.space.sample(self.rng, self.children_seen)
        return tuple(self.space.to_choices(arch))

    def _mutant(self, choices: tuple[int, ...]) -> tuple[int, ...]:
        arch = self.space.mutate(self.space.from_choices(choices), self.rng, self.children_seen)
        return tuple(self.space.to_choices(arch))

    def _fresh(self, make: Any) -> tuple[int, ...]:
        choices = make()
        if self.dedupe:
            for _ in range(self.retries):
                if choices not in self.asked:
                    break
                choices = make()
        return choices

    def _alive(self) -> list[tuple[Any, ...]]:
        return [m for m in self.members if m[1] is not None]

    def _tournament(self, alive: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        if self.selection == "reward":
            targets = sorted({m[4] for m in alive}, key=lambda t: (t is None, t or 0.0))
            if len(targets) > 1:  # take turns; compare rewards of one target only
                niche = targets[self.children_seen % len(targets)]
                alive = [m for m in alive if m[4] == niche]
            picks = self.rng.sample(range(len(alive)), min(self.sample, len(alive)))
            return alive[max(picks, key=lambda i: alive[i][1])]
        picks = self.rng.sample(range(len(alive)), min(self.sample, len(alive)))
        rank, crowd = _rank_and_crowding([(m[2], m[3]) for m in alive])
        return alive[min(picks, key=lambda i: (rank[i], -crowd[i]))]

    # -- learning --------------------------------------------------------------------
    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            ok = (t.ok and t.reward is not None and math.isfinite(t.reward)
                  and t.accuracy is not None and t.latency_ms is not None)
            self.members.append((tuple(int(c) for c in t.choices),
                                 float(t.reward) if ok else None,
                                 float(t.accuracy) if ok else None,
                                 float(t.latency_ms) if ok else None,
                                 None if t.target_ms is None else float(t.target_ms)))
            self.asked.add(tuple(int(c) for c in t.choices))
            while len(self.members) > self.population:
                self.members.popleft()  # aging: the oldest leaves, however good

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(members=list(self.members), asked=sorted(self.asked))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.members = deque(tuple(m) for m in state["members"])
        self.asked = {tuple(c) for c in state["asked"]}

    def first_learning(self) -> tuple[int, str] | None:
        return self.population, "population"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "population": self.population, "sample": self.sample,
                "selection": self.selection, "dedupe": self.dedupe, "retries": self.retries}


def _rank_and_crowding(points: list[tuple[float, float]]) -> tuple[list[int], list[float]]:
    """Non-domination rank (0 = front) and crowding distance within the rank, per point."""
    n = len(points)
    rank = [0] * n
    crowd = [0.0] * n
    left = list(range(n))
    r = 0
    while left:
        front_local = pareto_front([points[i] for i in left])
        front = [left[k] for k in front_local]
        # pareto_front keeps one copy of exact duplicates: the others join the next rank
        for i in front:
            rank[i] = r
        _crowding(front, points, crowd)
        chosen = set(front)
        left = [i for i in left if i not in chosen]
        r += 1
    return rank, crowd


def _crowding(front: list[int], points: list[tuple[float, float]], crowd: list[float]) -> None:
    if len(front) <= 2:
        for i in front:
            crowd[i] = math.inf
        return
    for obj in (0, 1):
        order = sorted(front, key=lambda i: points[i][obj])
        lo, hi = points[order[0]][obj], points[order[-1]][obj]
        crowd[order[0]] = crowd[order[-1]] = math.inf
        if hi <= lo:
            continue
        for k in range(1, len(order) - 1):
            crowd[order[k]] += (points[order[k + 1]][obj] - points[order[k - 1]][obj]) / (hi - lo)


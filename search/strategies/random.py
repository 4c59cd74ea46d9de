"""``random``: every decision uniformly at random, independently (the baseline every
search strategy must beat)."""

from __future__ import annotations

from collections.abc import Sequence

from mnas.trial import Trial
from search.base import Candidate, Strategy, register_strategy


@register_strategy
class RandomSearch(Strategy):
    """Uniform over each of the space's current decisions; learns nothing."""

    name = "random"

    def ask(self, n: int = 1) -> list[Candidate]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = []
        for _ in range(n):
            ds = self.space.decisions(self.children_seen)
            out.append(self.candidate([self.rng.randrange(d.size) for d in ds]))
            self.children_seen += 1
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        """Nothing to learn."""

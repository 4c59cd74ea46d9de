"""Decisions: the one currency between search spaces and strategies.

A space lists its decisions; an architecture's *choices* are a tuple of ints, one per
decision. Strategies never see torch modules, only decisions and choices.

* ``Categorical(name, options)`` — a softmax over ``options``; the choice is an index.
* ``Pointer(name, n)`` — pick one of the ``n`` most recent *anchors* (controller states
  of earlier nodes, oldest first); the choice is an index in ``[0, n)``. NASNet's
  input selection.
* ``Subset(name, n)`` — an independent yes/no for each of the ``n`` most recent anchors;
  the choice is a bit mask in ``[0, 2**n)`` with bit ``j`` = anchor ``j`` (oldest first)
  selected. NAS-RL's anchor-point skip connections.

Any decision with ``anchor=True`` records the controller state after it as a new anchor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Categorical:
    name: str
    options: tuple
    anchor: bool = False

    def __post_init__(self) -> None:
        if len(self.options) < 1:
            raise ValueError(f"Categorical {self.name!r} needs at least one option")

    @property
    def size(self) -> int:
        return len(self.options)


@dataclass(frozen=True)
class Pointer:
    name: str
    n: int
    anchor: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Pointer {self.name!r} needs n >= 1, got {self.n}")

    @property
    def size(self) -> int:
        return self.n


@dataclass(frozen=True)
class Subset:
    name: str
    n: int
    anchor: bool = False

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"Subset {self.name!r} needs n >= 0, got {self.n}")

    @property
    def size(self) -> int:
        """Number of distinct choices (bit masks)."""
        return 2**self.n


Decision = Categorical | Pointer | Subset


def validate_choices(decisions: Sequence[Decision], choices: Sequence[int]) -> tuple[int, ...]:
    """Return ``choices`` as a tuple after checking it fits ``decisions``; ValueError if not."""
    if len(choices) != len(decisions):
        raise ValueError(f"expected {len(decisions)} choices, got {len(choices)}")
    out = []
    for d, c in zip(decisions, choices, strict=True):
        c = int(c)
        if not 0 <= c < d.size:
            raise ValueError(f"choice {c} out of range for {d.name!r} (0..{d.size - 1})")
        out.append(c)
    return tuple(out)


def space_size(decisions: Sequence[Decision]) -> int:
    """Number of distinct choice vectors."""
    n = 1
    for d in decisions:
        n *= d.size
    return n

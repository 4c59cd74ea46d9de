"""Search-space base class, capability protocols and the space registry.

A space is *what can be built*: it lists its decisions, turns choice vectors into
frozen architecture values (and back), parses and prints canonical strings, and builds
torch modules. Strategies use only ``decisions``/``from_choices``/``to_choices`` plus the
capability protocols they declare (``Mutable``, ``Encodable``).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mnas.decisions import Decision, validate_choices


@runtime_checkable
class Arch(Protocol):
    """A frozen, hashable genotype with a canonical human-readable string."""

    def encode(self) -> str: ...


#: characters of a malformed string an error quotes: a pasted 100 KB string is not echoed
ECHO_CHARS = 80


def shown(text: str, limit: int = ECHO_CHARS) -> str:
    """``repr(text)`` for an error message; a longer string is cut to its first ``limit``
    characters, then '…' and its total length."""
    if not isinstance(text, str) or len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


#: a number in a canonical string, for regular expressions: ASCII digits only (``\\d``,
#: ``str.isdigit`` and ``int`` also take '٣' or '３', which no canonical string holds), and
#: at most 9 of them (no space has a larger value; ``int`` refuses over 4,300 digits)
DIGITS = "[0-9]{1,9}"


def is_number(text: str) -> bool:
    """Whether ``text`` is a number as :data:`DIGITS` matches it."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def as_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (integral floats accepted), else
    ValueError."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v != float(value) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum:,}], got {value!r}")
    return v


class SearchSpace(ABC):
    """Base of every space. Constructor arguments are the space's configuration."""

    name: str = ""
    #: deployment input resolution (latency is measured at 1x3xRxR)
    deploy_resolution: int = 224
    #: default number of classes a deployed model has
    deploy_classes: int = 1000
    #: True when a *prefix* of a choice vector is an architecture too (PNAS's cells of
    #: fewer blocks): ``from_choices`` accepts it and it fits ``decisions()[:len]``
    prefix_choices: bool = False

    # -- decisions and choices -------------------------------------------------
    @abstractmethod
    def decisions(self, children_seen: int = 0) -> tuple[Decision, ...]:
        """The decisions of one architecture. Spaces whose size grows with the search
        (NAS-RL's depth schedule) return more decisions as ``children_seen`` grows."""

    @abstractmethod
    def from_choices(self, choices: Sequence[int]) -> Any:
        """The architecture for a choice vector (ValueError if it does not fit)."""

    @abstractmethod
    def to_choices(self, arch: Any) -> tuple[int, ...]:
        """Inverse of :meth:`from_choices`."""

    # -- strings -----------------------------------------------------------------
    @abstractmethod
    def decode(self, text: str) -> Any:
        """Parse a canonical string; ValueError naming what is wrong if malformed."""

    def encode(self, arch: Any) -> str:
        return arch.encode()

    def named(self) -> dict[str, Any]:
        """Named points of the space (e.g. ``mobilenetv2``)."""
        return {}

    def _check(self, arch: Any) -> Any:
        """``arch`` if it belongs to this space, else ValueError (subclasses check)."""
        return arch

    def _build_args(self, arch: Any, num_classes: int | None, width_mult: float,
                    in_channels: int) -> tuple[Any, int, int]:
        """What every ``build`` does first: parse a string (named point or canonical),
        check the arch, and validate ``num_classes`` (default: the deploy classes),
        ``width_mult`` and ``in_channels``."""
        if isinstance(arch, str):
            arch = self.parse(arch)
        arch = self._check(arch)
        classes = as_int("num_classes", self.deploy_classes if num_classes is None
                         else num_classes, 1)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        return arch, classes, as_int("in_channels", in_channels, 1)

    def parse(self, text: str) -> Any:
        """A named point or a canonical string."""
        points = self.named()
        if text in points:
            return points[text]
        return self.decode(text)

    def key(self, arch: Any) -> str:
        """Space-qualified canonical string; keys caches and the ledger."""
        return f"{self.name}:{arch.encode()}"

    # -- building ------------------------------------------------------------------
    @abstractmethod
    def build(self, arch: Any, num_classes: int | None = None, width_mult: float = 1.0,
              in_channels: int = 3) -> Any:
        """A ``torch.nn.Module`` for ``arch`` (logits of shape [batch, num_classes])."""

    # -- sampling and capabilities -----------------------------------------------
    def sample(self, rng: random.Random, children_seen: int = 0) -> Any:
        ds = self.decisions(children_seen)
        return self.from_choices([rng.randrange(d.size) for d in ds])

    def mutate(self, arch: Any, rng: random.Random, children_seen: int = 0) -> Any:
        """Change one decision to a different value (the ``Mutable`` capability)."""
        ds = self.decisions(children_seen)
        choices = list(self.to_choices(arch))
        if len(choices) != len(ds):  # depth changed: resample the tail
            choices = (choices + [0] * len(ds))[: len(ds)]
        movable = [i for i, d in enumerate(ds) if d.size > 1]
        if not movable:
            return arch
        i = rng.choice(movable)
        new = rng.randrange(ds[i].size - 1)
        choices[i] = new if new < choices[i] else new + 1
        return self.from_choices(choices)

    def vector(self, arch: Any) -> np.ndarray:
        """Fixed-length one-hot encoding of the choices (the ``Encodable`` capability)."""
        ds = self.decisions()
        choices = validate_choices(ds, self.to_choices(arch))
        parts = []
        for d, c in zip(ds, choices, strict=True):
            if d.size > 64:  # subsets: one bit per anchor instead of one-hot over masks
                parts.append(np.array([(c >> j) & 1 for j in range(d.n)], dtype=np.float32))
            else:
                v = np.zeros(d.size, dtype=np.float32)
                v[c] = 1.0
                parts.append(v)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


@runtime_checkable
class Mutable(Protocol):
    def mutate(self, arch: Any, rng: random.Random, children_seen: int = 0) -> Any: ...


@runtime_checkable
class Encodable(Protocol):
    def vector(self, arch: Any) -> np.ndarray: ...


@runtime_checkable
class Progressive(Protocol):
    """Cells that grow one step at a time (PNAS's capability).

    A cell has a *size* 1..``growth_stages`` (PNAS: blocks; NB201: nodes); every size is
    an architecture of the space. ``smallest_cells`` lists every size-1 cell; ``grow``
    gives every distinct one-step expansion of a cell as canonical strings with their
    ``vector`` rows (one matrix: PNAS ranks thousands at once); ``neighbours`` the
    canonical cells one token away at the same size; ``random_cell`` a random canonical
    cell of a size. ``vector`` is fixed-length for every size, and its
    ``summary_columns`` are size-free counts (how often each op occurs, …) on which a
    linear latency model extrapolates to larger cells; the columns before them are the
    cell's slots, ``token_width`` columns each (a block, an edge), filled in order, which a
    sequence model reads one token per step.
    """

    growth_stages: int
    summary_columns: slice
    token_width: int

    def cell_size(self, arch: Any) -> int: ...

    def smallest_cells(self) -> list[Any]: ...

    def grow(self, arch: Any) -> tuple[list[str], np.ndarray]: ...

    def neighbours(self, arch: Any) -> list[str]: ...

    def random_cell(self, rng: random.Random, size: int) -> Any: ...

    def canonical(self, arch: Any) -> Any: ...

    def vector(self, arch: Any) -> np.ndarray: ...


SPACES: dict[str, type[SearchSpace]] = {}


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty `name`")
    SPACES[cls.name] = cls
    return cls


def get_space(name: str, **options: Any) -> SearchSpace:
    """Instantiate a registered space; ValueError listing the valid names if unknown."""
    from mnas import spaces as _  # noqa: F401  (registers the built-in spaces)

    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; valid: {', '.join(sorted(SPACES))}")
    return SPACES[name](**options)


def space_names() -> list[str]:
    from mnas import spaces as _  # noqa: F401

    return sorted(SPACES)


SpaceFactory = Callable[..., SearchSpace]

"""Strategy base (ask/tell), the strategy registry.

A strategy is *how to propose*. It sees only the space's decisions and the trials it is
told about; it never builds a model or touches a device. Like Optuna's samplers, state
lives in the strategy and is checkpointed with ``state_dict``/``load_state_dict`` so a
killed search resumes exactly.
"""

from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnas.spaces.base import SearchSpace
from mnas.trial import Trial


@dataclass(frozen=True)
class Candidate:
    """What ``ask`` returns: a choice vector (and the arch it decodes to)."""

    choices: tuple[int, ...]
    arch: str                 # canonical string
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Strategy(ABC):
    """Base of every strategy.

    ``ask(n)`` proposes ``n`` candidates; ``tell(trials)`` reports scored trials (in any
    order, possibly failed: ``trial.state != "complete"``, ``trial.reward is None``).
    """

    name: str = ""
    #: capability protocols the space must satisfy (checked at construction)
    requires: tuple[type, ...] = ()
    #: spaces the strategy works on (None = every space)
    spaces: tuple[str, ...] | None = None
    #: for ``name:variant`` names (``optuna:tpe``): the constructor option the variant sets
    variant_option: str = ""
    #: the variants :func:`strategy_names` lists (others may still be accepted by name)
    variants: tuple[str, ...] = ()
    #: space name → what a user should know before searching it with this strategy
    #: (a measured limitation); ``mnas search`` prints it once
    caveats: dict[str, str] = {}

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        for cap in self.requires:
            if not isinstance(space, cap):
                raise TypeError(f"strategy {self.name!r} needs a space with "
                                f"{cap.__name__}; {space.name!r} has none (spaces that "
                                f"have it: {', '.join(_spaces_with(cap)) or 'none'})")
        if self.spaces is not None and space.name not in self.spaces:
            raise TypeError(f"strategy {self.name!r} works on spaces {list(self.spaces)}, "
                            f"not {space.name!r}")
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.children_seen = 0
        #: the reward targets (ms) the loop scores children at (see :meth:`set_targets`)
        self.targets: tuple[float, ...] = ()

    def set_targets(self, targets_ms: Sequence[float]) -> None:
        """The loop's reward targets, told before the first ``ask``. A candidate whose
        meta holds ``target_ms`` (one of these) is scored at that target; without it the
        loop spreads children over the targets round-robin by trial number."""
        self.targets = tuple(float(t) for t in targets_ms)

    def candidate(self, choices: Sequence[int], **meta: Any) -> Candidate:
        arch = self.space.from_choices(choices)
        return Candidate(tuple(int(c) for c in choices), arch.encode(), dict(meta))

    def preflight(self) -> None:
        """Check what only a new run needs (e.g. a file read once, at the first ask), so
        a bad input is refused before anything is written; ValueError names it. A
        resumed run skips this: its checkpoint already holds what was read. Default:
        nothing to check."""
        return None

    @abstractmethod
    def ask(self, n: int = 1) -> list[Candidate]: ...

    @abstractmethod
    def tell(self, trials: Sequence[Trial]) -> None: ...

    def first_learning(self) -> tuple[int, str] | None:
        """``(children, option)``: the first ``children`` are proposed before anything
        told can shape a proposal (a controller's first batch, an initial population);
        ``option`` is the ``--opt`` that sets it. None: proposals use what was told from
        the start, or never do (``random``). ``mnas search`` names a budget this uses up."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (picklable)."""
        return {"rng": self.rng.getstate(), "children_seen": self.children_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])
        self.children_seen = state["children_seen"]

    def config(self) -> dict[str, Any]:
        """The options that define this strategy (written to the run's config)."""
        return {"name": self.name, "seed": self.seed}


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty `name`")
    STRATEGIES[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from search import strategies  # noqa: F401


def strategy_names() -> list[str]:
    """Registered names; a strategy with ``variants`` is listed as ``name:variant``."""
    _load_builtin()
    names: list[str] = []
    for name, cls in STRATEGIES.items():
        if cls.variants:
            names.extend(f"{name}:{v}" for v in cls.variants)
        else:
            names.append(name)
    return sorted(names)


class _Variant(functools.partial):  # type: ignore[type-arg]
    """``base:variant``'s factory: the name sets the variant, so an option giving it again
    is refused (a partial would let it silently replace the name's)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        (option, variant), = self.keywords.items()
        if option in kwargs:
            raise ValueError(f"{option} is set by the strategy name ({variant!r}); drop "
                             f"--opt {option}=… or name the strategy with {kwargs[option]!r}")
        return super().__call__(*args, **kwargs)


def strategy_factory(name: str) -> StrategyFactory:
    """The class (or factory) behind a strategy name; its signature types CLI options."""
    _load_builtin()
    if name in STRATEGIES:
        return STRATEGIES[name]
    base, sep, variant = name.partition(":")
    if sep and base in STRATEGIES and STRATEGIES[base].variant_option:
        # the constructor validates the variant (ValueError listing the valid ones)
        return _Variant(STRATEGIES[base], **{STRATEGIES[base].variant_option: variant})
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(strategy_names())}")


def _spaces_with(cap: type) -> list[str]:
    """The registered spaces (at their defaults) that have capability ``cap``."""
    from mnas.spaces import SPACES, get_space

    return [n for n in SPACES if isinstance(get_space(n), cap)]


def get_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    return strategy_factory(name)(space, seed=seed, **options)


StrategyFactory = Callable[..., Strategy]

"""MnasNet's reward: ``ACC × (LAT/T)^w`` with ``w = α if LAT ≤ T else β``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: transforms applied to accuracy before the latency factor (NAS-RL cubes accuracy)
ACC_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda a: a,
    "cube": lambda a: a**3,
}


@dataclass(frozen=True)
class Reward:
    """Soft constraint by default (α = β = −0.07); :meth:`hard` gives α = 0, β = −1."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07
    transform: str = "identity"

    def __post_init__(self) -> None:
        if not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise ValueError(f"target latency must be a positive number of ms, got {self.target_ms}")
        if self.transform not in ACC_TRANSFORMS:
            raise ValueError(f"unknown reward transform {self.transform!r}; "
                             f"valid: {', '.join(ACC_TRANSFORMS)}")

    @classmethod
    def hard(cls, target_ms: float, transform: str = "identity") -> Reward:
        return cls(target_ms, alpha=0.0, beta=-1.0, transform=transform)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if not (0.0 <= accuracy <= 1.0):
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        if not latency_ms > 0:
            raise ValueError(f"latency must be > 0 ms, got {latency_ms}")
        w = self.alpha if latency_ms <= self.target_ms else self.beta
        return ACC_TRANSFORMS[self.transform](accuracy) * (latency_ms / self.target_ms) ** w

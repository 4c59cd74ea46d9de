"""Trial: one scored child. A failure is a trial state, never a crashed search."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TrialState = Literal["complete", "failed", "pruned"]


@dataclass
class Trial:
    number: int
    arch: str                       # canonical string (without the space prefix)
    choices: tuple[int, ...]
    state: TrialState = "complete"
    accuracy: float | None = None   # 0..1
    latency_ms: float | None = None
    reward: float | None = None
    params: int | None = None
    macs: int | None = None
    target_ms: float | None = None
    measurement: dict[str, Any] | None = None
    reason: str = ""
    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "complete"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d

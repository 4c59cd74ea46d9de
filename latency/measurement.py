"""The Measurement record and its statistics: a latency is never a bare float."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

#: timing clocks of the measurement protocol (see MeasureSettings.clock)
CLOCKS = ("wall", "cpu")


#: largest accepted ``threads`` and ``runs`` (``max_runs``: ten times that)
MAX_THREADS, MAX_RUNS = 1024, 100_000


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure. Part of the cache key."""

    threads: int = 1
    warmup: int = 10
    runs: int = 30          # minimum timed runs
    max_runs: int = 300     # cap for the adaptive protocol
    rel_ci: float = 0.02    # stop once the 95% CI of the median is within ±rel_ci
    max_seconds: float = 30.0
    #: "wall": time.perf_counter, what a user waits. "cpu": the measuring thread's CPU time,
    #: which other processes on a shared host cannot inflate (threads=1 only: with one
    #: intra-op thread the runtime computes on the calling thread)
    clock: str = "wall"

    def __post_init__(self) -> None:
        # upper bounds: past them a runtime refuses in its own words (threads), or the
        # minimum runs alone outlast any max_seconds
        for name, low, high in (("threads", 1, MAX_THREADS), ("warmup", 0, MAX_RUNS),
                                ("runs", 3, MAX_RUNS), ("max_runs", 3, 10 * MAX_RUNS)):
            v = getattr(self, name)
            if not low <= v <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {v}")
        if self.max_runs < self.runs:
            raise ValueError(f"max_runs ({self.max_runs}) must be >= runs ({self.runs})")
        if self.clock not in CLOCKS:
            raise ValueError(f"unknown clock {self.clock!r}; valid: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError(f"clock 'cpu' counts the calling thread's CPU time only, so it "
                             f"needs threads=1 (got threads={self.threads}); use clock 'wall'")

    def key(self) -> str:
        d = asdict(self)
        if d["clock"] == "wall":  # keys written before the clock option existed stay valid
            del d["clock"]
        return json.dumps(d, sort_keys=True)


def median_ci(samples: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median (binomial order statistics)."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n < 3:
        return float(x[0]), float(x[-1])
    half = z * np.sqrt(n) / 2.0
    lo = max(int(np.floor(n / 2.0 - half)), 0)
    hi = min(int(np.ceil(n / 2.0 + half)), n - 1)
    return float(x[lo]), float(x[hi])


@dataclass(frozen=True)
class Measurement:
    """One latency measurement of one model on one device."""

    samples_ms: tuple[float, ...]
    median_ms: float
    p10_ms: float
    p90_ms: float
    mad_ms: float
    ci_low_ms: float
    ci_high_ms: float
    runs: int
    warmup: int
    threads: int
    runtime: str
    runtime_version: str
    model_sha256: str
    device: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    #: the clock the samples were read from: "wall" or "cpu" (MeasureSettings.clock)
    clock: str = "wall"
    timestamp: float = 0.0
    noisy: bool = False
    cached: bool = False
    #: what one sample is: "run" (one timed inference) or, for on-device tools that print
    #: only summaries, "invocation_median" / "invocation_mean" (one tool invocation each)
    sample_kind: str = "run"

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's 95% CI relative to the median."""
        if self.median_ms <= 0:
            return 0.0
        return (self.ci_high_ms - self.ci_low_ms) / 2.0 / self.median_ms

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray, *, warmup: int, threads: int,
                     runtime: str, runtime_version: str, model_sha256: str, device: str,
                     fingerprint: dict[str, Any] | None = None, rel_ci_goal: float = 0.02,
                     clock: str = "wall") -> Measurement:
        x = np.asarray(samples_ms, dtype=float)
        if x.size == 0:
            raise ValueError("a measurement needs at least one sample")
        med = float(np.median(x))
        lo, hi = median_ci(x)
        m = cls(
            samples_ms=tuple(float(v) for v in x),
            median_ms=med,
            p10_ms=float(np.percentile(x, 10)),
            p90_ms=float(np.percentile(x, 90)),
            mad_ms=float(np.median(np.abs(x - med))),
            ci_low_ms=lo,
            ci_high_ms=hi,
            runs=int(x.size),
            warmup=warmup,
            threads=threads,
            runtime=runtime,
            runtime_version=runtime_version,
            model_sha256=model_sha256,
            device=device,
            fingerprint=dict(fingerprint or {}),
            clock=clock,
            timestamp=time.time(),
        )
        return m.with_(noisy=m.rel_ci > rel_ci_goal)

    def scaled(self, factor: float, **changes: Any) -> Measurement:
        """The same measurement with every latency multiplied by ``factor`` (e.g. to the
        build-time speed of a reference timed alongside it)."""
        f = float(factor)
        return self.with_(samples_ms=tuple(x * f for x in self.samples_ms),
                          **{k: getattr(self, k) * f for k in (
                              "median_ms", "p10_ms", "p90_ms", "mad_ms", "ci_low_ms",
                              "ci_high_ms")}, **changes)

    def with_(self, **changes: Any) -> Measurement:
        d = asdict(self)
        d.update(changes)
        return Measurement(**d)

    def to_dict(self) -> dict[str, Any]:
        # shallow: every field is a scalar but the fingerprint (asdict's recursive copy
        # was a sixth of the search loop's own cost a child)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["fingerprint"] = copy.deepcopy(self.fingerprint)
        d["samples_ms"] = list(self.samples_ms)
        d["rel_ci"] = self.rel_ci
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        d = dict(d)
        d.pop("rel_ci", None)
        d["samples_ms"] = tuple(d["samples_ms"])
        return cls(**d)

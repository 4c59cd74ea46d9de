"""The adaptive measurement protocol: warm up, time, repeat until the median is pinned down.

After ``settings.warmup`` untimed runs and ``settings.runs`` timed ones, more runs are
taken in chunks until the distribution-free 95% confidence interval of the median
(:func:`latency.measurement.median_ci`) has a half-width within ``±settings.rel_ci`` of
the median, or ``settings.max_runs`` / ``settings.max_seconds`` is reached. A result that
never got there comes back flagged ``noisy`` - never silently as a clean number.

Samples are read from ``settings.clock``: ``"wall"`` (``time.perf_counter_ns``: the
latency a user waits) or ``"cpu"`` (``time.thread_time_ns``: the CPU time of the calling
thread). On a host shared with other work, preemption inflates wall samples (here, with
the load average at ~8 on 2 cores, MobileNetV2's wall median tripled and wandered by
~3% between repeats) while the thread's CPU time stayed within ~1% of the quiet-host
wall latency. ``"cpu"`` needs ``threads=1`` (with one intra-op thread the runtime
computes on the calling thread); the ``max_seconds`` cap always runs on wall time.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np

from latency.measurement import MeasureSettings, median_ci

#: extra timed runs between two confidence-interval checks
CHUNK = 10
#: the clock each MeasureSettings.clock reads, in nanoseconds
CLOCK_NS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns,
                                          "cpu": time.thread_time_ns}


def rel_halfwidth(samples: list[float] | np.ndarray) -> float:
    """Half-width of the median's 95% CI relative to the median (as Measurement.rel_ci)."""
    x = np.asarray(samples, dtype=float)
    med = float(np.median(x))
    if med <= 0:
        return 0.0
    lo, hi = median_ci(x)
    return (hi - lo) / 2.0 / med


def measure_callable(run: Callable[[], object], settings: MeasureSettings
                     ) -> tuple[list[float], bool]:
    """Time ``run`` following the adaptive protocol; returns (samples in ms, noisy).

    Always takes at least ``settings.runs`` timed runs (even past ``max_seconds``: a
    median of fewer is not worth caching). The garbage collector is paused while timing
    so a Python collection never lands inside a sample.
    """
    if not callable(run):
        raise TypeError(f"run must be callable, got {type(run).__name__}")
    for _ in range(settings.warmup):
        run()
    clock = CLOCK_NS[settings.clock]
    wall = time.perf_counter_ns
    deadline = wall() + int(settings.max_seconds * 1e9)
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        def timed(n: int) -> None:
            for _ in range(n):
                t0 = clock()
                run()
                t1 = clock()
                samples.append((t1 - t0) / 1e6)
                if len(samples) >= settings.runs and wall() >= deadline:
                    return

        timed(settings.runs)
        while (len(samples) < settings.max_runs and wall() < deadline
               and rel_halfwidth(samples) > settings.rel_ci):
            timed(min(CHUNK, settings.max_runs - len(samples)))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, rel_halfwidth(samples) > settings.rel_ci

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
from collections.abc import Callable, Sequence

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
    samples, noisy = measure_interleaved([run], settings)
    return samples[0], noisy


def measure_interleaved(runs: Sequence[Callable[[], object]], settings: MeasureSettings
                        ) -> tuple[list[list[float]], bool]:
    """Time several callables *alternately*, one inference each in turn, under the
    adaptive protocol of :func:`measure_callable` (which is the one-callable case).

    Returns one sample list per callable (all the same length) and whether the *first*
    one stayed noisy; the stopping rule watches the first only, the others ride along.
    Why alternate: on a shared host the machine slows down in episodes of seconds (another
    VM, frequency), much longer than one inference. Timed alternately, a model and an
    unchanging reference see the same episodes, so their ratio cancels them; timed one
    block after the other they see different ones (MobileNetV2 on this host: SD of the
    log ratio of 30-sample medians 1.1% alternated, 2.8% in blocks, 4.2% for the model
    alone; ``docs/ci.md``).
    """
    runs = list(runs)
    if not runs or not all(callable(r) for r in runs):
        got = ", ".join(type(r).__name__ for r in runs) or "nothing"
        raise TypeError(f"runs must be a non-empty sequence of callables, got {got}")
    for _ in range(settings.warmup):
        for run in runs:
            run()
    clock = CLOCK_NS[settings.clock]
    wall = time.perf_counter_ns
    deadline = wall() + int(settings.max_seconds * 1e9)
    samples: list[list[float]] = [[] for _ in runs]
    first = samples[0]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        def timed(n: int) -> None:
            for _ in range(n):
                for run, out in zip(runs, samples, strict=True):
                    t0 = clock()
                    run()
                    t1 = clock()
                    out.append((t1 - t0) / 1e6)
                if len(first) >= settings.runs and wall() >= deadline:
                    return

        timed(settings.runs)
        while (len(first) < settings.max_runs and wall() < deadline
               and rel_halfwidth(first) > settings.rel_ci):
            timed(min(CHUNK, settings.max_runs - len(first)))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, rel_halfwidth(first) > settings.rel_ci

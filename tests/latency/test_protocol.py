"""The adaptive protocol on controlled inputs: a steady callable and a jittery one."""

from __future__ import annotations

import random
import time

import pytest

from latency.measurement import MeasureSettings
from latency.protocol import measure_callable, measure_interleaved, rel_halfwidth


def spin(ms: float) -> None:
    """Busy-wait (sleep granularity is too coarse for a steady sub-ms run)."""
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def test_steady_run_stops_at_minimum_and_is_clean() -> None:
    calls = []

    def run() -> None:
        calls.append(1)
        spin(0.3)

    s = MeasureSettings(warmup=4, runs=15, max_runs=400, rel_ci=0.05, max_seconds=20)
    samples, noisy = measure_callable(run, s)
    assert not noisy
    assert s.runs <= len(samples) < s.max_runs  # stopped early, far below the cap
    assert len(calls) == len(samples) + s.warmup  # warm-up runs are not timed
    med = sorted(samples)[len(samples) // 2]
    assert 0.3 <= med < 3.0  # samples are milliseconds


def test_jittery_run_hits_cap_and_is_flagged_noisy() -> None:
    rng = random.Random(1)

    def run() -> None:
        spin(rng.uniform(0.05, 1.5))

    s = MeasureSettings(warmup=0, runs=10, max_runs=40, rel_ci=0.02, max_seconds=20)
    samples, noisy = measure_callable(run, s)
    assert noisy
    assert len(samples) == s.max_runs  # it kept trying up to the cap
    assert rel_halfwidth(samples) > s.rel_ci


def test_time_cap_stops_extension_but_never_the_minimum() -> None:
    rng = random.Random(2)

    def run() -> None:
        spin(rng.uniform(0.5, 5.0))

    s = MeasureSettings(warmup=0, runs=8, max_runs=10_000, rel_ci=0.001, max_seconds=0.001)
    samples, noisy = measure_callable(run, s)
    assert noisy
    assert len(samples) == s.runs  # the minimum is honoured even past max_seconds


def test_settling_run_extends_past_minimum_until_ci_is_narrow() -> None:
    # first runs jitter wildly, then the run settles: the protocol must keep going
    n = [0]
    rng = random.Random(3)

    def run() -> None:
        n[0] += 1
        spin(rng.uniform(0.1, 2.0) if n[0] <= 10 else 0.4)

    s = MeasureSettings(warmup=0, runs=10, max_runs=300, rel_ci=0.05, max_seconds=20)
    samples, noisy = measure_callable(run, s)
    assert len(samples) > s.runs
    assert not noisy
    assert rel_halfwidth(samples) <= s.rel_ci


def test_run_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        measure_callable(3.0, MeasureSettings())  # type: ignore[arg-type]


def test_failing_run_propagates() -> None:
    def run() -> None:
        raise OSError("device gone")

    with pytest.raises(OSError, match="device gone"):
        measure_callable(run, MeasureSettings(warmup=1))


def test_cpu_clock_ignores_time_off_cpu() -> None:
    # a run that mostly sleeps: wall samples see the sleep, the thread's CPU time does not
    def run() -> None:
        time.sleep(0.003)
        spin(0.2)

    base = dict(warmup=1, runs=5, max_runs=5, rel_ci=1.0)
    wall, _ = measure_callable(run, MeasureSettings(**base))
    cpu, _ = measure_callable(run, MeasureSettings(**base, clock="cpu"))
    assert min(wall) >= 3.0
    assert max(cpu) < 2.5 and sorted(cpu)[2] >= 0.1


def test_clock_settings() -> None:
    assert MeasureSettings().clock == "wall"
    assert "clock" not in MeasureSettings().key()  # wall keys predate the option
    assert MeasureSettings(clock="cpu").key() != MeasureSettings().key()
    with pytest.raises(ValueError, match="valid: wall, cpu"):
        MeasureSettings(clock="sundial")
    with pytest.raises(ValueError, match="threads=1"):
        MeasureSettings(clock="cpu", threads=2)


def test_interleaved_runs_alternate_and_follow_the_first() -> None:
    order: list[str] = []

    def a() -> None:
        order.append("a")
        spin(0.2)

    def b() -> None:
        order.append("b")
        spin(0.05)

    s = MeasureSettings(warmup=2, runs=12, max_runs=40, rel_ci=0.5, max_seconds=10)
    (sa, sb), noisy = measure_interleaved([a, b], s)
    assert order == ["a", "b"] * (2 + len(sa))      # one inference each, in turn
    assert len(sa) == len(sb) == s.runs and not noisy
    assert sorted(sa)[len(sa) // 2] > 2 * sorted(sb)[len(sb) // 2]
    with pytest.raises(TypeError, match="callables"):
        measure_interleaved([], s)

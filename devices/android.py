"""Pure parsing of what an Android phone prints: benchmark tools, getprop, sysfs.

Nothing here talks to a device; :mod:`devices.adb` feeds these functions the text its
shell commands return, and the loopback daemon in ``tests/fakes/adbd.py`` prints the same
formats. Every parser raises ValueError naming what it expected when the text holds no
result, so a device answer that is not a timing never becomes a number.

``benchmark_model`` (TFLite / LiteRT) has printed three formats over the years:

* ``Timings (microseconds): count=50 first=... curr=... min=... max=... avg=... std=...``
  (the TensorFlow-era tool: a mean, no median);
* ``count=50 first=... curr=... min=... max=... avg=... std=... p5=... median=... p95=...``
  optionally prefixed ``INFO: `` (current tool; the last such line is the timed phase,
  an earlier one is the warm-up phase; older builds omit the percentiles);
* ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ...,
  Inference (avg): ...`` (summary line: a mean only).

``onnxruntime_perf_test -m times -s`` prints ``Average inference time cost: X ms`` and
``Min/Max/P50/P90/P95/P99/P999 Latency: X s`` (seconds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# -- benchmark_model ---------------------------------------------------------------------

_KV = re.compile(r"([A-Za-z][A-Za-z0-9_]*)=(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_COUNT_LINE = re.compile(r"^(?:[A-Z]+:\s*)?(?:Timings \(microseconds\):\s*)?count=\d+")
_INFER_US = re.compile(
    r"Inference timings in us:.*?Inference \(avg\):\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_INIT_US = re.compile(r"Init:\s*(-?\d+(?:\.\d+)?)")
_FIRST_US = re.compile(r"First inference:\s*(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class BenchmarkResult:
    """One invocation's summary, in milliseconds.

    ``center_ms`` is the invocation's median when the tool printed one
    (``center_kind == "median"``), else its mean (``"mean"``): the tools print summaries,
    never the individual run times.
    """

    count: int
    center_ms: float
    center_kind: str
    mean_ms: float
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    first_ms: float | None = None
    init_ms: float | None = None
    source: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def _us(d: dict[str, float], key: str) -> float | None:
    return d[key] / 1000.0 if key in d else None


def parse_benchmark_model(text: str) -> BenchmarkResult:
    """Parse ``benchmark_model`` output in any of its formats (see the module doc).

    The last ``count=`` line wins (the timed phase comes after the warm-up phase); the
    ``Inference timings in us`` summary supplies the mean when no count line exists, and
    init/first-inference times either way. ValueError when neither is present (the output
    then usually holds the tool's error message, which is quoted).
    """
    if not isinstance(text, str):
        raise TypeError(f"benchmark output must be str, got {type(text).__name__}")
    count_lines = [ln.strip() for ln in text.splitlines() if _COUNT_LINE.match(ln.strip())]
    summary = _INFER_US.search(text)
    init = _INIT_US.search(text) if summary else None
    first = _FIRST_US.search(text) if summary else None
    init_ms = float(init.group(1)) / 1000.0 if init else None
    if count_lines:
        line = count_lines[-1]
        d = {k: float(v) for k, v in _KV.findall(line)}
        if "avg" not in d:
            raise ValueError(f"benchmark_model timing line has no avg=: {line!r}")
        count = int(d["count"])
        if count < 1:
            raise ValueError(f"benchmark_model timed no runs: {line!r}")
        mean = d["avg"] / 1000.0
        if "median" in d:
            center, kind = d["median"] / 1000.0, "median"
        else:
            center, kind = mean, "mean"
        known = {"count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"}
        return BenchmarkResult(
            count=count, center_ms=center, center_kind=kind, mean_ms=mean,
            min_ms=_us(d, "min"), max_ms=_us(d, "max"), std_ms=_us(d, "std"),
            p5_ms=_us(d, "p5"), p95_ms=_us(d, "p95"),
            first_ms=_us(d, "first") if "first" in d else (
                float(first.group(1)) / 1000.0 if first else None),
            init_ms=init_ms,
            source="timings" if "Timings (microseconds)" in line else "count",
            extra={k: v for k, v in d.items() if k not in known})
    if summary:
        mean = float(summary.group(1)) / 1000.0
        return BenchmarkResult(count=0, center_ms=mean, center_kind="mean", mean_ms=mean,
                               first_ms=float(first.group(1)) / 1000.0 if first else None,
                               init_ms=init_ms, source="summary")
    raise ValueError("benchmark_model printed no timing (expected 'count=... avg=...' or "
                     f"'Inference timings in us: ...'); output ends: {_tail(text)!r}")


# -- onnxruntime_perf_test ---------------------------------------------------------------

_ORT_AVG = re.compile(r"Average inference time cost:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                      r"\s*(ms|s|us)?")
_ORT_PCT = re.compile(r"^\s*(Min|Max|P\d+)\s+Latency:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                      r"\s*(s|ms|us)?\s*$", re.MULTILINE)
_ORT_REQ = re.compile(r"Total inference requests:\s*(\d+)")
_UNIT = {"s": 1000.0, "ms": 1.0, "us": 0.001}


def parse_ort_perf_test(text: str) -> BenchmarkResult:
    """Parse ``onnxruntime_perf_test -m times -s`` output; percentile lines are seconds.

    The median is ``P50 Latency``; without it the average is used (``center_kind``
    ``"mean"``). ValueError when the output holds no average.
    """
    if not isinstance(text, str):
        raise TypeError(f"perf test output must be str, got {type(text).__name__}")
    avg = _ORT_AVG.search(text)
    if not avg:
        raise ValueError("onnxruntime_perf_test printed no 'Average inference time cost' "
                         f"line; output ends: {_tail(text)!r}")
    mean = float(avg.group(1)) * _UNIT[avg.group(2) or "ms"]
    pct = {name.lower(): float(v) * _UNIT[unit or "s"]
           for name, v, unit in _ORT_PCT.findall(text)}
    req = _ORT_REQ.search(text)
    count = int(req.group(1)) if req else 0
    if "p50" in pct:
        center, kind = pct["p50"], "median"
    else:
        center, kind = mean, "mean"
    return BenchmarkResult(
        count=count, center_ms=center, center_kind=kind, mean_ms=mean,
        min_ms=pct.get("min"), max_ms=pct.get("max"), p5_ms=None, p95_ms=pct.get("p95"),
        source="onnxruntime_perf_test",
        extra={k: v for k, v in pct.items() if k not in ("min", "max", "p50", "p95")})


def _tail(text: str, n: int = 300) -> str:
    t = text.strip()
    return t[-n:]


# -- getprop, cpufreq, thermal -----------------------------------------------------------

_PROP = re.compile(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$")


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` (no argument) output ``[key]: [value]`` lines -> dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _PROP.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_int(text: str) -> int | None:
    """The integer a sysfs file holds, or None when the text is not one (missing file,
    permission denied - the legacy shell merges stderr into stdout)."""
    t = text.strip()
    return int(t) if re.fullmatch(r"-?\d+", t) else None


def parse_cpu_list(ls_output: str) -> list[int]:
    """CPU indices from an ``ls /sys/devices/system/cpu`` listing (``cpu0 cpu1 ...``)."""
    return sorted({int(m) for m in re.findall(r"(?:^|\s)cpu(\d+)(?=\s|$)", ls_output)})


def parse_thermal_zones(ls_output: str) -> list[int]:
    """Zone indices from an ``ls /sys/class/thermal`` listing."""
    return sorted({int(m) for m in re.findall(r"(?:^|\s)thermal_zone(\d+)(?=\s|$)",
                                              ls_output)})


def temperature_c(raw: int) -> float | None:
    """A thermal zone reading in °C: millidegrees above 1000, degrees otherwise; None for
    implausible values (disabled zones report 0 or negative numbers)."""
    c = raw / 1000.0 if abs(raw) >= 1000 else float(raw)
    return c if 0.0 < c < 150.0 else None


def max_temperature_c(text: str) -> float | None:
    """Hottest plausible reading among the integer lines of ``cat zone*/temp`` output."""
    temps = [temperature_c(v) for ln in text.splitlines() if (v := parse_int(ln)) is not None]
    valid = [t for t in temps if t is not None]
    return max(valid) if valid else None


def big_cores(max_freq_khz: dict[int, int], threads: int = 1) -> list[int]:
    """The fastest cores, enough of them for ``threads``.

    Cores are grouped by their maximum frequency (a cluster); clusters are taken from the
    fastest down until they hold at least ``threads`` cores. On a 1+3+4 phone with one
    thread that is the prime core alone; with four threads the prime and big cores.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not max_freq_khz:
        raise ValueError("no cpufreq information: cannot choose cores")
    chosen: list[int] = []
    for freq in sorted(set(max_freq_khz.values()), reverse=True):
        chosen += [c for c, f in max_freq_khz.items() if f == freq]
        if len(chosen) >= threads:
            break
    return sorted(chosen)


def cpu_mask(cores: list[int]) -> str:
    """``taskset`` hexadecimal mask for a list of core indices (``[4, 5]`` -> ``"30"``)."""
    if not cores or any(c < 0 for c in cores):
        raise ValueError(f"cores must be a non-empty list of non-negative ints, got {cores}")
    return format(sum(1 << c for c in set(cores)), "x")

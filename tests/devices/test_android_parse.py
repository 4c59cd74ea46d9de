"""Parsers of benchmark tool output, getprop and sysfs text (devices/android.py)."""

from __future__ import annotations

import pytest

from devices.android import (
    big_cores,
    cpu_mask,
    max_temperature_c,
    parse_benchmark_model,
    parse_cpu_list,
    parse_getprop,
    parse_int,
    parse_ort_perf_test,
    parse_thermal_zones,
    temperature_c,
)

# Current tool (LiteRT benchmark_model): warm-up line first, then the timed phase.
MODERN = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/model.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/model.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 13.3
INFO: Initialized session in 45.123ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=10 first=40210 curr=31200 min=30988 max=40210 avg=32050.4 std=2711 p5=30988 median=31500 p95=40210

INFO: Running benchmark for at least 30 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=30 first=31010 curr=30950 min=30500 max=33120 avg=31042.7 std=480 p5=30610 median=30990 p95=32500

INFO: Inference timings in us: Init: 45123, First inference: 40210, Warmup (avg): 32050.4, Inference (avg): 31042.7
INFO: Memory footprint delta from the start of the tool (MB): init=20.5 overall=28.1
"""

# Tool without percentiles and without the INFO prefix (2019-2021 builds).
NO_PERCENTILES = """\
STARTING!
Min num runs: [50]
Graph: [/data/local/tmp/m.tflite]
Initialized session in 3.91ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=57 first=10203 curr=8800 min=8650 max=10203 avg=8860.5 std=230

Running benchmark for at least 50 iterations and at least 1 seconds
count=113 first=8856 curr=8803 min=8644 max=9131 avg=8813.42 std=58

Inference timings in us: Init: 3910, First inference: 10203, Warmup (avg): 8860.5, Inference (avg): 8813.42
"""

# TensorFlow-era tool.
LEGACY = """\
Graph: [/data/local/tmp/m.tflite]
Num runs: [50]
Timings (microseconds): count=50 first=12001 curr=11050 min=10900 max=12001 avg=11120.5 std=210
"""

SUMMARY_ONLY = ("Loaded model m.tflite\n"
                "Inference timings in us: Init: 2200, First inference: 9100, "
                "Warmup (avg): 8700.5, Inference (avg): 8650.25\n")

ORT = """\
Session creation time cost: 0.0273 s
First inference time cost: 23 ms
Total inference time cost: 0.6234 s
Total inference requests: 30
Average inference time cost: 20.78 ms
Total inference run time: 0.624 s
Number of inferences per second: 48.1
Avg CPU usage: 99 %
Peak working set size: 61000000 bytes
Avg CPU usage:99
Peak working set size:61000000
Runs:30
Min Latency: 0.0201 s
Max Latency: 0.0241 s
P50 Latency: 0.0205 s
P90 Latency: 0.0219 s
P95 Latency: 0.0226 s
P99 Latency: 0.0241 s
P999 Latency: 0.0241 s
"""


def test_modern_format_takes_the_timed_phase_median():
    r = parse_benchmark_model(MODERN)
    assert r.count == 30
    assert r.center_kind == "median"
    assert r.center_ms == pytest.approx(30.990)
    assert r.mean_ms == pytest.approx(31.0427)
    assert r.min_ms == pytest.approx(30.5) and r.max_ms == pytest.approx(33.12)
    assert r.p5_ms == pytest.approx(30.61) and r.p95_ms == pytest.approx(32.5)
    assert r.init_ms == pytest.approx(45.123)


def test_count_lines_without_percentiles_give_the_mean_honestly_marked():
    r = parse_benchmark_model(NO_PERCENTILES)
    assert (r.count, r.center_kind) == (113, "mean")
    assert r.center_ms == pytest.approx(8.81342)
    assert r.std_ms == pytest.approx(0.058)


def test_legacy_timings_line():
    r = parse_benchmark_model(LEGACY)
    assert (r.count, r.center_kind, r.source) == (50, "mean", "timings")
    assert r.center_ms == pytest.approx(11.1205)
    assert r.first_ms == pytest.approx(12.001)


def test_summary_only_line():
    r = parse_benchmark_model(SUMMARY_ONLY)
    assert (r.center_kind, r.source) == ("mean", "summary")
    assert r.center_ms == pytest.approx(8.65025)
    assert r.first_ms == pytest.approx(9.1) and r.init_ms == pytest.approx(2.2)


@pytest.mark.parametrize("text", [
    "", "ERROR: Could not open '/data/local/tmp/x.tflite'.\nFailed to load model",
    "/system/bin/sh: /data/local/tmp/benchmark_model: not found",
    "count=0 first=0 curr=0 min=0 max=0 avg=0 std=0",
])
def test_output_without_a_timing_is_refused(text):
    with pytest.raises(ValueError):
        parse_benchmark_model(text)


def test_error_message_quotes_the_tool_output():
    with pytest.raises(ValueError, match="Failed to load model"):
        parse_benchmark_model("ERROR: bad file\nFailed to load model")


def test_ort_perf_test_percentiles_are_seconds():
    r = parse_ort_perf_test(ORT)
    assert (r.count, r.center_kind) == (30, "median")
    assert r.center_ms == pytest.approx(20.5)
    assert r.mean_ms == pytest.approx(20.78)
    assert r.min_ms == pytest.approx(20.1) and r.max_ms == pytest.approx(24.1)
    assert r.p95_ms == pytest.approx(22.6)
    assert r.extra["p90"] == pytest.approx(21.9)


def test_ort_perf_test_without_percentiles_uses_the_average():
    r = parse_ort_perf_test("Total inference requests: 5\nAverage inference time cost: 3.5 ms\n")
    assert (r.center_kind, r.center_ms, r.count) == ("mean", 3.5, 5)
    with pytest.raises(ValueError, match="Average inference time cost"):
        parse_ort_perf_test("failed to create session")


def test_getprop_listing():
    text = ("[ro.board.platform]: [sm8150]\n[ro.product.model]: [Pixel 4 \"XL\"]\n"
            "[ro.build.version.sdk]: [33]\n[empty.prop]: []\ngarbage line\n")
    props = parse_getprop(text)
    assert props == {"ro.board.platform": "sm8150", "ro.product.model": 'Pixel 4 "XL"',
                     "ro.build.version.sdk": "33", "empty.prop": ""}


def test_sysfs_values():
    assert parse_int("2841600\n") == 2841600
    assert parse_int("cat: /sys/x: Permission denied") is None
    assert parse_cpu_list("cpu0\ncpu1 cpu2\ncpufreq\ncpuidle\ncpu10\nonline\n") == [0, 1, 2, 10]
    assert parse_thermal_zones("cooling_device0\nthermal_zone3\nthermal_zone0\n") == [0, 3]


def test_temperatures_accept_milli_and_whole_degrees_and_skip_bogus_zones():
    assert temperature_c(41500) == pytest.approx(41.5)
    assert temperature_c(38) == pytest.approx(38.0)
    assert temperature_c(0) is None and temperature_c(-273000) is None
    assert max_temperature_c("38000\n-40\ncat: x: Permission denied\n52100\n") == \
        pytest.approx(52.1)
    assert max_temperature_c("no zones") is None


def test_big_cores_take_fastest_clusters_until_threads_fit():
    pixel4 = {0: 1785600, 1: 1785600, 2: 1785600, 3: 1785600,
              4: 2419200, 5: 2419200, 6: 2419200, 7: 2841600}
    assert big_cores(pixel4, 1) == [7]
    assert big_cores(pixel4, 2) == [4, 5, 6, 7]
    assert big_cores(pixel4, 8) == list(range(8))
    assert big_cores({0: 100, 1: 100}, 1) == [0, 1]  # homogeneous: all cores
    with pytest.raises(ValueError, match="cpufreq"):
        big_cores({}, 1)


def test_cpu_mask():
    assert cpu_mask([7]) == "80"
    assert cpu_mask([4, 5, 6, 7]) == "f0"
    assert cpu_mask([0]) == "1"
    with pytest.raises(ValueError):
        cpu_mask([])

"""The ``latency_budget`` marker, run the way a team runs it: a separate pytest process
that loads the plugin through its pytest11 entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from latency.measurement import Measurement
from mnas.pytest_plugin import budget_verdict, judge

TESTS = '''
import pytest

FAST = dict(warmup=2, runs=15, max_runs=15)

@pytest.mark.latency_budget(ms=1000, model="models/net.onnx", **FAST)
def test_within_budget():
    assert 1 + 1 == 2

@pytest.mark.latency_budget(0.00001, model="models/net.onnx", **FAST)
def test_over_budget():
    pass

@pytest.mark.latency_budget(ms=1000, model="models/net.onnx", **FAST)
def test_body_fails_first():
    assert False, "the unit test itself"

@pytest.mark.latency_budget(model="models/net.onnx")
def test_no_budget():
    pass

@pytest.mark.latency_budget(ms=5, model="models/missing.onnx")
def test_missing_model():
    pass

@pytest.mark.latency_budget(ms=5, model="models/net.onnx", device="phone:1")
def test_unknown_device():
    pass

@pytest.mark.latency_budget(ms=5, model="models/net.onnx", rnus=3)
def test_typo():
    pass

@pytest.mark.latency_budget(ms=1000, arch="mobilenetv2", space="mnasnet",
                            input_shape=(1, 3, 32, 32), num_classes=10,
                            warmup=1, runs=3, max_runs=3)
def test_arch_budget():
    pass

def test_unmarked():
    pass
'''


def test_marker_through_the_entry_point(tmp_path: Path, bench_models) -> None:
    (tmp_path / "models").mkdir()
    shutil.copy(bench_models["narrow"], tmp_path / "models" / "net.onnx")
    (tmp_path / "test_latency.py").write_text(TESTS)
    # --strict-markers: the marker must be registered by the entry point, not guessed
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                        "--strict-markers",
                        "--junitxml", str(tmp_path / "junit.xml"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = p.stdout
    assert p.returncode == 1, out
    results = {tc.get("name"): tc for tc in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    passed = {n for n, tc in results.items() if not list(tc)
              or all(c.tag in ("properties", "system-out", "system-err") for c in tc)}
    assert passed == {"test_within_budget", "test_arch_budget", "test_unmarked"}, out

    def failure(name: str) -> str:
        (f,) = results[name].findall("failure")
        return f.get("message") or ""

    assert "latency budget exceeded: median" in failure("test_over_budget")
    assert "> budget 1e-05 ms" in failure("test_over_budget")
    assert "the unit test itself" in failure("test_body_fails_first")
    assert "missing the budget" in failure("test_no_budget")
    assert "field 'model': model file not found" in failure("test_missing_model")
    assert "field 'device': unknown device 'phone:1'" in failure("test_unknown_device")
    assert "unknown keyword(s) rnus" in failure("test_typo")
    # the measured numbers are test properties, so they reach JUnit XML
    props = {p.get("name"): p.get("value")
             for p in results["test_within_budget"].iter("property")}
    assert float(props["latency_median_ms"]) > 0 and props["latency_verdict"] == "pass"
    assert props["latency_budget_ms"] == "1000.0"
    # a test whose body failed is not measured
    assert not list(results["test_body_fails_first"].iter("property"))
    assert "latency budgets (mnas)" in out
    assert "PASS         test_latency.py::test_within_budget: median" in out
    assert "OVER         test_latency.py::test_over_budget" in out
    assert "Traceback" not in out


def meas(samples: list[float] | np.ndarray) -> Measurement:
    return Measurement.from_samples(samples, warmup=0, threads=1, runtime="onnxruntime",
                                    runtime_version="1", model_sha256="0" * 64, device="local:x")


def test_budget_verdict_uses_the_confidence_interval() -> None:
    assert budget_verdict(9.0, 9.9, 10.0) == "pass"
    assert budget_verdict(9.0, 10.0, 10.0) == "pass"
    assert budget_verdict(10.01, 11.0, 10.0) == "over"
    assert budget_verdict(9.5, 10.5, 10.0) == "inconclusive"


def test_noisy_measurement_straddling_the_budget_is_inconclusive_not_a_pass() -> None:
    rng = np.random.default_rng(0)
    noisy = meas(10.0 * np.exp(rng.normal(0.0, 0.15, 25)))
    assert noisy.ci_low_ms < 10.0 < noisy.ci_high_ms
    budget = noisy.median_ms * 1.01    # median under budget, but the CI reaches over it
    verdict, msg = judge(noisy, budget, "net.onnx on local:x")
    assert verdict == "inconclusive"
    assert "straddles the budget" in msg and "inconclusive='pass'" in msg
    verdict, msg = judge(noisy, budget, "net.onnx", policy="pass")
    assert verdict == "inconclusive" and "accepted because inconclusive='pass'" in msg
    quiet = meas(10.0 * np.exp(rng.normal(0.0, 0.005, 25)))
    assert judge(quiet, 10.5) == ("pass", "")
    verdict, msg = judge(quiet, 9.0, "m")
    assert verdict == "over" and msg.startswith("latency budget exceeded: median 10.0")

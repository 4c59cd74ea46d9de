"""local:onnxruntime measures a real exported model with the adaptive protocol."""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest

from devices.base import get_device
from devices.local import LocalDevice, cpu_model
from latency.export import export_onnx, file_sha256
from latency.measurement import MeasureSettings
from tests.latency.tiny import SHAPE, tiny_model

FAST = MeasureSettings(warmup=2, runs=5, max_runs=20, rel_ci=0.5, max_seconds=5)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_model(), tmp_path_factory.mktemp("m") / "tiny.onnx",
                       input_shape=SHAPE)


def test_spec_and_registry() -> None:
    d = get_device("local:onnxruntime")
    assert isinstance(d, LocalDevice) and d.spec == "local:onnxruntime"
    assert d.model_format == "onnx"
    with pytest.raises(ValueError, match=r"local:nope.*valid: .*local:onnxruntime"):
        get_device("local:nope")
    with pytest.raises(ValueError, match="valid: .*local:onnxruntime"):
        get_device("local")


def test_fingerprint_is_stable_and_describes_host() -> None:
    a = get_device("local:onnxruntime").fingerprint()
    b = get_device("local:onnxruntime").fingerprint()
    assert a == b
    assert a["runtime"] == "onnxruntime" and a["runtime_version"] == onnxruntime.__version__
    assert a["cores"] >= 1 and a["machine"] and a["os"]
    assert a["cpu"] == cpu_model() and a["cpu"] != ""
    assert "timestamp" not in a and "time" not in a


def test_measure_real_model(model_path: Path) -> None:
    m = get_device("local:onnxruntime").measure(model_path, FAST)
    assert FAST.runs <= m.runs <= FAST.max_runs == 20
    assert len(m.samples_ms) == m.runs
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.ci_low_ms <= m.median_ms <= m.ci_high_ms
    assert m.model_sha256 == file_sha256(model_path)
    assert (m.threads, m.warmup, m.runtime) == (1, 2, "onnxruntime")
    assert m.device == "local:onnxruntime" and m.fingerprint["runtime"] == "onnxruntime"
    assert m.noisy == (m.rel_ci > FAST.rel_ci) and not m.cached


def test_impossible_precision_is_flagged_noisy(model_path: Path) -> None:
    strict = MeasureSettings(warmup=1, runs=5, max_runs=8, rel_ci=1e-9, max_seconds=5)
    m = get_device("local:onnxruntime").measure(model_path, strict)
    assert m.noisy and m.runs == 8


def test_bad_model_files(tmp_path: Path) -> None:
    d = get_device("local:onnxruntime")
    text = tmp_path / "x.onnx"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        d.measure(text, FAST)
    with pytest.raises(FileNotFoundError):
        d.measure(tmp_path / "missing.onnx", FAST)
    with pytest.raises(ValueError, match="not a regular file"):
        d.measure(tmp_path, FAST)


def test_cpu_clock_is_recorded(model_path: Path) -> None:
    s = MeasureSettings(warmup=1, runs=5, max_runs=10, rel_ci=0.5, clock="cpu")
    m = get_device("local:onnxruntime").measure(model_path, s)
    assert m.clock == "cpu" and m.median_ms > 0
    assert get_device("local:onnxruntime").measure(model_path, FAST).clock == "wall"


def test_measure_paired_times_both_models_alternately(model_path: Path, tmp_path: Path) -> None:
    from torch import nn

    big = export_onnx(nn.Sequential(nn.Conv2d(SHAPE[1], 64, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(64, 64, 3, padding=1)),
                      tmp_path / "big.onnx", input_shape=SHAPE)
    d = get_device("local:onnxruntime")
    m, ref = d.measure_paired(big, model_path, FAST)
    assert ref is not None and len(ref.samples_ms) == len(m.samples_ms) == m.runs
    assert m.model_sha256 == file_sha256(big) and ref.model_sha256 == file_sha256(model_path)
    assert ref.median_ms < m.median_ms            # each list timed its own model
    assert d.measure_paired(model_path, None, FAST)[1] is None
    with pytest.raises(FileNotFoundError):
        d.measure_paired(model_path, tmp_path / "missing.onnx", FAST)

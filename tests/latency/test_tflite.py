"""TFLite export with litert-torch (cached by model hash) and the local:litert runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="TFLite export needs the mnas[tflite] extra")
pytest.importorskip("ai_edge_litert", reason="local:litert needs the mnas[tflite] extra")

from devices.base import get_device  # noqa: E402
from latency.cache import MeasurementCache  # noqa: E402
from latency.estimate import MeasuredLatency  # noqa: E402
from latency.export import get_exporter  # noqa: E402
from latency.litert import load_interpreter  # noqa: E402
from latency.measurement import MeasureSettings  # noqa: E402
from latency.tflite import export_tflite, is_tflite, model_hash  # noqa: E402
from tests.latency.tiny import SHAPE, TinyLatencySpace, tiny_model  # noqa: E402

FAST = MeasureSettings(warmup=2, runs=5, max_runs=20, max_seconds=2.0)


def _run(path, x: np.ndarray) -> np.ndarray:
    it = load_interpreter(path, 1)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One NCHW and one NHWC conversion of the same tiny model, shared by the tests."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    root = tmp_path_factory.mktemp("tfl")
    cache = root / "cache"
    nchw = export_tflite(model, root / "m.tflite", input_shape=SHAPE, cache_dir=cache)
    nhwc = export_tflite(model, root / "m_nhwc.tflite", input_shape=SHAPE, nhwc=True,
                         cache_dir=cache)
    return model, root, cache, nchw, nhwc


def test_tflite_matches_torch(converted):
    model, _, _, nchw, _ = converted
    assert is_tflite(nchw)
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    got = _run(nchw, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_nhwc_option_takes_channels_last_input(converted):
    model, _, _, _, nhwc = converted
    it = load_interpreter(nhwc, 1)
    n, c, h, w = SHAPE
    assert tuple(it.get_input_details()[0]["shape"]) == (n, h, w, c)
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    got = _run(nhwc, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conversions_are_cached_by_model_hash(converted):
    model, root, cache, nchw, _ = converted
    entries = sorted(cache.glob("*.tflite"))
    assert len(entries) == 2  # NCHW and NHWC are different conversions
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    again = export_tflite(model, root / "again.tflite", input_shape=SHAPE, cache_dir=cache)
    assert again.read_bytes() == nchw.read_bytes()
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.tflite")} == stamps  # no rewrite
    # what keys the cache: weights, shape and layout each change the hash
    h = model_hash(model, SHAPE)
    assert model_hash(model, SHAPE) == h
    assert model_hash(model, SHAPE, nhwc=True) != h
    assert model_hash(model, (1, 3, 32, 32)) != h
    other = tiny_model().eval()
    other.load_state_dict(model.state_dict())
    assert model_hash(other, SHAPE) == h
    with torch.no_grad():
        other[0].weight[0, 0, 0, 0] += 1.0
    assert model_hash(other, SHAPE) != h


def test_local_litert_device_measures_tflite(converted):
    _, _, _, nchw, _ = converted
    dev = get_device("local:litert")
    assert dev.model_format == "tflite"
    m = dev.measure(nchw, FAST)
    assert m.runtime == "litert" and m.runtime_version.startswith("ai-edge-litert==")
    assert m.runs >= FAST.runs and m.median_ms > 0
    assert dev.fingerprint()["runtime"] == "litert"


def test_local_litert_refuses_a_file_that_is_no_tflite(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="not a TFLite model"):
        get_device("local:litert").measure(bad, FAST)


def test_measured_latency_exports_tflite_for_a_tflite_device(tmp_path, monkeypatch):
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    assert get_exporter("tflite") is export_tflite
    est = MeasuredLatency(get_device("local:litert"), FAST,
                          cache=MeasurementCache(tmp_path / "lat.db"), workdir=tmp_path / "w")
    space = TinyLatencySpace()
    m = est(space, space.decode("w4"))
    files = list((tmp_path / "w").glob("*"))
    assert [f.suffix for f in files] == [".tflite"] and is_tflite(files[0])
    assert m.runtime == "litert" and not m.cached
    assert est(space, space.decode("w4")).cached

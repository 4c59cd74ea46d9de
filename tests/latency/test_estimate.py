"""measure_model + MeasuredLatency + the ``measured`` scheme, on real models and ORT."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.base import get_device
from latency.cache import MeasurementCache
from latency.estimate import MeasuredLatency, measure_model
from latency.export import export_onnx, file_sha256
from latency.measurement import MeasureSettings
from mnas.evaluate import make_latency
from tests.latency.tiny import SHAPE, TinyArch, TinyLatencySpace, tiny_model

FAST = MeasureSettings(warmup=1, runs=5, max_runs=10, rel_ci=0.5, max_seconds=5)


@pytest.fixture
def device():
    d = get_device("local:onnxruntime")
    calls = []
    real = d.measure

    def measure(path, settings):
        calls.append(Path(path))
        return real(path, settings)

    d.measure = measure  # instance attribute: the real measurement still runs
    d.calls = calls
    return d


def test_measure_model_caches(tmp_path: Path, device) -> None:
    path = export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=SHAPE)
    cache = MeasurementCache(tmp_path / "c.db")
    first = measure_model(device, path, FAST, cache)
    second = measure_model(device, path, FAST, cache)
    assert len(device.calls) == 1
    assert not first.cached and second.cached
    assert second.median_ms == first.median_ms and second.samples_ms == first.samples_ms
    other = measure_model(device, path, MeasureSettings(warmup=1, runs=6, max_runs=10,
                                                        rel_ci=0.5), cache)
    assert len(device.calls) == 2 and not other.cached  # other settings: measured again
    measure_model(device, path, FAST, None)
    assert len(device.calls) == 3  # no cache: always measured
    # the same hardware asked for under another spec (a farm's route to it): the cached
    # record answers, naming the device it was asked for
    device.spec = "http://lab:8470/cpu"
    again = measure_model(device, path, FAST, cache)
    assert len(device.calls) == 3 and again.cached and again.device == "http://lab:8470/cpu"
    assert again.median_ms == first.median_ms


def test_measured_latency_builds_full_size_and_caches(tmp_path: Path, device) -> None:
    space = TinyLatencySpace()
    est = MeasuredLatency(device, FAST, cache=MeasurementCache(tmp_path / "c.db"),
                          workdir=tmp_path / "work")
    arch = TinyArch(8)
    m1 = est(space, arch)
    m2 = est(space, arch)
    assert space.built == [(arch, 10, 1.0), (arch, 10, 1.0)]  # deploy classes, width 1.0
    assert not m1.cached and m2.cached and len(device.calls) == 1
    exported = list((tmp_path / "work").glob("*.onnx"))
    assert len(exported) == 1 and file_sha256(exported[0]) == m1.model_sha256
    assert est.input_shape(space) == (1, 3, 16, 16)
    est(space, TinyArch(4))
    assert len(device.calls) == 2  # a different child is a different model


def test_resolution_and_classes_override(tmp_path: Path) -> None:
    import onnx

    space = TinyLatencySpace()
    est = MeasuredLatency(get_device("local:onnxruntime"), FAST, resolution=24, num_classes=5)
    path = est.export(space, TinyArch(4), tmp_path / "front" / "m.onnx")
    g = onnx.load(str(path)).graph
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 24, 24]
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [1, 5]
    assert space.built == [(TinyArch(4), 5, 1.0)]
    m = est(space, TinyArch(4))  # no workdir: temporary folder, no cache
    assert m.median_ms > 0 and not m.cached


def test_failures_are_runtime_errors() -> None:
    est = MeasuredLatency(get_device("local:onnxruntime"), FAST)
    with pytest.raises(RuntimeError, match=r"tiny_latency_test:w0: ONNX export failed.*cannot run"):
        est(TinyLatencySpace(), TinyArch(0))

    class Broken(TinyLatencySpace):
        def build(self, arch, num_classes=None, width_mult=1.0, in_channels=3):
            raise ValueError("no such block")

    with pytest.raises(RuntimeError, match=r"tiny_latency_test:w4: build failed: ValueError: no such block"):
        est(Broken(), TinyArch(4))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="devices.Device"):
        MeasuredLatency("local:onnxruntime")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution"):
        MeasuredLatency(get_device("local:onnxruntime"), resolution=0)


def test_measured_scheme_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    est = make_latency("measured", device="local:onnxruntime", settings=FAST, cache=None,
                       workdir=tmp_path / "w", resolution=16, seed=3)
    assert isinstance(est, MeasuredLatency)
    assert est.cache is not None and est.cache.path == tmp_path / "cache" / "latency.db"
    assert est.settings == FAST and est.resolution == 16
    m = est(TinyLatencySpace(), TinyArch(4))
    assert m.device == "local:onnxruntime" and len(est.cache) == 1
    none = make_latency("measured", device="local:onnxruntime", cache=False)
    assert none.cache is None and none.settings == MeasureSettings()
    with pytest.raises(ValueError, match="valid: .*local:onnxruntime"):
        make_latency("measured", device="local:nope")
    with pytest.raises(ValueError, match="takes no argument"):
        make_latency("measured:x", device="local:onnxruntime")


def test_anchored_children_are_scaled_to_the_references_nominal(tmp_path: Path, device) -> None:
    """``measured:anchored``: the reference (the space's first named arch) is measured
    alone once for its nominal; every child is then timed alternately with it and scaled
    by nominal / the reference's median in that same measurement."""
    paired = []
    real = device.measure_paired

    def measure_paired(path, ref, settings):
        out = real(path, ref, settings)
        if ref is not None:  # measure() is measure_paired without a reference
            paired.append((Path(path), Path(ref), out))
        return out

    device.measure_paired = measure_paired
    space = TinyLatencySpace()
    est = make_latency("measured:anchored", device=device.spec, settings=FAST,
                       workdir=tmp_path / "work")
    est.device = device  # the instrumented instance: same runtime, calls recorded
    assert est.anchor and "anchor=True" in repr(est)
    m = est(space, TinyArch(8))
    est(space, TinyArch(8))
    assert len(device.calls) == 5  # the reference alone, once, for its nominal
    ref_path, nominal = est.references[f"tiny_latency_test|{SHAPE}"]
    assert all(c == ref_path for c in device.calls) and nominal > 0
    assert len(paired) == 2 and all(r == ref_path for _, r, _ in paired)  # fresh each time
    child, ref = paired[0][2]
    f = nominal / ref.median_ms
    assert m.median_ms == pytest.approx(child.median_ms * f)
    assert m.samples_ms == pytest.approx([x * f for x in child.samples_ms])
    assert m.ci_high_ms == pytest.approx(child.ci_high_ms * f)
    assert m.noisy == child.noisy and not m.cached


def test_anchored_needs_a_reference_and_the_scheme_names_its_choices() -> None:
    class Unnamed(TinyLatencySpace):
        def named(self):
            return {}

    est = MeasuredLatency(get_device("local:onnxruntime"), FAST, anchor=True)
    with pytest.raises(RuntimeError, match="needs a reference network"):
        est(Unnamed(), TinyArch(4))
    with pytest.raises(ValueError, match="no argument or 'anchored'"):
        make_latency("measured:fast", device="local:onnxruntime")

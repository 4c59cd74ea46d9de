"""Paired measurement through the device farm: a model and a reference timed alternately
on the farm's device (``POST /devices/NAME/measure_paired``), so ``measured:anchored``,
a bench entry's ``reference`` and anchored tables work through a farm as they do here."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")

from devices.base import Device, get_device  # noqa: E402
from devices.local import LocalDevice  # noqa: E402
from latency.estimate import MeasuredLatency  # noqa: E402
from latency.export import export_onnx, file_sha256  # noqa: E402
from tests.farm_server import FAST, raw, running_farm  # noqa: E402
from tests.latency.tiny import SHAPE, TinyArch, TinyLatencySpace  # noqa: E402

pytestmark = pytest.mark.usefixtures("farm_env")


class Counting(LocalDevice):
    """The farm's local device, counting the pairs it times."""

    def __init__(self) -> None:
        super().__init__("local:onnxruntime")
        self.pairs: list[tuple[str, str]] = []

    def measure_paired(self, model_path, reference_path, settings):
        if reference_path is not None:
            self.pairs.append((file_sha256(model_path), file_sha256(reference_path)))
        return super().measure_paired(model_path, reference_path, settings)


class OneAtATime(Device):
    """A device that times one model at a time, as a phone's tool does."""

    spec = "fake:phone"
    model_format = "onnx"

    def __init__(self) -> None:
        self.local = LocalDevice()

    def fingerprint(self):
        return {"kind": "fake phone"}

    def measure(self, model_path, settings):
        return self.local.measure(model_path, settings)


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    from torch import nn

    return export_onnx(nn.Sequential(nn.Conv2d(SHAPE[1], 64, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(64, 64, 3, padding=1)),
                       tmp_path_factory.mktemp("big") / "big.onnx", input_shape=SHAPE)


def test_a_pair_is_timed_alternately_on_the_farms_device(onnx_model, big_model, tmp_path):
    cpu = Counting()
    with running_farm({"cpu": cpu}, workdir=tmp_path / "up") as (base, farm):
        assert farm.info("cpu")["can_pair"] is True
        dev = get_device(f"{base}/cpu")
        assert dev.can_pair
        m, ref = dev.measure_paired(big_model, onnx_model, FAST)
        assert cpu.pairs == [(file_sha256(big_model), file_sha256(onnx_model))]
        assert ref is not None and len(ref.samples_ms) == len(m.samples_ms) == m.runs
        assert m.model_sha256 == file_sha256(big_model)
        assert ref.model_sha256 == file_sha256(onnx_model)
        assert m.device == ref.device == f"{base}/cpu"
        assert m.fingerprint == ref.fingerprint == cpu.fingerprint()
        assert ref.median_ms < m.median_ms        # each list timed its own model
        assert dev.measure_paired(onnx_model, None, FAST)[1] is None    # one model: /measure
        assert len(cpu.pairs) == 1
        assert list((tmp_path / "up").iterdir()) == [] and farm.info("cpu")["queued"] == 0


def test_bad_pairs_are_one_line_422s_and_leave_nothing_behind(onnx_model, tmp_path):
    junk = b"not a model at all"
    model = onnx_model.read_bytes()
    n = len(model)
    devices = {"cpu": LocalDevice(), "phone": OneAtATime()}
    with running_farm(devices, workdir=tmp_path / "up") as (base, farm):
        assert farm.info("phone")["can_pair"] is False
        cases = [
            ("cpu", "", model + model, "split='': give the model's size in bytes"),
            ("cpu", "?split=0", model + model, "split='0'"),
            ("cpu", "?split=-3", model + model, "split='-3'"),
            ("cpu", f"?split={2 * n}", model + model,
             f"split={2 * n} leaves no reference model: the body has {2 * n} bytes"),
            ("cpu", f"?split={n}", model + junk,
             "the reference is not an ONNX model; device 'cpu' runs onnx models"),
            ("cpu", f"?split={len(junk)}", junk + model,
             "the upload is not an ONNX model; device 'cpu' runs onnx models"),
            ("cpu", f"?split={n}&runs=x", model + model, "setting runs='x' is not int"),
            ("cpu", "?split=%C2%B2", model + model, "split='²'"),       # a digit to isdigit
            ("cpu", "?split=" + "9" * 5000, model + model, "split='999"),
            ("phone", f"?split={n}", model + model,
             "device 'phone' times one model at a time (a phone's tool); measure_paired "
             "needs one of this farm's local runtimes; valid: cpu"),
        ]
        for name, query, body, detail in cases:
            status, answer, _ = raw(base, f"/devices/{name}/measure_paired{query}",
                                    method="POST", body=body)
            assert status == 422 and answer["detail"].startswith(detail), (query, answer)
            assert "\n" not in answer["detail"] and str(tmp_path) not in answer["detail"]
        assert list((tmp_path / "up").iterdir()) == []
        assert farm.info("cpu")["queued"] == farm.info("phone")["queued"] == 0
        # the client knows before it uploads, and says so the way a phone here does
        phone = get_device(f"{base}/phone")
        assert not phone.can_pair
        with pytest.raises(TypeError, match="times one model at a time"):
            phone.measure_paired(onnx_model, onnx_model, FAST)
        assert phone.measure_paired(onnx_model, None, FAST)[0].median_ms > 0
        with pytest.raises(ValueError, match=f"anchored measurement .*{base}/phone cannot"):
            MeasuredLatency(phone, anchor=True)


def test_anchored_children_and_a_bench_reference_through_a_farm(tmp_path, big_model,
                                                               onnx_model):
    """``measured:anchored`` times each child with its reference on the farm's device,
    and a bench entry with a ``reference`` records the paired samples."""
    from latency.suite import parse_suite, run_suite
    from mnas.evaluate import make_latency

    cpu = Counting()
    with running_farm({"cpu": cpu}) as (base, _):
        est = make_latency("measured:anchored", device=f"{base}/cpu", settings=FAST,
                           workdir=tmp_path / "work", cache=False)
        m = est(TinyLatencySpace(), TinyArch(8))
        ref_path, nominal = next(iter(est.references.values()))
        assert len(cpu.pairs) == 1 and cpu.pairs[0][1] == file_sha256(ref_path)
        assert m.device == f"{base}/cpu" and m.median_ms > 0 and nominal > 0
        defaults = {"warmup": 2, "runs": 5, "max_runs": 10, "rounds": 2,
                    "device": f"{base}/cpu"}
        suite = parse_suite({"defaults": defaults, "entry": [
            {"name": "canary", "model": str(onnx_model)},
            {"name": "app", "model": str(big_model), "reference": "canary"}]},
            tmp_path / "suite.toml")
        results = run_suite(suite)
    app = results.records["app"]
    assert len(cpu.pairs) == 3 and cpu.pairs[-1][0] == file_sha256(big_model)  # 2 rounds
    assert len(app.paired_ms) == len(app.measurement.samples_ms)
    assert not results.records["canary"].paired_ms


def test_the_farm_overhead_benchmark_compares_the_two_ways(monkeypatch, capsys):
    import runpy
    import sys

    root = Path(__file__).resolve().parents[2]
    monkeypatch.setattr(sys, "argv", ["farm_overhead.py", "--conv-only", "--repeats", "1",
                                      "--runs", "5", "--paired"])
    runpy.run_path(str(root / "benchmarks" / "farm_overhead.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "through the farm" in ln]
    assert [ln.split()[0] for ln in lines] == ["single", "paired"], out
    assert all("farm / here" in ln for ln in lines)


def test_a_farm_that_cannot_store_a_pair_says_so_in_one_line(onnx_model, tmp_path,
                                                             monkeypatch):
    import errno

    import devices.farm_app

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(devices.farm_app.shutil, "copyfileobj", full)
    model = onnx_model.read_bytes()
    with running_farm({"cpu": LocalDevice()}, workdir=tmp_path / "up") as (base, farm):
        status, answer, _ = raw(base, f"/devices/cpu/measure_paired?split={len(model)}",
                                method="POST", body=model + model)
        assert status == 507 and answer["detail"] == \
            "the farm could not store the upload: No space left on device"
        assert list((tmp_path / "up").iterdir()) == [] and farm.info("cpu")["queued"] == 0

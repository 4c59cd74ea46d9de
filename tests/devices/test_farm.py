"""The device farm's server, end to end: the real Starlette app under uvicorn on a
loopback port, measured through with the real client (``http://HOST:PORT/NAME``)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")

from devices.base import get_device  # noqa: E402
from devices.local import LocalDevice  # noqa: E402
from devices.remote import RemoteDevice  # noqa: E402
from latency.export import file_sha256  # noqa: E402
from tests.farm_server import FAST, TOKEN, Gated, measure_at_once, raw, running_farm  # noqa: E402
from tests.latency.tiny import SHAPE, tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("farm_env")


def test_a_model_is_measured_through_the_farm_as_on_the_device(onnx_model, tmp_path):
    local = LocalDevice("local:onnxruntime")
    with running_farm({"cpu": local}, workdir=tmp_path / "uploads") as (base, farm):
        dev = get_device(f"{base}/cpu")
        assert isinstance(dev, RemoteDevice) and dev.model_format == "onnx"
        assert dev.fingerprint() == local.fingerprint()
        m = dev.measure(onnx_model, FAST)
        assert m.device == f"{base}/cpu" and m.fingerprint == local.fingerprint()
        assert m.runtime == "onnxruntime" and m.model_sha256 == file_sha256(onnx_model)
        assert m.median_ms > 0 and FAST.runs <= m.runs <= FAST.max_runs and m.warmup == 2
        assert list((tmp_path / "uploads").iterdir()) == []      # the upload is gone
        status, listing, _ = raw(base, "/devices")
        assert status == 200 and [d["name"] for d in listing["devices"]] == ["cpu"]
        assert listing["devices"][0]["queued"] == 0


def test_every_route_but_health_needs_the_token(onnx_model):
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        assert raw(base, "/health", token=None)[:2] == (200, {"ok": True})
        for token in (None, "wrong-token-0123456789"):
            for path, method in (("/devices", "GET"), ("/devices/cpu", "GET"),
                                 ("/devices/cpu/measure", "POST")):
                status, body, headers = raw(base, path, method=method, token=token,
                                            body=onnx_model.read_bytes())
                assert status == 401 and "bearer token" in body["detail"]
                assert headers.get("www-authenticate") == "Bearer"
        with pytest.raises(ValueError, match="refused the token.*MNAS_FARM_TOKEN"):
            RemoteDevice(f"{base}/cpu", token="wrong-token-0123456789")


def test_bad_requests_are_one_line_4xx_naming_the_valid_choices(onnx_model, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    devices = {"cpu": LocalDevice(), "tfl": LocalDevice("local:litert")}
    with running_farm(devices, max_upload_bytes=4096,
                      workdir=tmp_path / "uploads") as (base, _):
        model = onnx_model.read_bytes()
        cases = {
            "/devices/gpu": (404, "unknown device 'gpu'; valid: cpu, tfl"),
            "/devices/gpu/measure": (404, "unknown device 'gpu'; valid: cpu, tfl"),
            "/devices/cpu/measure?threads=0": (422, "valid: 1 to 64 on this farm"),
            "/devices/cpu/measure?runs=2": (422, "valid: 3 to 1000 on this farm"),
            "/devices/cpu/measure?threads=two": (422, "threads='two' is not int"),
            "/devices/cpu/measure?clock=sundial": (422, "unknown clock 'sundial'; valid"),
            "/devices/cpu/measure?nthreads=2": (422, "unknown setting 'nthreads'; valid: "
                                                     "threads, warmup, runs"),
        }
        for path, (code, text) in cases.items():
            method = "POST" if path.split("?")[0].endswith("measure") else "GET"
            status, body, _ = raw(base, path, method=method, body=model if method == "POST"
                                  else None)
            assert (status, text in body["detail"]) == (code, True), (path, body)
        # a wrong method or path names what is valid (Starlette's own say only "Method
        # Not Allowed" / "Not Found")
        status, body, headers = raw(base, "/devices/cpu/measure")
        assert status == 405 and headers.get("allow") == "POST"
        assert body["detail"] == "GET is not allowed on /devices/cpu/measure; valid: POST"
        status, body, _ = raw(base, "/device/cpu")
        assert status == 404 and body["detail"].startswith("no route /device/cpu; valid: "
                                                           "GET /health, GET /devices,")
        for name, data, code, text in (
                ("cpu", b"", 400, "empty body"),
                ("cpu", junk.read_bytes(), 422, "not an ONNX model; device 'cpu' runs onnx"),
                ("tfl", model, 422, "not a TFLite model"),
                ("cpu", b"x" * 5000, 413, "larger than this farm accepts (4096 bytes)")):
            status, body, _ = raw(base, f"/devices/{name}/measure", method="POST", body=data)
            assert status == code and text in body["detail"] and "\n" not in body["detail"]
        # a chunked upload announces no length: the stream itself is cut at the limit
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
        conn.request("POST", "/devices/cpu/measure", body=iter([b"y" * 3000] * 3),
                     headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413 and "4096 bytes" in json.loads(r.read())["detail"]
        conn.close()
        # the client turns a refused upload into ValueError (a failed trial in a search)
        with pytest.raises(ValueError, match="not an ONNX model"):
            RemoteDevice(f"{base}/cpu").measure(junk, FAST)
        with pytest.raises(ValueError, match="unknown device 'gpu'; valid: cpu, tfl"):
            get_device(f"{base}/gpu")
        assert list((tmp_path / "uploads").iterdir()) == []     # nothing left behind


def test_one_measurement_at_a_time_per_device_and_devices_in_parallel(onnx_model):
    a_started, b_started = threading.Event(), threading.Event()
    # a waits until b has started and b until a has: only parallel queues finish both
    a, b = Gated(gate=b_started, opens=a_started), Gated(gate=a_started, opens=b_started)
    with running_farm({"a": a, "b": b}) as (base, _):
        results = measure_at_once([f"{base}/a", f"{base}/a", f"{base}/a", f"{base}/b"],
                               onnx_model)
    assert all(getattr(m, "median_ms", 0) > 0 for m in results), results
    assert a.most == 1 and b.most == 1


def test_a_full_queue_is_a_503_the_client_retries(onnx_model):
    gate, started = threading.Event(), threading.Event()
    slow = Gated(gate=gate, opens=started)
    with running_farm({"a": slow}, max_queue=1, retry_after_s=1) as (base, farm):
        first = threading.Thread(target=lambda: RemoteDevice(f"{base}/a").measure(
            onnx_model, FAST), daemon=True)
        first.start()
        assert started.wait(20)
        status, body, headers = raw(base, "/devices/a/measure", method="POST",
                                    body=onnx_model.read_bytes())
        assert status == 503 and "1 requests queued" in body["detail"]
        assert headers.get("retry-after") == "1"
        with pytest.raises(RuntimeError, match="answered 503"):
            RemoteDevice(f"{base}/a", retries=0).measure(onnx_model, FAST)
        # refused, then measured after Retry-After once the first has finished (a loaded
        # host may need more than one wait)
        opener = threading.Timer(0.3, gate.set)
        opener.start()
        assert RemoteDevice(f"{base}/a", retries=5).measure(onnx_model, FAST).median_ms > 0
        first.join(30)
        assert slow.most == 1 and farm.info("a")["queued"] == 0


def test_a_stalled_upload_is_cut_off_and_frees_its_place(tmp_path):
    import socket

    with running_farm({"cpu": LocalDevice()}, max_queue=1, upload_stall_s=0.5,
                      workdir=tmp_path / "up") as (base, farm):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(f"POST /devices/cpu/measure HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
                      .encode() + b"x" * 10)       # then nothing more
            answer = b""
            while b"the upload stalled" not in answer:  # headers and body may come apart
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and "the upload stalled" in answer
        assert farm.info("cpu")["queued"] == 0 and list((tmp_path / "up").iterdir()) == []


def test_settings_out_of_range_are_422_before_the_upload_is_read(onnx_model):
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        for query, text in (("runs=1000000000", "runs='1000000000' is out of range; valid: "
                                                "3 to 1000"),
                            ("warmup=5000", "0 to 1000"), ("threads=100000", "1 to 64"),
                            ("max_seconds=nan", "out of range"), ("max_seconds=inf", "range"),
                            ("max_seconds=0", "must be > 0"), ("rel_ci=-1", "out of range")):
            status, body, _ = raw(base, f"/devices/cpu/measure?{query}", method="POST",
                                  body=onnx_model.read_bytes())
            assert status == 422 and text in body["detail"], (query, body)


def test_an_onnx_model_with_external_data_is_refused(onnx_model, tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(onnx_model))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, str(tmp_path / "ext.onnx"))
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        status, body, _ = raw(base, "/devices/cpu/measure", method="POST",
                              body=(tmp_path / "ext.onnx").read_bytes())
    assert status == 422 and "external data" in body["detail"]


def test_the_queue_owns_a_queued_upload_and_its_place(onnx_model, tmp_path):
    """A request cancelled while its model is measured (a client gone, a shutdown) must
    neither delete the file under the device nor free the place while it still works."""
    import shutil

    from devices.farm import Farm

    gate = threading.Event()
    farm = Farm({"a": Gated(gate=gate)}, TOKEN, workdir=tmp_path / "up")
    try:
        upload = Path(shutil.copy(onnx_model, tmp_path / "up" / "x.onnx"))
        assert farm.reserve("a")
        fut = farm.submit("a", [upload], FAST)  # and nobody waits for it
        time.sleep(0.2)
        assert upload.exists() and farm.info("a")["queued"] == 1
        gate.set()
        assert fut.result(30).median_ms > 0
        for _ in range(100):
            if farm.info("a")["queued"] == 0:
                break
            time.sleep(0.01)
        assert not upload.exists() and farm.info("a")["queued"] == 0
        # closing the farm cancels what waits in the queue, and its upload goes too
        gate.clear()
        running, waiting = (Path(shutil.copy(onnx_model, tmp_path / "up" / f"{n}.onnx"))
                            for n in ("running", "waiting"))
        assert farm.reserve("a") and farm.reserve("a")
        farm.submit("a", [running], FAST)
        farm.submit("a", [waiting], FAST)
        closing = threading.Thread(target=farm.close)
        closing.start()
        time.sleep(0.2)
        gate.set()
        closing.join(30)
        assert not closing.is_alive() and list((tmp_path / "up").iterdir()) == []
    finally:
        gate.set()
        farm.close()


def test_a_failing_device_is_a_502_with_its_reason(onnx_model, tmp_path):
    class Broken(Gated):
        def measure(self, model_path, settings):
            raise RuntimeError(f"benchmark_model crashed on {model_path}")

    with running_farm({"a": Broken()}, workdir=tmp_path / "up") as (base, farm):
        with pytest.raises(RuntimeError, match="answered 502: device 'a' failed: "
                           "benchmark_model crashed on the upload"):
            RemoteDevice(f"{base}/a").measure(onnx_model, FAST)
        assert farm.info("a")["queued"] == 0 and list((tmp_path / "up").iterdir()) == []


def test_a_device_the_farm_cannot_reach_is_a_504_the_client_calls_unreachable(onnx_model):
    """An unplugged phone is not the model's fault: the client raises DeviceUnreachable,
    so a search stops (to be resumed) instead of failing its children one by one."""
    from devices.base import DeviceUnreachable

    class Unplugged(Gated):
        def measure(self, model_path, settings):
            raise DeviceUnreachable("adb device A: connecting failed after 3 attempts")

    class Broken(Gated):
        def measure(self, model_path, settings):
            raise RuntimeError("benchmark_model crashed")

    with running_farm({"a": Unplugged(), "b": Broken()}) as (base, _):
        with pytest.raises(DeviceUnreachable, match="device 'a' is unreachable: adb device "
                           "A: connecting failed"):
            RemoteDevice(f"{base}/a").measure(onnx_model, FAST)
        with pytest.raises(RuntimeError, match="answered 502") as info:
            RemoteDevice(f"{base}/b").measure(onnx_model, FAST)
        assert not isinstance(info.value, DeviceUnreachable)


@pytest.mark.parametrize("error, status", [(MemoryError, "502"), (ValueError, "422")])
def test_a_model_that_breaks_the_runtime_leaves_the_device_serving(onnx_model, error, status):
    """A model whose declared shapes cannot be allocated (MemoryError) or that the runtime
    refuses (ValueError): its own answer, and the device serves the next request (before,
    it was never given back: every later request hung, then the queue answered 503)."""
    class Fragile(Gated):
        calls = 0

        def measure(self, model_path, settings):
            Fragile.calls += 1
            if Fragile.calls == 1:
                raise error("Unable to allocate 7.28 TiB for an array")
            return super().measure(model_path, settings)

    with running_farm({"a": Fragile()}, max_queue=2) as (base, farm):
        dev = RemoteDevice(f"{base}/a", timeout_s=20)
        with pytest.raises((RuntimeError, ValueError), match="7.28 TiB") as info:
            dev.measure(onnx_model, FAST)
        assert status in str(info.value) or isinstance(info.value, ValueError)
        for _ in range(3):      # more than the queue holds: each is answered
            assert dev.measure(onnx_model, FAST).median_ms > 0
        assert farm.info("a")["queued"] == 0


def test_a_phone_through_the_farm(tmp_path, monkeypatch):
    pytest.importorskip("adb_shell", reason="adb devices need the mnas[adb] extra")
    pytest.importorskip("litert_torch", reason="TFLite export needs the mnas[tflite] extra")
    from latency.tflite import export_tflite
    from tests.fakes.adbd import fake_adbd

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tfl = export_tflite(tiny_model().eval(), tmp_path / "tiny.tflite", input_shape=SHAPE,
                        cache_dir=tmp_path / "cache")
    with fake_adbd(preinstalled=True) as d:
        phone = get_device(f"adb:{d.address}")
        with running_farm({"pixel": phone}, fingerprint_ttl_s=0) as (base, farm):
            dev = get_device(f"{base}/pixel")
            assert dev.model_format == "tflite" and dev.fingerprint()["model"] == "Fake Pixel"
            m = dev.measure(tfl, FAST)
            # the phone is updated while the farm runs: it is served as it is now
            d.props["ro.build.version.sdk"] = "34"
            updated = dev.measure(tfl, FAST)
            assert farm.info("pixel")["fingerprint"]["sdk"] == "34"
            assert dev.fingerprint()["sdk"] == "34"     # the client follows it
        assert m.runtime == "benchmark_model" and m.median_ms > 0
        assert m.fingerprint["sdk"] == "33" and updated.fingerprint["sdk"] == "34"
        assert any(c[0] == "taskset" for c in d.commands)

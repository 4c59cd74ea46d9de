"""adb:<host>:<port> through adb-shell against the loopback daemon, end to end.

The daemon times the pushed model with LiteRT on this host and prints the real tools'
output; the device pushes, pins, parses, cleans up, fingerprints, waits for cooling and
retries dropped connections.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("adb_shell", reason="adb devices need the mnas[adb] extra")
pytest.importorskip("litert_torch", reason="TFLite export needs the mnas[tflite] extra")

from devices.adb import AdbDevice, is_tcp, make_adb_device, split_spec  # noqa: E402
from devices.base import get_device  # noqa: E402
from latency.cache import MeasurementCache  # noqa: E402
from latency.estimate import MeasuredLatency, measure_model  # noqa: E402
from latency.export import export_onnx  # noqa: E402
from latency.measurement import MeasureSettings  # noqa: E402
from latency.tflite import export_tflite  # noqa: E402
from tests.fakes.adbd import fake_adbd  # noqa: E402
from tests.latency.tiny import SHAPE, TinyLatencySpace, tiny_model  # noqa: E402

FAST = MeasureSettings(warmup=2, runs=6, max_runs=30, max_seconds=3.0)
WEIRD = "we ird 'q' \"dq\"; $(touch pwned) `id` & | >x"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    net = tiny_model().eval()
    tfl = export_tflite(net, root / f"{WEIRD}.tflite", input_shape=SHAPE,
                        cache_dir=root / "cache")
    onnx = export_onnx(net, root / "plain.onnx", SHAPE)
    return tfl, onnx


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """adb's key goes to a private ~/.android; no user config file is read."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path / "none.toml"))


def _pushed(d) -> list[str]:
    return sorted(p.name for p in d.path("/data/local/tmp").rglob("*") if p.is_file())


def test_measure_end_to_end_through_get_device(models, tmp_path):
    tfl, _ = models
    with fake_adbd(preinstalled=True) as d:
        dev = get_device(f"adb:{d.address}")
        assert isinstance(dev, AdbDevice) and dev.model_format == "tflite"
        fp = dev.fingerprint()
        assert (fp["model"], fp["board"], fp["sdk"]) == ("Fake Pixel", "fake8150", "33")
        assert fp["cpu_max_khz"] == [d.cpus[c] for c in sorted(d.cpus)]
        assert fp["governors"] == ["schedutil"] * 8 and len(fp["tool_sha256"]) == 64
        m = dev.measure(tfl, FAST)
        dev.close()
        assert m.runtime == "benchmark_model" and m.sample_kind == "invocation_median"
        assert m.device == f"adb:{d.address}" and m.fingerprint == fp
        assert len(m.samples_ms) >= dev.min_invocations and m.median_ms > 0
        assert m.runs >= FAST.runs
        runs = [c for c in d.commands if c[0] == "taskset"]
        assert runs and all(c[1] == "80" for c in runs)  # the prime core of the 1+3+4 phone
        assert runs[0][2:] == ["/data/local/tmp/benchmark_model",
                               f"--graph=/data/local/tmp/mnas-{m.model_sha256[:12]}-{tfl.name}",
                               "--num_threads=1", "--warmup_runs=2", "--num_runs=2"]
        assert _pushed(d) == ["benchmark_model"]  # the model was removed again
        assert d.refused == []
    assert (tmp_path / "home" / ".android" / "adbkey").is_file()  # adb's own key, created


def test_names_with_shell_metacharacters_are_quoted_everywhere(models, tmp_path):
    tfl, _ = models
    binary = tmp_path / f"bm {WEIRD}"
    binary.write_bytes(b"\x7fELF pushed benchmark_model\n")
    key = tmp_path / f"key {WEIRD}"
    device_dir = f"/data/local/tmp/{WEIRD}"
    with fake_adbd() as d:
        dev = make_adb_device(f"adb:{d.address}", benchmark_binary=str(binary),
                              device_dir=device_dir, key=str(key))
        m = dev.measure(tfl, FAST)
        tool = d.path(f"{device_dir}/benchmark_model")
        assert tool.read_bytes() == binary.read_bytes()  # pushed when missing, executable
        dev.close()
        assert not tool.exists()  # removed with everything else we pushed
        assert _pushed(d) == [] and d.refused == []
        assert not any((p / "pwned").exists() for p in (d.root, d.root / "data/local/tmp"))
        graph = [c for c in d.commands if c[0] == "taskset"][0][3]
        assert graph == f"--graph={device_dir}/mnas-{m.model_sha256[:12]}-{tfl.name}"
    assert key.is_file() and (tmp_path / f"key {WEIRD}.pub").is_file()


def test_a_phone_without_the_tool_and_no_binary_fails_with_the_reason(models):
    with fake_adbd() as d:
        dev = get_device(f"adb:{d.address}")
        with pytest.raises(RuntimeError, match="benchmark_binary=PATH"):
            dev.measure(models[0], FAST)
        dev.close()


def test_a_dropped_connection_is_retried(models):
    with fake_adbd(preinstalled=True, drop_benchmarks=2) as d:
        dev = make_adb_device(f"adb:{d.address}?retries=3&backoff_s=0.01")
        m = dev.measure(models[0], FAST)
        dev.close()
        assert m.median_ms > 0
        assert d.benchmarks > 2  # two invocations were cut off, later ones completed
        assert sum(1 for e in d.events if e[0] == "cnxn") >= 3  # reconnected after each drop
        assert _pushed(d) == ["benchmark_model"]


def test_after_the_last_retry_the_measurement_fails_with_a_clear_reason(models):
    with fake_adbd(preinstalled=True, drop_benchmarks=1000) as d:
        dev = make_adb_device(f"adb:{d.address}", retries=1, backoff_s=0.01)
        with pytest.raises(RuntimeError, match=r"failed after 2 attempts \(unreachable or connection lost\)"):
            dev.measure(models[0], FAST)
        dev.close()
        assert d.benchmarks == 2


def test_waits_for_the_phone_to_cool(models):
    with fake_adbd(preinstalled=True, temps_c=(51.0, 30.0), cool_per_read_c=2.5) as d:
        dev = make_adb_device(f"adb:{d.address}", max_temp_c=45.0, cool_poll_s=0.01)
        m = dev.measure(models[0], FAST)
        reads = [c for c in d.commands if c[:1] == ["cat"] and c[-1].endswith("/temp")]
        assert len(reads) == 4  # 51 -> 48.5 -> 46 -> 43.5: three polls above the limit
        assert dev.last_temperature_c == pytest.approx(43.5)
        assert m.median_ms > 0
        dev.close()


def test_a_phone_that_stays_hot_gives_a_noisy_result(models):
    with fake_adbd(preinstalled=True, temps_c=(60.0,)) as d:
        dev = make_adb_device(f"adb:{d.address}", max_temp_c=45.0, cool_timeout_s=0.05,
                              cool_poll_s=0.01)
        m = dev.measure(models[0], FAST)
        dev.close()
        assert m.noisy and dev.last_temperature_c == pytest.approx(60.0)


@pytest.mark.parametrize("fmt,kind", [("modern", "invocation_median"),
                                      ("no_percentiles", "invocation_mean"),
                                      ("legacy", "invocation_mean"),
                                      ("summary", "invocation_mean")])
def test_every_benchmark_model_output_format(models, fmt, kind):
    with fake_adbd(preinstalled=True, benchmark_format=fmt) as d:
        dev = get_device(f"adb:{d.address}")
        m = dev.measure(models[0], FAST)
        dev.close()
        assert m.sample_kind == kind and m.median_ms > 0


def test_onnxruntime_perf_test_for_onnx_models(models, tmp_path):
    _, onnx = models
    binary = tmp_path / "onnxruntime_perf_test"
    binary.write_bytes(b"\x7fELF onnxruntime_perf_test\n")
    with fake_adbd() as d:
        dev = make_adb_device(f"adb:{d.address}", tool="onnxruntime_perf_test",
                              benchmark_binary=str(binary))
        assert dev.model_format == "onnx"
        m = dev.measure(onnx, FAST)
        dev.close()
        cmd = [c for c in d.commands if c[0] == "taskset"][0]
        assert cmd[2:9] == ["/data/local/tmp/onnxruntime_perf_test", "-e", "cpu", "-m",
                            "times", "-r", "2"]
        assert cmd[9:] == ["-x", "1", "-I", "-s", cmd[-1]] and cmd[-1].endswith("plain.onnx")
        assert m.runtime == "onnxruntime_perf_test" and m.sample_kind == "invocation_median"
        with pytest.raises(ValueError, match="not an ONNX model"):
            dev.measure(models[0], FAST)


def test_cached_results_never_cross_fingerprints(models, tmp_path):
    cache = MeasurementCache(tmp_path / "lat.db")
    tfl = models[0]
    with fake_adbd(preinstalled=True) as a, fake_adbd(
            preinstalled=True, props={"ro.product.model": "Other Phone"}) as b:
        first = measure_model(get_device(f"adb:{a.address}"), tfl, FAST, cache)
        again = measure_model(get_device(f"adb:{a.address}"), tfl, FAST, cache)
        other = measure_model(get_device(f"adb:{b.address}"), tfl, FAST, cache)
    assert not first.cached and again.cached and not other.cached
    assert again.sample_kind == "invocation_median"  # survives the cache


def test_measured_latency_exports_tflite_for_the_phone(tmp_path, monkeypatch):
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    space = TinyLatencySpace()
    with fake_adbd(preinstalled=True) as d:
        est = MeasuredLatency(get_device(f"adb:{d.address}"), FAST, workdir=tmp_path / "w")
        m = est(space, space.decode("w4"))
        assert m.runtime == "benchmark_model"
        assert [p.suffix for p in (tmp_path / "w").iterdir()] == [".tflite"]


@pytest.mark.parametrize("every", [0.0, None])
def test_a_long_search_reads_an_updated_phones_fingerprint_again(tmp_path, every):
    """A phone updated between two children: with the fingerprint read again, the second
    is measured, recorded and cached as the phone is now; never re-read, it is not."""
    space = TinyLatencySpace()
    cache = MeasurementCache(tmp_path / "cache.db")
    with fake_adbd(preinstalled=True) as d:
        est = MeasuredLatency(get_device(f"adb:{d.address}"), FAST, cache=cache,
                              fingerprint_every_s=every)
        before = est(space, space.decode("w4"))
        d.props["ro.build.version.sdk"] = "34"
        after = est(space, space.decode("w8"))
        again = est(space, space.decode("w4"))     # a cached child, asked for again
    assert before.fingerprint["sdk"] == "33"
    new = "34" if every is not None else "33"
    assert after.fingerprint["sdk"] == new
    assert again.fingerprint["sdk"] == new, "the updated phone is measured, not the cache"
    assert again.model_sha256 == before.model_sha256
    assert again.cached == (every is None)


def test_spec_parsing_and_options(tmp_path, monkeypatch):
    assert split_spec("adb:10.0.0.2:5555?retries=1&key=%2Fk") == (
        "10.0.0.2:5555", {"retries": "1", "key": "/k"})
    assert split_spec("adb:R58M 'x'") == ("R58M 'x'", {})
    assert is_tcp("10.0.0.2:5555") and is_tcp("[::1]:5555") and is_tcp("phone.lan:5037")
    assert not is_tcp("R58M1234") and not is_tcp("emulator-5554")
    for bad in ("adb:", "adb:?retries=1"):
        with pytest.raises(ValueError, match="names no device"):
            get_device(bad)
    with pytest.raises(ValueError, match="unknown adb option.*valid: "):
        make_adb_device("adb:1.2.3.4:5555?colour=red")
    with pytest.raises(ValueError, match="retries='many'"):
        make_adb_device("adb:1.2.3.4:5555?retries=many")
    with pytest.raises(ValueError, match="tool 'perf' invalid"):
        make_adb_device("adb:1.2.3.4:5555", tool="perf")
    cfg = tmp_path / "devices.toml"
    cfg.write_text('[adb]\nretries = 7\nmax_temp_c = 40.0\n\n[[adb.device]]\n'
                   'address = "1.2.3.4:5555"\nretries = 2\n')
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
    dev = make_adb_device("adb:1.2.3.4:5555")
    assert (dev.retries, dev.max_temp_c) == (2, 40.0)
    assert make_adb_device("adb:1.2.3.4:5555?retries=0").retries == 0  # the spec wins
    assert make_adb_device("adb:9.9.9.9:5555").retries == 7
    cfg.write_text("[adb\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        make_adb_device("adb:1.2.3.4:5555")


def test_unreachable_device_fails_after_retries(models):
    """A phone that cannot be connected to is unreachable (a search stops); one whose
    connection drops mid-benchmark is not (the model may be at fault: a failed child)."""
    from devices.base import DeviceUnreachable

    dev = make_adb_device("adb:127.0.0.1:1", retries=1, backoff_s=0.01, connect_timeout_s=2)
    with pytest.raises(DeviceUnreachable, match="connection lost"):
        dev.fingerprint()
    with fake_adbd(preinstalled=True, drop_benchmarks=1000) as d:
        dev = make_adb_device(f"adb:{d.address}", retries=1, backoff_s=0.01)
        with pytest.raises(RuntimeError) as info:
            dev.measure(models[0], FAST)
        dev.close()
    assert not isinstance(info.value, DeviceUnreachable)


def test_a_usb_serial_that_is_not_attached_fails_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb binary: adb-shell's USB transport only
    monkeypatch.chdir(tmp_path)
    dev = make_adb_device(f"adb:{WEIRD}", retries=1, backoff_s=0.01)
    with pytest.raises(RuntimeError, match="failed after 2 attempts.*(Usb|usb|USB)"):
        dev.fingerprint()
    assert not (tmp_path / "pwned").exists()

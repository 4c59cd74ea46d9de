"""Measuring untrusted model files in a child process (``LocalDevice(isolate=True)``), as
the farm does: a model that never finishes or crashes its runtime costs one request."""

from __future__ import annotations

import shutil
import sys
import time

import pytest

from devices.local import LocalDevice
from latency import isolated
from latency.export import file_sha256
from tests.farm_server import FAST, raw
from tests.latency.tiny import endless_onnx


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    path = tmp_path_factory.mktemp("endless") / "loop.onnx"
    endless_onnx(path)
    return path


def test_isolated_measurements_are_the_in_process_ones(onnx_model, tmp_path):
    dev = LocalDevice(isolate=True, timeout_s=60)
    m, ref = dev.measure_paired(onnx_model, onnx_model, FAST)
    assert m.model_sha256 == ref.model_sha256 == file_sha256(onnx_model)
    assert FAST.runs <= m.runs == ref.runs <= FAST.max_runs and m.median_ms > 0
    assert m.fingerprint == LocalDevice().fingerprint() and m.device == "local:onnxruntime"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not an ONNX model"):  # bad input, as in-process
        dev.measure(junk, FAST)
    with pytest.raises(FileNotFoundError):
        dev.measure(tmp_path / "missing.onnx", FAST)


def test_a_model_that_never_finishes_is_stopped_at_the_timeout(endless):
    dev = LocalDevice(isolate=True, timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish measuring .*loop.onnx within 2 s"):
        dev.measure(endless, FAST)
    assert time.monotonic() - t0 < 20


def test_a_runtime_that_crashes_is_a_failed_measurement(onnx_model, monkeypatch):
    """A crafted file that segfaults the runtime kills the child, not the caller."""
    monkeypatch.setattr(isolated, "worker_argv", lambda: [
        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    with pytest.raises(RuntimeError, match=r"onnxruntime crashed while measuring .*SIGSEGV"):
        LocalDevice(isolate=True).measure(onnx_model, FAST)


def test_a_stopping_farm_stops_the_measurement_it_is_running(endless, tmp_path):
    from devices.farm import Farm

    dev = LocalDevice(isolate=True, timeout_s=300)
    farm = Farm({"cpu": dev}, "test-token-0123456789abcdef")
    upload = tmp_path / "upload.onnx"
    shutil.copy(endless, upload)
    fut = farm.submit("cpu", [upload], FAST)
    deadline = time.monotonic() + 20
    while not dev._live._procs and time.monotonic() < deadline:  # the child has started
        time.sleep(0.05)
    t0 = time.monotonic()
    farm.close()
    assert time.monotonic() - t0 < 10       # not the 300 s the model would take
    with pytest.raises(RuntimeError, match="was stopped: the device is closing"):
        fut.result(timeout=10)
    assert not upload.exists()


def test_the_farm_command_isolates_uploads(endless, onnx_model, tmp_path, capsys):
    """``mnas farm serve`` measures its own CPU's uploads isolated, with --measure-timeout:
    the endless model is a 502 and the device goes on serving."""
    import os
    import socket
    import subprocess

    pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")
    from devices.remote import RemoteDevice
    from mnas.cli import main
    from tests.farm_server import TOKEN

    for bad in ("0", "nan", "-5"):
        assert main(["farm", "serve", "--measure-timeout", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--measure-timeout must be in (0, 86400]" in err[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MNAS_FARM_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnas", "farm", "serve", "--port", str(port),
         "--measure-timeout", "3", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if raw(base, "/health", token=None)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        dev = RemoteDevice(f"{base}/local-onnxruntime", token=TOKEN, retries=0, timeout_s=60)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="502.*did not finish measuring.*within 3 s"):
            dev.measure(endless, FAST)
        assert time.monotonic() - t0 < 30
        assert dev.measure(onnx_model, FAST).median_ms > 0      # still serving
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("command", ["latency", "bench"])
def test_latency_and_bench_stop_a_model_file_that_never_finishes(endless, tmp_path, command):
    """A model file from a pull request or a user is measured like a farm upload: a
    runtime that never returns is one line at --measure-timeout, not a hung CI job."""
    from tests.cli_run import mnas

    if command == "latency":
        args = ["latency", str(endless), "--no-cache"]
    else:
        suite = tmp_path / "suite.toml"
        suite.write_text(f'[[entry]]\nname = "loop"\nmodel = "{endless}"\n')
        args = ["bench", "run", str(suite), "--out", str(tmp_path / "r.json")]
    t0 = time.monotonic()
    p = mnas(*args, "--measure-timeout", "2", cache=tmp_path / "cache", timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "did not finish measuring" in p.stderr and "within 2 s" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "r.json").exists()

"""The loopback daemon speaks real ADB: Debian's ``adb`` client drives it.

Each test uses a private adb server (``ANDROID_ADB_SERVER_PORT``) and a private HOME (so
``~/.android/adbkey`` is created in the temporary folder) and kills that server at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess

import pytest

from tests.fakes.adbd import fake_adbd, unquoted_metachar

ADB = shutil.which("adb")
needs_adb = pytest.mark.skipif(ADB is None, reason="Debian's adb client is not installed "
                               "(apt-get install adb; .ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb(tmp_path):
    """Run the adb client against a private server; yields ``adb(*args) -> stdout``."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(_free_port())}
    env.pop("ANDROID_SERIAL", None)

    def run(*args: str, check: bool = True) -> str:
        p = subprocess.run([ADB, *args], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} failed: {p.stdout}{p.stderr}")
        return p.stdout + p.stderr

    run.home, run.env = home, env
    yield run
    subprocess.run([ADB, "kill-server"], env=env, capture_output=True, timeout=30, check=False)


def _connect(adb, d) -> str:
    adb("connect", d.address)
    adb("-s", d.address, "wait-for-device")
    return d.address


@needs_adb
def test_adb_connects_with_rsa_auth_and_reads_props(adb):
    with fake_adbd() as d:
        serial = _connect(adb, d)
        assert f"{serial}\tdevice" in adb("devices")
        listing = adb("devices", "-l")
        assert "model:Fake_Pixel" in listing
        assert adb("-s", serial, "shell", "getprop", "ro.product.model").strip() == "Fake Pixel"
        assert adb("-s", serial, "shell", "cat",
                   "/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq").strip() == "2841600"
        # first connection: unknown key -> the host offers its public key (the phone's prompt)
        assert ("auth", "publickey") in d.events
        assert (adb.home / ".android" / "adbkey").is_file()
        # reconnect: the daemon now knows the key and verifies adb's RSA signature
        adb("disconnect", serial)
        _connect(adb, d)
        assert ("auth", "signature") in d.events


@needs_adb
def test_adb_push_and_pull_round_trip_binary_data(adb, tmp_path):
    payload = os.urandom(300_000)  # several sync DATA chunks and WRTE packets
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    with fake_adbd() as d:
        serial = _connect(adb, d)
        adb("-s", serial, "push", str(src), "/data/local/tmp/blob.bin")
        assert d.path("/data/local/tmp/blob.bin").read_bytes() == payload
        assert "blob.bin" in adb("-s", serial, "shell", "ls", "/data/local/tmp")
        back = tmp_path / "back.bin"
        adb("-s", serial, "pull", "/data/local/tmp/blob.bin", str(back))
        assert back.read_bytes() == payload
        adb("-s", serial, "shell", "rm", "/data/local/tmp/blob.bin")
        assert not d.path("/data/local/tmp/blob.bin").exists()
        assert "does not exist" in adb("-s", serial, "pull", "/data/local/tmp/blob.bin",
                                     str(tmp_path / "none.bin"), check=False)


@needs_adb
def test_adb_shell_runs_the_benchmark_tool_and_refuses_unquoted_metacharacters(adb, tmp_path):
    from devices.android import parse_benchmark_model

    model = tmp_path / "m.tflite"
    with fake_adbd(preinstalled=True) as d:
        serial = _connect(adb, d)
        out = adb("-s", serial, "shell", "taskset", "80", "/data/local/tmp/benchmark_model",
                  "--graph=/data/local/tmp/missing.tflite", "--num_runs=3")
        assert "Failed to load model" in out
        with pytest.raises(ValueError):
            parse_benchmark_model(out)
        # adb joins its arguments into one command line: an unquoted ';' reaches the shell
        out = adb("-s", serial, "shell", "echo", "a;", "rm", "-f", str(model))
        assert "refused" in out and d.refused == ["echo a; rm -f " + str(model)]
        quoted = adb("-s", serial, "shell", shlex.join(["echo", "a; $(rm -rf /)"]))
        assert quoted.strip() == "a; $(rm -rf /)"


@pytest.mark.parametrize("line,bad", [
    ("echo a; b", ";"), ("echo $(id)", "$"), ("echo `id`", "`"), ("a | b", "|"),
    ("a > f", ">"), ('echo "$HOME"', "$"), ("echo 'a;b' \"c\"", None),
    ("echo a\\;b", None), (shlex.join(["x", "it's; $(rm -rf /) `id` \"q\""]), None),
])
def test_unquoted_metacharacter_detection(line, bad):
    assert unquoted_metachar(line) == bad


@needs_adb
def test_mnas_devices_lists_local_runtimes_server_and_config_phones(adb, tmp_path,
                                                                     monkeypatch, capsys):
    from mnas.cli import main

    for k in ("HOME", "ANDROID_ADB_SERVER_PORT"):
        monkeypatch.setenv(k, adb.env[k])
    with fake_adbd(preinstalled=True) as a, fake_adbd(
            preinstalled=True, props={"ro.product.model": "Config Phone"}) as b, fake_adbd() as c:
        cfg = tmp_path / "devices.toml"
        cfg.write_text(f'[[adb.device]]\naddress = "{b.address}"\n\n'
                       f'[[adb.device]]\naddress = "{c.address}"\n')
        monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
        _connect(adb, a)
        assert main(["devices", "--json"]) == 0
        rows = {r["spec"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
        assert rows["local:onnxruntime"]["usable"] is True
        server = rows[f"adb:{a.address}"]
        assert server["usable"] and server["source"] == "adb server"
        assert server["fingerprint"]["model"] == "Fake Pixel" and server["model"] == "Fake_Pixel"
        config = rows[f"adb:{b.address}"]
        assert config["usable"] and config["fingerprint"]["model"] == "Config Phone"
        lacking = rows[f"adb:{c.address}"]  # no benchmark_model and no binary to push
        assert lacking["usable"] is False and "benchmark_binary" in lacking["error"]
        assert main(["devices"]) == 0
        text = capsys.readouterr().out
        assert f"adb:{b.address}" in text and "Config Phone" in text and "UNUSABLE" in text


def test_parse_adb_devices_listing():
    from mnas.cli.devices_cmd import parse_adb_devices

    text = ("* daemon started successfully\nList of devices attached\n"
            "R58M1234ABC            device usb:1-1 product:flame model:Pixel_4 device:flame "
            "transport_id:2\n192.168.1.20:5555      unauthorized transport_id:3\n"
            "emulator-5554          offline\n\n")
    rows = parse_adb_devices(text)
    assert rows == [
        {"serial": "R58M1234ABC", "state": "device", "usb": "1-1", "product": "flame",
         "model": "Pixel_4", "device": "flame", "transport_id": "2"},
        {"serial": "192.168.1.20:5555", "state": "unauthorized", "transport_id": "3"},
        {"serial": "emulator-5554", "state": "offline"}]


@needs_adb
def test_measuring_through_the_adb_server_quotes_every_argument(adb, tmp_path, monkeypatch):
    """transport=server: the phone is reached with the adb binary (argument lists; the one
    shell string adb forwards is built with shlex.join)."""
    pytest.importorskip("litert_torch")
    import torch

    from devices.adb import make_adb_device
    from latency.measurement import MeasureSettings
    from latency.tflite import export_tflite
    from tests.latency.tiny import SHAPE, tiny_model

    for k in ("HOME", "ANDROID_ADB_SERVER_PORT"):
        monkeypatch.setenv(k, adb.env[k])
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    weird = "m 'q' \"d\"; $(touch pwned) `id`"
    model = export_tflite(tiny_model().eval(), tmp_path / f"{weird}.tflite", input_shape=SHAPE,
                          cache_dir=tmp_path / "cache")
    with fake_adbd(preinstalled=True) as d:
        _connect(adb, d)
        dev = make_adb_device(f"adb:{d.address}", transport="server",
                              device_dir=f"/data/local/tmp/{weird}")
        binary = tmp_path / "benchmark_model"
        binary.write_bytes(b"\x7fELF benchmark_model\n")
        dev.benchmark_binary = binary
        m = dev.measure(model, MeasureSettings(warmup=1, runs=3, max_runs=9, max_seconds=2))
        dev.close()
        assert m.runtime == "benchmark_model" and m.median_ms > 0
        assert m.fingerprint["model"] == "Fake Pixel"
        assert d.refused == [] and not (tmp_path / "pwned").exists()
        assert any(c[:2] == ["taskset", "80"] and c[3].endswith(f"{weird}.tflite")
                   for c in d.commands)
        assert not d.path(f"/data/local/tmp/{weird}/benchmark_model").exists()
    bad = make_adb_device(f"adb:{weird}", transport="server", retries=0)
    with pytest.raises(RuntimeError, match="not found|absent|failed"):
        bad.fingerprint()
    assert not (tmp_path / "pwned").exists()

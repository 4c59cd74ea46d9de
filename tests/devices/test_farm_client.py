"""The device farm's client and command line: specs, tokens, TLS, redirects, restarts,
``mnas farm serve``, ``mnas devices`` and ``mnas latency`` against the real server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error

import pytest

pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")

from devices.base import DeviceUnreachable, get_device  # noqa: E402
from devices.local import LocalDevice  # noqa: E402
from devices.remote import on_this_host, split_spec  # noqa: E402
from mnas.cli import main  # noqa: E402
from tests.farm_server import FAST, TOKEN, raw, running_farm, self_signed  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("farm_env")


def test_a_measurement_outlives_a_farm_restart(onnx_model):
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        dev = get_device(f"{base}/cpu")
    with pytest.raises(ValueError, match="cannot reach the device farm"):
        get_device(f"{base}/cpu")               # the first request is not retried
    dev.retries = 0
    with pytest.raises(DeviceUnreachable, match="cannot reach the device farm"):
        dev.measure(onnx_model, FAST)           # a search stops, to be resumed
    up, done = threading.Event(), threading.Event()

    def restart() -> None:
        time.sleep(0.5)
        with running_farm({"cpu": LocalDevice()}, port=int(base.rsplit(":", 1)[1])):
            up.set()
            done.wait(60)

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        dev.retries = 3                         # refused, then again after 1, 2, 4 s
        m = dev.measure(onnx_model, FAST)
    finally:
        done.set()
        thread.join(30)
    assert up.is_set() and m.median_ms > 0


def test_https_with_the_farms_own_certificate(onnx_model, tmp_path, monkeypatch, capsys):
    pytest.importorskip("cryptography", reason="the test makes its certificate with it")
    cert, key = self_signed(tmp_path)
    with running_farm({"cpu": LocalDevice()}, tls=(cert, key)) as (base, _):
        assert base.startswith("https://")
        with pytest.raises(ValueError, match="certificate is not trusted.*MNAS_FARM_CA"):
            get_device(f"{base}/cpu")                 # not trusted: said in one line
        monkeypatch.setenv("MNAS_FARM_CA", cert)
        assert get_device(f"{base}/cpu").measure(onnx_model, FAST).median_ms > 0
        with pytest.raises(ValueError, match="cannot reach|not a farm"):   # no plain http
            get_device(base.replace("https", "http") + "/cpu")
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")       # a certificate of another key
    assert main(["farm", "serve", "--port", "0", "--tls-cert", other, "--tls-key", key]) == 2
    assert "do not load as a certificate and its key" in capsys.readouterr().err
    assert main(["farm", "serve", "--port", "0", "--tls-cert", cert]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_plain_http_beyond_this_host_is_noted():
    from mnas.cli.farm_cmd import clear_text_note

    assert "in the clear" in clear_text_note("0.0.0.0", False)
    assert "in the clear" in clear_text_note("192.168.1.20", False)
    assert clear_text_note("0.0.0.0", True) is None
    assert clear_text_note("127.0.0.1", False) is None and clear_text_note("::1", False) is None


def test_a_token_goes_only_to_its_own_farm(tmp_path):
    from devices.remote import server_options

    cfg = {"farm": {"server": [{"url": "https://lab:8470", "token": "lab"},
                               {"url": "http://gw/farm", "token": "gw"}]}}
    assert server_options("https://lab:8470", cfg)["token"] == "lab"
    assert server_options("https://LAB:8470/", cfg)["token"] == "lab"
    assert server_options("http://gw/farm/sub", cfg)["token"] == "gw"
    for other in ("https://lab.attacker.example:8470", "http://lab:8470", "https://lab:8471",
                  "https://lab", "http://gw/farmer", "http://gw"):
        assert server_options(other, cfg) == {}, other


def test_redirects_and_other_services_are_refused_in_one_line():
    import http.server

    seen: list[str | None] = []

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            if self.path.startswith("/elsewhere"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"model_format": "onnx", "fingerprint": {}}')
            elif self.path.startswith("/devices/list"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"[1, 2]")
            elif self.path.startswith("/devices/bin"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"\xff\xfe not json")
            else:
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with pytest.raises(ValueError, match="redirects to /elsewhere; redirects are not "
                           "followed"):
            get_device(f"{base}/cpu")
        assert seen == [f"Bearer {TOKEN}"]      # the redirect target never saw the token
        for name in ("list", "bin"):
            with pytest.raises(ValueError, match="answer is not a JSON object"):
                get_device(f"{base}/{name}")
    finally:
        srv.shutdown()
        srv.server_close()
    with socket_speaking(b"SSH-2.0-OpenSSH_9.6\r\n") as port, pytest.raises(
            ValueError, match="does not answer as a device farm"):
        get_device(f"http://127.0.0.1:{port}/cpu")


@contextlib.contextmanager
def socket_speaking(line: bytes):
    """A TCP server that answers every connection with ``line`` and closes it."""
    import socket

    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(line)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_specs_and_hosts():
    assert split_spec("http://lab:8470/pixel") == ("http://lab:8470", "pixel")
    assert split_spec("https://lab.example/farm/pixel-7") == ("https://lab.example/farm",
                                                              "pixel-7")
    for bad in ("http://lab:8470/", "http://lab:8470", "ftp://lab/x", "http:///x",
                "http://lab/x?y=1", "http://lab:99999/x", "http://lab/b@d"):
        with pytest.raises(ValueError, match="valid form: http://HOST:PORT/NAME"):
            split_spec(bad)
    with pytest.raises(ValueError, match="no credentials in the URL"):
        split_spec("http://me:secret@lab/x")
    assert [on_this_host(s) for s in ("http://127.0.0.1:1/a", "http://localhost/a",
                                      "http://[::1]/a", "http://lab/a", "http://10.0.0.2/a")
            ] == [True, True, True, False, False]


def test_cli_bad_input_is_one_line_and_exit_2(capsys, onnx_model):
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        # a port already taken, a name given twice, an unknown device
        port = base.rsplit(":", 1)[1]
        for argv, text in (
                (["farm", "serve", "--port", port], f"cannot listen on 127.0.0.1:{port}"),
                (["farm", "serve", "--port", "0", "--device", "local:onnxruntime",
                  "--device", "local:onnxruntime"], "is already served as"),
                (["farm", "serve", "--port", "0", "--device", "tpu:v5"], "unknown device"),
                (["farm", "serve", "--port", "0", "--max-upload-mb", "inf"],
                 "--max-upload-mb must be in ["),
                (["farm", "serve", "--port", "0", "--max-upload-mb", "1e-9"],
                 "--max-upload-mb must be in ["),
                (["latency", str(onnx_model), "--device", f"{base}/gpu"],
                 "unknown device 'gpu'; valid: cpu"),
                (["latency", str(onnx_model), "--device", "http://127.0.0.1:1/cpu"],
                 "cannot reach the device farm at http://127.0.0.1:1")):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert text in err and err.count("\n") == 1, err


def test_devices_lists_a_farm_and_notes_one_it_cannot_reach(capsys, tmp_path, monkeypatch):
    cfg = tmp_path / "devices.toml"
    monkeypatch.delenv("MNAS_FARM_TOKEN")
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        cfg.write_text(f'[[farm.server]]\nurl = "{base}"\ntoken = "{TOKEN}"\n\n'
                       '[[farm.server]]\nurl = "http://127.0.0.1:1"\n')
        monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
        assert main(["devices", "--json", "--no-fingerprint"]) == 0
        out = json.loads(capsys.readouterr().out)
        # the token came from the config entry whose url starts the spec
        assert get_device(f"{base}/cpu").measure  # no refusal
        assert main(["devices", "--no-fingerprint"]) == 0
        text = capsys.readouterr().out
    rows = [r for r in out["devices"] if r["kind"] == "farm"]
    assert [(r["spec"], r["farm_spec"], r["model_format"], r["can_pair"]) for r in rows] == [
        (f"{base}/cpu", "local:onnxruntime", "onnx", True)]
    assert "local:onnxruntime on a farm, times pairs, 0 queued" in text
    assert any(n.startswith("farm http://127.0.0.1:1: cannot reach") for n in out["notes"])


@pytest.mark.parametrize("answer", [{"foo": 1}, {"devices": [{"name": "x"}]},
                                    {"devices": {"x": {}}}])
def test_devices_notes_a_server_whose_answer_is_no_farms(capsys, tmp_path, monkeypatch,
                                                         answer):
    """Another service's JSON at a [[farm.server]] url: a note, not a traceback."""
    import devices.remote

    cfg = tmp_path / "devices.toml"
    cfg.write_text('[[farm.server]]\nurl = "http://127.0.0.1:18501"\n')
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
    monkeypatch.setattr(devices.remote, "call", lambda *a, **k: answer)
    assert main(["devices", "--json", "--no-fingerprint"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("http://127.0.0.1:18501 does not answer as a device farm" in n for n in notes)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_serve_command_starts_answers_and_stops_cleanly(tmp_path, stop):
    import os
    import signal
    import subprocess
    import sys

    token = tmp_path / "token"
    token.write_text("file-token-0123456789abcdef\n")
    (tmp_path / "tmp").mkdir()
    p = subprocess.Popen([sys.executable, "-m", "mnas", "farm", "serve", "--port", "0",
                          "--device", "cpu=local:onnxruntime", "--token-file", str(token),
                          "--log-level", "warning"], stdout=subprocess.PIPE,
                         env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
                         stderr=subprocess.PIPE, text=True, preexec_fn=lambda: (
                             os.setpgrp(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
    try:
        head = p.stdout.readline()
        assert head.startswith("mnas farm: http://127.0.0.1:"), head + p.stderr.read()
        base = head.split()[2]
        assert p.stdout.readline().split()[:2] == [f"{base}/cpu", "local:onnxruntime"]
        for _ in range(100):    # the socket listens before uvicorn serves
            try:
                status, body, _ = raw(base, "/devices", token="file-token-0123456789abcdef")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert status == 200 and body["devices"][0]["name"] == "cpu"
        assert raw(base, "/devices", token=TOKEN)[0] == 401   # the file's token, not env's
        assert len(list(tmp_path.glob("tmp/mnas-farm-*"))) == 1   # its private upload folder
    finally:
        os.killpg(p.pid, getattr(signal, stop))
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "mnas farm: stopped" in err, err
    assert "note" not in err                                # loopback: no clear-text note
    assert not list(tmp_path.glob("tmp/mnas-farm-*"))      # its upload folder is removed


def test_a_search_stops_when_its_farm_is_gone_and_resumes_without_a_failed_child(
        tmp_path, monkeypatch, capsys):
    """The farm unreachable mid-search (down, its host asleep): the search stops with the
    resume line (exit 3) instead of failing every child left, and the resumed search
    scores the child it was measuring."""
    import csv

    from devices.remote import RemoteDevice
    from tests.cli_run import NB201

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    real, calls = RemoteDevice.measure, []

    def flaky(self, model_path, settings):
        calls.append(model_path)
        if len(calls) == 3:     # the farm went away before the third child
            raise DeviceUnreachable(f"cannot reach the device farm at {self.base}: "
                                    "[Errno 111] Connection refused")
        return real(self, model_path, settings)

    out = tmp_path / "run"
    search = ["search", "--space", "nb201", "--accuracy", f"table:{NB201}#cifar100_acc",
              "--strategy", "random", "--target-ms", "5", "--runs", "5", "--warmup", "1",
              "--max-runs", "10", "--no-progress", "--no-export", "--seed", "3"]
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        monkeypatch.setattr(RemoteDevice, "measure", flaky)
        rc = main([*search, "--device", f"{base}/cpu", "--budget", "5", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 3, err
        assert "mnas: error: cannot reach the device farm at" in err
        assert "the search stopped rather than fail its remaining children" in err
        assert "2 of 5 children are saved; `mnas search --out" in err and "--resume` goes on" in err
        monkeypatch.setattr(RemoteDevice, "measure", real)
        assert main(["search", "--out", str(out), "--resume"]) == 0
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert [r["state"] for r in rows] == ["complete"] * 5
    assert sorted(int(r["number"]) for r in rows) == list(range(5))


@pytest.mark.parametrize("text, needle", [
    ('[[farm.servers]]\nurl = "http://x:1"\n', "unknown key farm.servers; valid: [[farm.server]]"),
    ('[foo]\nbar = 1\n', "unknown table [foo]; valid: [adb]"),
    ('[[adb.device]]\naddress = 5\n', "needs an address"),
    ('[[farm.server]]\nurl = 5\n', "needs a url"),
    ('not toml [', "is not valid TOML"),
])
def test_a_devices_toml_with_a_typo_is_one_line(tmp_path, monkeypatch, capsys, text, needle):
    """A misspelt table would drop its devices without a word; named instead."""
    cfg = tmp_path / "devices.toml"
    cfg.write_text(text)
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
    assert main(["devices", "--no-fingerprint"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and str(cfg) in err, err

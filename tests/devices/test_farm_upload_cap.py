"""A model over the farm's ``--max-upload-mb``: one line naming the cap, a failed trial in a
search, never "cannot reach the device farm" (the farm answers 413 before reading such a
body and closes, and a client still sending sees only a reset); the server still bounds
what it reads of any body."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")

from devices.base import DeviceUnreachable  # noqa: E402
from devices.local import LocalDevice  # noqa: E402
from devices.remote import RemoteDevice  # noqa: E402
from mnas.cli import main  # noqa: E402
from tests.farm_server import FAST, TOKEN, Gated, raw, running_farm  # noqa: E402

pytestmark = pytest.mark.usefixtures("farm_env")

MIB = 1 << 20


@pytest.fixture(scope="module")
def huge_model(tmp_path_factory) -> Path:
    """A real ONNX model of about 19 MB: far more than the socket buffers hold, so a farm
    that does not read it resets the connection while it is still being sent."""
    import torch
    from torch import nn

    from latency.export import export_onnx
    from tests.latency.tiny import SHAPE

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(SHAPE[1], 512, 3, padding=1),
                        nn.Conv2d(512, 512, 3, padding=1), nn.Conv2d(512, 512, 3, padding=1))
    path = export_onnx(net.eval(), tmp_path_factory.mktemp("huge") / "huge.onnx", SHAPE)
    assert path.stat().st_size > 16 * MIB
    return path


def test_latency_through_a_served_farm_names_its_cap_in_one_line(huge_model, tmp_path,
                                                                   capsys):
    """``mnas farm serve --max-upload-mb 1`` and ``mnas latency BIG.onnx --device …``: the
    cap, not "cannot reach the device farm … Connection reset by peer"."""
    (tmp_path / "tmp").mkdir()
    p = subprocess.Popen([sys.executable, "-m", "mnas", "farm", "serve", "--port", "0",
                          "--max-upload-mb", "1", "--log-level", "warning"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
                         start_new_session=True)
    try:
        head = p.stdout.readline()
        assert head.startswith("mnas farm: http://127.0.0.1:"), head + p.stderr.read()
        base = head.split()[2]
        for _ in range(100):    # the socket listens before uvicorn serves
            try:
                if raw(base, "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        argv = ["latency", str(huge_model), "--device", f"{base}/local-onnxruntime",
                "--no-cache", "--runs", "5", "--warmup", "1"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "the model file is larger than this farm accepts (1048576 bytes" in err, err
        assert err.count("\n") == 1 and "cannot reach" not in err
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.communicate(timeout=30)


def test_a_search_fails_the_children_over_the_farms_cap_and_goes_on(tmp_path, monkeypatch,
                                                                   capsys):
    """nb201 at C=48: the first child's model (3.6 MB) fits a 4 MiB cap, the next two
    (20 and 12 MB) do not; they are failed trials with that reason, not a stopped search
    (exit 3, as for a farm that is down)."""
    import csv

    from tests.cli_run import NB201

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with running_farm({"cpu": LocalDevice()}, max_upload_bytes=4 * MIB) as (base, _):
        rc = main(["search", "--space", "nb201", "--space-opt", "C=48", "--accuracy",
                   f"table:{NB201}#cifar100_acc", "--strategy", "random", "--target-ms", "5",
                   "--runs", "5", "--warmup", "1", "--max-runs", "10", "--no-progress",
                   "--no-export", "--seed", "3", "--device", f"{base}/cpu", "--budget", "3",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "cannot reach the device farm" not in err
    rows = {int(r["number"]): r for r in csv.DictReader(
        (out / "trials.csv").read_text().splitlines())}
    assert [rows[n]["state"] for n in range(3)] == ["complete", "failed", "failed"], rows
    for n in (1, 2):
        assert "the model file is larger than this farm accepts (4194304 bytes; it has" \
            in rows[n]["reason"], rows[n]


def test_a_farm_restarted_with_a_smaller_cap_is_not_taken_for_a_farm_that_is_down(
        huge_model):
    """The client knew a larger cap: the reset of its upload is the farm refusing it (asked
    again, it names a smaller cap), a failed child at once; a farm gone is still
    DeviceUnreachable."""
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        dev = RemoteDevice(f"{base}/cpu")           # told 64 MiB
    port = int(base.rsplit(":", 1)[1])
    with running_farm({"cpu": LocalDevice()}, port=port, max_upload_bytes=MIB):
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"larger than this farm accepts \(1048576 "
                                             r"bytes; it has \d+\)"):
            dev.measure(huge_model, FAST)
        assert time.monotonic() - start < 5      # not retried as a restart would be
        assert dev.max_upload == MIB
    dev.retries = 0
    with pytest.raises(ValueError, match="larger than this farm accepts"):
        dev.measure(huge_model, FAST)           # the cap it said: refused before sending
    dev.max_upload = None
    with pytest.raises(DeviceUnreachable, match="cannot reach the device farm"):
        dev.measure(huge_model, FAST)           # the farm is gone


@pytest.mark.parametrize("cap", [None, 64 * MIB])
def test_a_reset_upload_the_farm_does_not_refuse_for_its_size_is_still_unreachable(
        huge_model, cap):
    """A farm that resets an upload but says no smaller cap (one from before the key, or a
    reset for another reason): as before, the farm cannot be reached."""
    import http.server

    info = {"model_format": "onnx", "fingerprint": {"kind": "fake"}}
    if cap is not None:
        info["max_upload_bytes"] = cap

    class Farm(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps(info).encode())

        def do_POST(self):  # noqa: N802
            # close with the body unread and no lingering: the kernel resets the connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Farm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dev = RemoteDevice(f"http://127.0.0.1:{server.server_address[1]}/cpu", retries=0)
        with pytest.raises(DeviceUnreachable, match="cannot reach the device farm"):
            dev.measure(huge_model, FAST)
        info["max_upload_bytes"] = MIB      # the same farm now names a smaller cap
        with pytest.raises(ValueError, match=r"larger than this farm accepts \(1048576"):
            dev.measure(huge_model, FAST)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _post(base: str, length: int, body: bytes, path: str = "/devices/cpu/measure"
          ) -> tuple[int, str]:
    """(status, detail) of a POST announcing ``length`` bytes and sending ``body``, as
    urllib sends it (``Connection: close``: the server closes once it has answered)."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Connection", "close")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        conn.send(body)
        r = conn.getresponse()
        return r.status, json.loads(r.read())["detail"]
    finally:
        conn.close()


def test_a_farm_answers_a_refused_body_of_up_to_twice_its_cap(onnx_model):
    """Any client (curl, an older mnas): a body a little over the cap, or one refused for
    a full queue, gets its answer, not a reset; a stalled one is not waited for."""
    cap = 8 * MIB
    gate, started = threading.Event(), threading.Event()
    with running_farm({"cpu": LocalDevice(), "slow": Gated(gate=gate, opens=started)},
                      max_upload_bytes=cap, max_queue=1, upload_stall_s=1.0) as (base, farm):
        status, detail = _post(base, 2 * cap, b"x" * (2 * cap))
        assert (status, detail) == (413, f"the model file is larger than this farm accepts "
                                          f"({cap} bytes)")
        # refused for a full queue before its body was read: the 503, which is retried
        first = threading.Thread(target=lambda: RemoteDevice(f"{base}/slow").measure(
            onnx_model, FAST), daemon=True)
        first.start()
        assert started.wait(20)
        status, detail = _post(base, cap, b"x" * cap, "/devices/slow/measure")
        assert status == 503 and "1 requests queued" in detail
        gate.set()
        first.join(30)
        # stalled part-way through: answered after upload_stall_s in all, not waited on
        start = time.monotonic()
        assert _post(base, cap + MIB, b"x" * (cap + 1))[0] == 413
        assert time.monotonic() - start < 10
        assert farm.info("cpu")["queued"] == farm.info("slow")["queued"] == 0


def test_a_farm_reads_no_more_than_twice_its_cap_of_a_refused_body():
    """uvicorn reads a keep-alive client's body on to its end after an early answer: an
    endless one is cut off past twice the cap, and without the token not read at all."""
    cap = 8 * MIB
    with running_farm({"cpu": LocalDevice()}, max_upload_bytes=cap) as (base, farm):
        # a chunked stream without end (what the socket buffers hold aside)
        assert _endless(base, TOKEN) < 2 * cap + 64 * MIB
        assert _endless(base, "wrong-token-0123456789") < 64 * MIB
        assert farm.info("cpu")["queued"] == 0


def _endless(base: str, token: str) -> int:
    """Bytes sent of an endless chunked upload before the farm closed the connection."""
    sent = 0

    def chunks():
        nonlocal sent
        while sent < 512 * MIB:
            sent += 1 << 16
            yield b"y" * (1 << 16)

    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.request("POST", "/devices/cpu/measure", body=chunks(),
                         headers={"Authorization": f"Bearer {token}"}, encode_chunked=True)
            conn.getresponse().read()
    finally:
        conn.close()
    return sent

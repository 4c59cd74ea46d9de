"""`mnas search --device adb:HOST:PORT` end to end against the loopback phone.

The fake adbd speaks the real ADB protocol (tests/devices/test_adb_protocol.py drives it
with Debian's adb client); here the search pushes TFLite children to it, it times them
with LiteRT like `benchmark_model`, and it drops the connection in the middle of the
first benchmark so the retry path runs inside a real search — with two Ray workers, so the
phone times children while they train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.adbd import fake_adbd

ROOT = Path(__file__).resolve().parents[1]


def test_search_on_adb_device_with_a_dropped_connection(tmp_path):
    """Two workers: the children train as Ray tasks while the phone times them (overlap),
    and a connection dropped in the middle is retried."""
    out = tmp_path / "run"
    env = {**os.environ, "HOME": str(tmp_path), "MNAS_CACHE_DIR": str(tmp_path / "cache"),
           "MNAS_DEVICES_CONFIG": str(tmp_path / "devices.toml"), "OMP_NUM_THREADS": "1"}
    with fake_adbd(preinstalled=True, drop_benchmarks=1) as phone:
        device = f"adb:{phone.address}?backoff_s=0.2"
        r = subprocess.run(
            [sys.executable, "-m", "mnas", "search", "--space", "nasrl", "--strategy", "random",
             "--device", device, "--target-ms", "5", "--budget", "2", "--epochs", "1",
             "--batch-limit", "2", "--runs", "5", "--warmup", "1", "--no-progress",
             "--out", str(out), "--seed", "5", "--workers", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert phone.benchmarks >= 2, "every child was timed on the phone"
        assert not phone.refused, f"unquoted shell input reached the phone: {phone.refused}"
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["device"] == device and doc["trials"] == 2
    assert doc["completed"] == 2, "the dropped connection was retried, not a failed child"
    assert "2 workers (Ray)" in r.stderr
    assert "Token authentication is enabled" not in r.stderr   # Ray's notice: our default
    for row in doc["front"]:
        assert row["model"].endswith(".tflite") and (out / row["model"]).is_file()

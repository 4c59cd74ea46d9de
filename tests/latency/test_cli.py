"""``mnas latency`` on real exported models; bad input is one line and exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latency.export import export_onnx, file_sha256
from mnas.cli import main
from tests.latency.tiny import SHAPE, tiny_model

FAST = ["--warmup", "1", "--runs", "5", "--max-runs", "10", "--rel-ci", "0.5"]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return export_onnx(tiny_model(), tmp_path / "tiny.onnx", input_shape=SHAPE)


def test_json_record_then_cache_hit(model: Path, capsys: pytest.CaptureFixture, _cache_dir) -> None:
    assert main(["latency", str(model), "--json", *FAST]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["median_ms"] > 0 and rec["model_sha256"] == file_sha256(model)
    assert 5 <= rec["runs"] == len(rec["samples_ms"]) <= 10
    assert rec["device"] == "local:onnxruntime" and rec["runtime"] == "onnxruntime"
    assert rec["cached"] is False and isinstance(rec["noisy"], bool)
    for key in ("p10_ms", "p90_ms", "mad_ms", "ci_low_ms", "ci_high_ms", "rel_ci", "fingerprint"):
        assert key in rec
    assert (_cache_dir / "latency.db").is_file()
    assert main(["latency", str(model), "--json", *FAST]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cached"] is True and again["median_ms"] == rec["median_ms"]
    assert main(["latency", str(model), "--json", "--no-cache", *FAST]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is False


def test_human_summary(model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["latency", str(model), "--threads", "2", *FAST]) == 0
    out = capsys.readouterr().out
    for word in ("median", "p10/p90", "MAD", "95% CI", "runs", "noisy", "cached",
                 "2 threads", "wall clock", str(model)):
        assert word in out
    assert main(["latency", str(model), "--clock", "cpu", "--json", *FAST]) == 0
    assert json.loads(capsys.readouterr().out)["clock"] == "cpu"


def test_arch_of_the_mnasnet_space(capsys: pytest.CaptureFixture) -> None:
    # the real MobileNetV2 point, built full width, at a small input to keep the test fast
    assert main(["latency", "mobilenetv2", "--space", "mnasnet", "--resolution", "32",
                 "--classes", "10", "--json", *FAST]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["median_ms"] > 0 and len(rec["model_sha256"]) == 64


@pytest.mark.parametrize("argv, message", [
    (["MISSING"], "model file not found"),
    (["LOOP"], "model file .*loop.onnx cannot be resolved: a symbolic link loop"),
    (["BARELOOP"], "model file .*loop cannot be resolved: a symbolic link loop"),
    ([""], "^mnas: error: model file path is empty$"),
    (["TEXT"], "is not an ONNX model"),
    (["MODEL", "--device", "local:nope"], "'local:nope'; valid: .*local:onnxruntime"),
    (["MODEL", "--device", "pixel"], "unknown device 'pixel'"),
    (["MODEL", "--runs", "2"], "--runs must be >= 3"),
    (["MODEL", "--clock", "cpu", "--threads", "2"], "--clock cpu .* needs --threads 1"),
    (["MODEL", "--runs", "50", "--max-runs", "10"], r"--max-runs \(10\) must be >= --runs \(50\)"),
    (["not_an_arch_at_all", "--space", "mnasnet"], "not_an_arch_at_all"),
    (["mobilenetv2", "--space", "nope"], "unknown space 'nope'"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture,
                                      argv: list[str], message: str) -> None:
    text = tmp_path / "x.onnx"
    text.write_text("this is text\n")
    for name in ("loop.onnx", "loop"):   # `ln -s loop loop`: Path.exists says False
        (tmp_path / name).symlink_to(name)
    subst = {"MISSING": str(tmp_path / "missing.onnx"), "TEXT": str(text), "MODEL": str(model),
             "LOOP": str(tmp_path / "loop.onnx"), "BARELOOP": str(tmp_path / "loop")}
    assert main(["latency", *[subst.get(a, a) for a in argv]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnas: error: ")
    assert re.search(message, lines[0]), lines[0]


def test_console_entry_point_bad_file(tmp_path: Path) -> None:
    text = tmp_path / "x.onnx"
    text.write_text("text\n")
    env = {**os.environ, "MNAS_CACHE_DIR": str(tmp_path / "c2")}
    bad = subprocess.run([sys.executable, "-m", "mnas", "latency", str(text)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "is not an ONNX model" in bad.stderr

"""``mnas bench``: output paths and input files are checked before anything is measured or
any verdict printed (no real measurement: ``run_suite`` is replaced by a tripwire)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import latency.suite
from latency.bench_results import BenchRecord, BenchResults
from latency.measurement import Measurement
from mnas.cli import main


def _results(path: Path) -> Path:
    m = Measurement.from_samples(list(np.linspace(1.0, 1.1, 20)), warmup=1, threads=1,
                                 runtime="onnxruntime", runtime_version="1.0",
                                 model_sha256="a" * 64, device="local:onnxruntime",
                                 fingerprint={"kind": "local"})
    rec = BenchRecord.from_rounds("net", {"name": "net", "tolerance": 0.05}, [m])
    return BenchResults({"net": rec}).save(path)


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[object]) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""   # no verdict, no progress line before the error
    assert err.startswith("mnas: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("measured before the output path was checked")

    monkeypatch.setattr(latency.suite, "run_suite", tripwire)


@pytest.fixture
def suite_file(tmp_path: Path, bench_models: dict[str, Path]) -> Path:
    p = tmp_path / "suite.toml"
    p.write_text(f'[[entry]]\nname = "net"\nmodel = "{bench_models["narrow"]}"\n')
    return p


@pytest.mark.parametrize(("out", "force", "needle"), [
    ("DIR", True, "is a directory, expected a .json file path"),
    ("DIR", False, "is a directory"),
    ("FILE/r.json", True, "cannot create its folder"),
    ("/proc/x.json", True, "cannot create a file in /proc"),
], ids=["dir-force", "dir", "under-a-file", "unwritable"])
def test_run_checks_out_before_measuring(tmp_path: Path, suite_file: Path, no_measuring,
                                         capsys, out: str, force: bool, needle: str) -> None:
    if out.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("needs Linux's /proc")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("kept")
    target = out if out.startswith("/") else tmp_path / out
    err = _one_error(capsys, ["bench", "run", suite_file, "--out", target,
                              *(["--force"] if force else [])])
    assert needle in err and str(target) in err
    assert (tmp_path / "FILE").read_text() == "kept"


def test_run_names_a_suite_directory(tmp_path: Path, no_measuring, capsys) -> None:
    err = _one_error(capsys, ["bench", "run", tmp_path, "--out", tmp_path / "r.json"])
    assert f"suite file {tmp_path} is a directory" in err


@pytest.mark.parametrize(("flag", "target", "needle"), [
    ("--junit", "DIR", "--junit {} is a directory, expected a .xml file path"),
    ("--markdown", "FILE/pr.md", "--markdown {}: cannot create its folder"),
    ("--plot", "p.txt", "--plot {}: expected a .png file, got .txt"),
])
def test_compare_checks_report_paths_before_the_verdict(tmp_path: Path, capsys, flag: str,
                                                        target: str, needle: str) -> None:
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("kept")
    res = _results(tmp_path / "r.json")
    path = tmp_path / target
    err = _one_error(capsys, ["bench", "compare", res, res, flag, path])
    assert needle.format(path) in err
    assert not (tmp_path / "p.txt").exists()


def test_the_baseline_is_named_in_errors(tmp_path: Path, capsys) -> None:
    res = _results(tmp_path / "r.json")
    err = _one_error(capsys, ["bench", "compare", tmp_path / "nope.json", res])
    assert f"baseline not found: {tmp_path / 'nope.json'}" in err
    err = _one_error(capsys, ["bench", "compare", res, tmp_path / "nope.json"])
    assert "results file not found" in err
    (tmp_path / "loop.json").symlink_to("loop.json")   # not "not found": a link loop
    err = _one_error(capsys, ["bench", "compare", tmp_path / "loop.json", res])
    assert f"baseline {tmp_path / 'loop.json'} cannot be resolved: a symbolic link loop" in err
    (tmp_path / "DIR").mkdir()
    err = _one_error(capsys, ["bench", "baseline", "update", res, "--baseline",
                              tmp_path / "DIR"])
    assert f"--baseline {tmp_path / 'DIR'} is a directory" in err and "results file" not in err
    (tmp_path / "bad.json").write_text("{")
    err = _one_error(capsys, ["bench", "baseline", "update", res, "--baseline",
                              tmp_path / "bad.json"])
    assert f"baseline {tmp_path / 'bad.json'}: not valid JSON" in err
    assert (tmp_path / "bad.json").read_text() == "{"

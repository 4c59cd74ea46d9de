"""``mnas lut`` / ``mnas latency`` / the measurement cache: bad input and unusable output
paths are one line and exit 2, found before anything is measured (measuring is replaced
by tripwires here, so nothing is timed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import latency.lut_measure
from devices.base import get_device
from latency.cache import MeasurementCache
from latency.export import export_onnx
from latency.lut import LatencyTable, MnasnetUnits
from mnas.cli import main
from mnas.evaluate import make_latency
from tests.latency.tiny import SHAPE, tiny_model

LOW = 32


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))


def _table(path: Path, fingerprint: dict, resolution: int = LOW) -> Path:
    units = MnasnetUnits(resolution)
    rng = np.random.default_rng(0)
    return LatencyTable(space="mnasnet", resolution=resolution, num_classes=1000,
                        device="local:onnxruntime", fingerprint=fingerprint,
                        settings={"warmup": 1, "runs": 3, "max_runs": 3},
                        entries={u.key: float(rng.uniform(0.01, 0.05))
                                 for u in units.enumerate()}).save(path)


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[object]) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith("mnas: error: ") and err.count("\n") == 1, err
    return err


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[object]) -> str:
    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and err.count("\n") == 1, err
    return err


# -- lut eval / build ----------------------------------------------------------------------

@pytest.mark.parametrize(("rows", "needle"), [
    ("DIR", "--rows {} is a directory, expected a .json file path"),
    ("FILE/rows.json", "--rows {}: cannot create its folder"),
], ids=["dir", "under-a-file"])
def test_eval_checks_rows_before_measuring(tmp_path: Path, fingerprint, no_measuring, capsys,
                                          rows: str, needle: str) -> None:
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("kept")
    lut = _table(tmp_path / "t.json", fingerprint)
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "3", "--rows",
                              tmp_path / rows])
    assert needle.format(tmp_path / rows) in err
    assert (tmp_path / "FILE").read_text() == "kept"


def test_eval_makes_the_rows_folder_as_build_does(tmp_path: Path, fingerprint, capsys,
                                                  monkeypatch) -> None:
    lut = _table(tmp_path / "t.json", fingerprint)
    monkeypatch.setattr(latency.lut_measure, "evaluate_table",
                        lambda *a, **k: {"rows": [{"arch": "x"}], "anchored": False})
    rows = tmp_path / "new" / "sub" / "rows.json"
    assert main(["lut", "eval", "--lut", str(lut), "--n", "1", "--json", "--rows",
                 str(rows)]) == 0
    capsys.readouterr()
    assert json.loads(rows.read_text()) == [{"arch": "x"}]


def test_eval_names_the_fingerprint_keys_that_differ(tmp_path: Path, fingerprint,
                                                     capsys) -> None:
    lut = _table(tmp_path / "t.json", {**fingerprint, "runtime_version": "0.0"})
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "3"])
    assert (f"runtime_version '0.0' -> {fingerprint['runtime_version']!r}" in err
            and "{" not in err)


def test_table_paths_that_are_no_table(tmp_path: Path, no_measuring, capsys) -> None:
    err = _one_error(capsys, ["lut", "eval", "--lut", tmp_path])
    assert f"lookup table {tmp_path} is a directory" in err
    err = _one_error(capsys, ["lut", "eval", "--lut", tmp_path / "none.json"])
    assert err == f"mnas: error: lookup table not found: {tmp_path / 'none.json'}\n"
    (tmp_path / "DIR").mkdir()
    err = _one_error(capsys, ["lut", "build", "--resolution", LOW, "--out", tmp_path / "DIR"])
    assert "--out" in err and "is a directory" in err


def test_build_names_the_spaces_it_supports(capsys) -> None:
    err = _usage_error(capsys, ["lut", "build", "--space", "nb201", "--out", "x.json"])
    assert "invalid choice: 'nb201'" in err and "mnasnet" in err
    with pytest.raises(SystemExit):
        main(["lut", "build", "--help"])
    assert "mnasnet only" in " ".join(capsys.readouterr().out.split())


def test_cache_flags_contradicting_each_other_are_refused(tmp_path: Path, capsys) -> None:
    for argv in (["lut", "eval", "--lut", "t.json"], ["latency", "m.onnx"]):
        err = _usage_error(capsys, [*argv, "--no-cache", "--cache", tmp_path / "c.db"])
        assert "--cache" in err and "--no-cache" in err and "not allowed" in err


def test_lut_scheme_refuses_a_device_of_another_fingerprint(tmp_path: Path, fingerprint) -> None:
    path = _table(tmp_path / "t.json", fingerprint)
    assert make_latency(f"lut:{path}", device="local:onnxruntime").table.device == \
        "local:onnxruntime"
    other = _table(tmp_path / "o.json", {**fingerprint, "runtime": "other-rt"})
    with pytest.raises(ValueError, match="runtime 'other-rt' -> 'onnxruntime'") as ei:
        make_latency(f"lut:{other}", device="local:onnxruntime")
    assert "\n" not in str(ei.value) and "{" not in str(ei.value)


# -- mnas latency ----------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path: Path) -> Path:
    return export_onnx(tiny_model(), tmp_path / "tiny.onnx", input_shape=SHAPE)


@pytest.mark.parametrize(("extra", "needle"), [
    (["--classes", "5"], "--classes only applies to an ARCH"),
    (["--space", "mnasnet", "--resolution", "64"], "--space, --resolution only apply to an ARCH"),
])
def test_arch_only_flags_with_a_model_file_are_refused(model: Path, capsys, extra, needle,
                                                       monkeypatch) -> None:
    import latency.estimate

    monkeypatch.setattr(latency.estimate, "measure_model", lambda *a, **k: 1 / 0)
    err = _one_error(capsys, ["latency", model, *extra])
    assert needle in err


def test_a_missing_model_is_named_without_an_errno(tmp_path: Path, capsys) -> None:
    from latency.estimate import measure_model
    from latency.measurement import MeasureSettings

    missing = tmp_path / "none.onnx"
    err = _one_error(capsys, ["latency", missing])
    assert err == f"mnas: error: model file not found: {missing}\n"
    with pytest.raises(FileNotFoundError) as ei:
        measure_model(get_device("local:onnxruntime"), missing, MeasureSettings(),
                      MeasurementCache(tmp_path / "c.db"))
    assert str(ei.value) == f"model file not found: {missing}"
    from latency.litert import load_interpreter

    with pytest.raises(FileNotFoundError) as ei:
        load_interpreter(missing.with_suffix(".tflite"), 1)
    assert str(ei.value) == f"model file not found: {missing.with_suffix('.tflite')}"


def test_help_prints_plain_percent_signs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["latency", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out


# -- the measurement cache --------------------------------------------------------------------

def test_a_cache_that_is_no_database_is_one_line(tmp_path: Path, model: Path, capsys) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    with pytest.raises(ValueError, match=f"latency cache {junk}: file is not a database"):
        MeasurementCache(junk)
    assert junk.read_text() == "not sqlite"   # left as it was
    err = _one_error(capsys, ["latency", model, "--cache", junk])
    assert f"latency cache {junk}" in err
    (tmp_path / "FILE").write_text("kept")
    err = _one_error(capsys, ["latency", model, "--cache", tmp_path / "FILE" / "c.db"])
    assert "cannot create its folder" in err and "a file is in the way" in err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_a_cache_that_cannot_be_opened_is_one_line(model: Path, capsys) -> None:
    with pytest.raises(ValueError, match="latency cache /proc/x.db: unable to open"):
        MeasurementCache("/proc/x.db")
    err = _one_error(capsys, ["latency", model, "--cache", "/proc/x.db"])
    assert "latency cache /proc/x.db" in err


def test_a_search_on_a_phones_table_needs_no_phone(tmp_path: Path, capsys) -> None:
    """--latency lut: without --device searches for the table's own device (a phone that
    is not attached here: never contacted); with --device, that device must have the
    table's fingerprint, checked before anything is written."""
    import json

    units = MnasnetUnits(224)
    rng = np.random.default_rng(0)
    phone = "adb:127.0.0.1:1?retries=0"      # nothing listens there
    path = LatencyTable(space="mnasnet", resolution=224, num_classes=1000, device=phone,
                        fingerprint={"kind": "android", "model": "Pixel 7", "sdk": "34"},
                        settings={"warmup": 1, "runs": 3, "max_runs": 3},
                        entries={u.key: float(rng.uniform(0.01, 0.05))
                                 for u in units.enumerate()}).save(tmp_path / "phone.json")
    search = ["search", "--latency", f"lut:{path}", "--strategy", "random", "--budget", "1",
              "--epochs", "1", "--batch-limit", "2", "--target-ms", "10", "--no-progress",
              "--no-export"]
    err = _one_error(capsys, [*search, "--device", "local:onnxruntime",
                              "--out", tmp_path / "here"])
    assert "the lookup table was built on adb:127.0.0.1:1" in err and "model 'Pixel 7'" in err
    assert not (tmp_path / "here").exists()
    assert main([*search, "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["device"] == phone and cfg["model_format"] == "tflite"   # the phone's files
    assert main(["front", str(tmp_path / "run"), "--no-export"]) == 0   # nor here


@pytest.mark.parametrize("argv, needle", [
    # inf reached the protocol and was reported as the runtime failing
    (["latency", "MODEL", "--max-seconds", "inf"], "--max-seconds must be a finite number > 0"),
    (["latency", "MODEL", "--rel-ci", "inf"], "--rel-ci must be a finite number > 0"),
    # inf overflowed the adb subprocess's timeout: a traceback
    (["devices", "--timeout", "inf"], "--timeout must be in (0, 86400] seconds"),
])
def test_infinite_times_are_refused_in_one_line(model: Path, capsys, argv, needle) -> None:
    err = _one_error(capsys, [model if a == "MODEL" else a for a in argv])
    assert needle in err


def test_a_devices_config_that_is_a_folder_or_missing_is_named(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """A folder was read as "no config"; a missing file (a typo) dropped its devices
    without a word. The folder is refused; the missing file is a note."""
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path))
    assert "device config" in _one_error(capsys, ["devices", "--no-fingerprint"])
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path / "typo.toml"))
    assert main(["devices", "--no-fingerprint"]) == 0
    assert f"note: MNAS_DEVICES_CONFIG={tmp_path / 'typo.toml'} does not exist" in \
        capsys.readouterr().out

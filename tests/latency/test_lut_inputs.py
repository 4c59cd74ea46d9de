"""``mnas lut build`` / ``eval``: output paths that are no regular file, a --rows that is
the table, damaged or partial tables, out-of-range sizes and counts, an interrupted extra
pass, and NaN in --json. Each is one line and exit 2 before anything is measured, and
leaves every file as it was."""

from __future__ import annotations

import json
import math
import os
import stat
import types
from pathlib import Path

import numpy as np
import pytest

import latency.lut_measure
from devices.base import get_device
from latency.lut import LatencyTable, MnasnetUnits
from latency.measurement import MeasureSettings
from latency.paths import check_output_file
from mnas.cli import main
from mnas.spaces.mnasnet import MnasNetSpace

LOW = 32  # the smallest resolution: every unit exports in milliseconds


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))


def _table(fingerprint: dict, **kw: object) -> LatencyTable:
    units = MnasnetUnits(LOW)
    rng = np.random.default_rng(0)
    base = {"space": "mnasnet", "resolution": LOW, "num_classes": 1000,
            "device": "local:onnxruntime", "fingerprint": fingerprint,
            "settings": {"warmup": 1, "runs": 3, "max_runs": 3},
            "entries": {u.key: float(rng.uniform(0.01, 0.05)) for u in units.enumerate()}}
    return LatencyTable(**{**base, **kw})


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[object]) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", (rc, out, err)
    assert err.startswith("mnas: error: ") and err.count("\n") == 1, err
    return err


def _fake_eval(rows: list[dict] | None = None, spearman: float = 0.9):
    metrics = {"within_5pct": 1.0, "within_10pct": 1.0, "mape": 0.01, "spearman": spearman}
    return lambda *a, **k: {**metrics, "n": 1, "anchored": False, "raw": dict(metrics),
                            "noisy_measurements": 0, "rows": rows or [{"arch": "x"}],
                            "predictions_per_s": {"batch": 1e6, "single": 1e5}}


# -- 1. an existing output that is no regular file ------------------------------------------

def test_outputs_refuse_a_fifo_and_leave_it_a_fifo(tmp_path: Path, fingerprint, no_measuring,
                                                   capsys) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO .*not a regular file"):
        check_output_file(fifo, "--out", force=True)   # `mnas bench run --force` too
    err = _one_error(capsys, ["lut", "build", "--resolution", LOW, "--out", fifo])
    assert f"--out {fifo} is a FIFO" in err
    lut = _table(fingerprint).save(tmp_path / "t.json")
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--rows", fifo, "--force"])
    assert f"--rows {fifo} is a FIFO" in err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # a regular file is still accepted (an existing table is resumed) and left as it was
    (tmp_path / "old.json").write_text("kept")
    assert check_output_file(tmp_path / "old.json", "--out") == tmp_path / "old.json"
    assert (tmp_path / "old.json").read_text() == "kept"


def test_a_symlink_loop_or_an_empty_path_is_named_as_such(tmp_path: Path, fingerprint,
                                                          no_measuring, capsys) -> None:
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)   # `ln -s loop.json loop.json`: Path.exists says False
    lut = _table(fingerprint).save(tmp_path / "t.json")
    before = lut.read_bytes()
    why = "cannot be resolved: a symbolic link loop"
    err = _one_error(capsys, ["lut", "eval", "--lut", loop])
    assert f"lookup table {loop} {why}" in err and "not found" not in err
    err = _one_error(capsys, ["lut", "eval", "--lut", loop, "--rows", tmp_path / "r.json"])
    assert f"lookup table {loop} {why}" in err
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--rows", loop])
    assert f"--rows {loop} {why}" in err          # refused before minutes of measuring
    err = _one_error(capsys, ["lut", "build", "--resolution", LOW, "--out", loop])
    assert f"--out {loop} {why}" in err
    assert _one_error(capsys, ["lut", "eval", "--lut", ""]).endswith(
        "lookup table path is empty\n")
    assert lut.read_bytes() == before and loop.is_symlink()


# -- 2. --rows that is the table, or an existing file ------------------------------------

def test_eval_refuses_rows_that_are_the_table(tmp_path: Path, fingerprint, no_measuring,
                                              capsys) -> None:
    lut = _table(fingerprint).save(tmp_path / "t.json")
    before = lut.read_bytes()
    (tmp_path / "link.json").symlink_to(lut)
    (tmp_path / "sub").mkdir()
    for rows in (lut, tmp_path / "sub" / ".." / "t.json", tmp_path / "link.json"):
        err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "1", "--rows", rows,
                                  "--force"])
        assert "is the --lut table" in err
    assert lut.read_bytes() == before


def test_eval_replaces_existing_rows_only_with_force(tmp_path: Path, fingerprint, capsys,
                                                     monkeypatch) -> None:
    lut = _table(fingerprint).save(tmp_path / "t.json")
    rows = tmp_path / "rows.json"
    rows.write_text("kept")
    monkeypatch.setattr(latency.lut_measure, "evaluate_table", _fake_eval())
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "1", "--rows", rows])
    assert err == f"mnas: error: {rows} exists; pass --force to overwrite it\n"
    assert rows.read_text() == "kept"
    assert main(["lut", "eval", "--lut", str(lut), "--n", "1", "--rows", str(rows),
                 "--force", "--json"]) == 0
    capsys.readouterr()
    assert json.loads(rows.read_text()) == [{"arch": "x"}]


# -- 3. an interrupted extra pass keeps what the table had --------------------------------

class _Stop(Exception):
    pass


@pytest.mark.parametrize("anchored", [False, True], ids=["plain", "anchored"])
def test_interrupted_extra_pass_keeps_the_calibration_and_anchor(
        tmp_path: Path, fingerprint, monkeypatch, anchored: bool) -> None:
    """`lut build --passes 2` on a finished one-pass table, stopped after its first save:
    the file still has the old calibration (with its archs) and anchor."""
    fake = types.SimpleNamespace(median_ms=1.0, noisy=False)   # no timing: the saves matter
    monkeypatch.setattr(latency.lut_measure, "measure_file", lambda *a, **k: fake)
    monkeypatch.setattr(latency.lut_measure.Anchor, "measure", lambda self, p: (fake, 1.0))
    settings = MeasureSettings(threads=1, warmup=1, runs=3, max_runs=3, clock="cpu")
    space = MnasNetSpace()
    key = MnasnetUnits(LOW).units(next(iter(space.named().values())))[
        latency.lut_measure.ANCHOR_INDEX].key
    anchor = ({"unit": key, "ms": 0.5, "network": {"arch": "x", "ms": 3.0}} if anchored
              else None)
    calibration = {"a": 1.2, "b": 0.1, "c": 0.3, "points": 4, "fit_mape": 0.01,
                   "rows": [[1.0, 2, 3.0]], "archs": ["a1", "a2"]}
    out = _table(fingerprint, settings=vars(settings).copy(), calibration=calibration,
                 anchor=anchor).save(tmp_path / "full.json")

    def log(msg: str) -> None:
        if "pass 2/2 25/" in msg:   # logged right after the first save of pass 2
            raise _Stop

    with pytest.raises(_Stop):
        latency.lut_measure.build_table(get_device("local:onnxruntime"), space, out,
                                        resolution=LOW, settings=settings, anchor=anchored,
                                        passes=2, cache=None, log=log)
    saved = LatencyTable.load(out)
    assert sum(len(v) == 2 for v in saved.passes.values()) == 25
    assert saved.calibration == calibration
    assert saved.anchor == anchor


# -- 4. damaged and partial tables ------------------------------------------------------

def _damage(d: dict, what: str) -> None:
    if what == "partial":   # what an interrupted build leaves
        for k in sorted(d["entries"])[:7]:
            del d["entries"][k]
            d["passes"].pop(k)
    elif what == "entries-list":
        d["entries"], d["passes"] = [], {}
    elif what == "calibration-a":
        del d["calibration"]["a"]
    elif what == "anchor-ms":
        d["anchor"] = {"unit": "layer|x"}
    elif what == "network-ms":
        d["anchor"] = {"unit": "layer|x", "ms": 1.0, "network": {"arch": "x"}}
    elif what == "no-entries":
        del d["entries"]
    elif what == "settings-warmup":
        d["settings"]["warmup"] = -1
    elif what == "settings-unknown":
        d["settings"]["repeats"] = 3
    elif what == "settings-runs":
        d["settings"]["runs"] = "30"
    elif what == "settings-list":
        d["settings"] = [1, 3, 3]


@pytest.mark.parametrize(("what", "needle"), [
    ("partial", "lacks 7 of the 2935 units its networks need: it is partial"),
    ("entries-list", "entries must be an object of unit latencies (ms), got list"),
    ("calibration-a", "(calibration lacks 'a')"),
    ("anchor-ms", "(anchor lacks 'ms')"),
    ("network-ms", "(anchor network lacks 'ms')"),
    ("no-entries", "(it lacks 'entries')"),
    ("settings-warmup", "(settings: warmup must be in [0, 100000], got -1)"),
    ("settings-unknown", "(settings has an unknown field 'repeats'; valid: threads, warmup, "),
    ("settings-runs", "(settings 'runs' must be an integer, got '30')"),
    ("settings-list", "(settings must be an object, got list)"),
])
def test_eval_names_what_a_damaged_table_lacks(tmp_path: Path, fingerprint, no_measuring,
                                               capsys, what: str, needle: str) -> None:
    d = _table(fingerprint).to_dict()
    _damage(d, what)
    lut = tmp_path / "t.json"
    lut.write_text(json.dumps(d))
    before = lut.read_bytes()
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "1"])
    assert str(lut) in err and needle in err
    if what == "partial":
        assert f"finish it with `mnas lut build --out {lut}`" in err
    assert lut.read_bytes() == before


def test_a_partial_table_cannot_predict_or_be_evaluated(fingerprint) -> None:
    table = _table(fingerprint)
    del table.entries[MnasnetUnits(LOW).stem().key]
    arch = next(iter(MnasNetSpace().named().values()))
    with pytest.raises(ValueError, match="lacks 1 of the 2935 units.*partial"):
        table.predict(arch)
    with pytest.raises(ValueError, match="partial"):   # before the device is touched
        latency.lut_measure.evaluate_table(table, None, MnasNetSpace(), n=1)


# -- 5. sizes, classes and run counts -----------------------------------------------------

@pytest.mark.parametrize(("field", "needle"), [
    ("resolution", "resolution must be in [32, 2048], got 1000000000"),
    ("num_classes", "num_classes must be in [1, 100000], got 1000000000"),
])
def test_eval_refuses_a_table_too_large_to_build(tmp_path: Path, fingerprint, no_measuring,
                                                 capsys, field: str, needle: str) -> None:
    d = _table(fingerprint).to_dict()
    d[field] = 10**9
    lut = tmp_path / "t.json"
    lut.write_text(json.dumps(d))
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "1"])
    assert str(lut) in err and needle in err


@pytest.mark.parametrize(("flags", "needle"), [
    (["--resolution", "0"], "--resolution must be in [32, 2,048], got 0"),
    (["--resolution", "4096"], "--resolution must be in [32, 2,048], got 4,096"),
    (["--classes", "0"], "--classes must be in [1, 100,000], got 0"),
    (["--classes", "-1", "--no-anchor"], "--classes must be in [1, 100,000], got -1"),
    (["--classes", "1000000000"], "--classes must be in [1, 100,000], got 1,000,000,000"),
    (["--max-runs", "1"], "--max-runs (1) must be >= --runs (30)"),
    (["--runs", "1"], "--runs must be >= 3, got 1"),
    (["--clock", "cpu", "--threads", "2"], "--clock cpu counts one thread's CPU time"),
    (["--calibrate", "1000000000"], "--calibrate must be in [1, 100,000], got 1,000,000,000"),
    (["--passes", "1000000000"], "--passes must be in [1, 100], got 1,000,000,000"),
])
def test_build_refuses_out_of_range_settings_up_front(tmp_path: Path, no_measuring, capsys,
                                                      flags: list[str], needle: str) -> None:
    out = tmp_path / "t.json"
    err = _one_error(capsys, ["lut", "build", "--out", out, *flags])
    assert needle in err
    assert not out.exists()


def test_build_table_refuses_size_zero_instead_of_the_default(tmp_path: Path,
                                                              monkeypatch) -> None:
    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("0 was read as the default: measuring began")

    monkeypatch.setattr(latency.lut_measure, "measure_file", tripwire)
    device = get_device("local:onnxruntime")
    for kw, needle in (({"resolution": 0}, "resolution must be in"),
                       ({"num_classes": 0}, "num_classes must be in")):
        with pytest.raises(ValueError, match=needle):
            latency.lut_measure.build_table(device, MnasNetSpace(), tmp_path / "t.json",
                                            **kw, anchor=False, log=lambda m: None)
    assert not (tmp_path / "t.json").exists()


# -- 6. counts and files too large --------------------------------------------------------

def test_eval_caps_the_networks(tmp_path: Path, fingerprint, no_measuring, capsys) -> None:
    lut = _table(fingerprint).save(tmp_path / "t.json")
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", 10**9])
    assert "--n must be in [1, 100,000], got 1,000,000,000" in err


def test_a_huge_table_file_is_refused_unread(tmp_path: Path, no_measuring, capsys,
                                             monkeypatch) -> None:
    lut = tmp_path / "big.json"
    with open(lut, "wb") as f:
        f.truncate(300 * 2**20)   # sparse: no disk used
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("read it"))
    err = _one_error(capsys, ["lut", "eval", "--lut", lut, "--n", "1"])
    assert f"lookup table {lut} is 300 MiB" in err and "256 MiB" in err


# -- 7. --json with undefined numbers ----------------------------------------------------

def test_eval_json_writes_null_for_an_undefined_spearman(tmp_path: Path, fingerprint, capsys,
                                                         monkeypatch) -> None:
    lut = _table(fingerprint).save(tmp_path / "t.json")
    rows = [{"arch": "x", "measured_ms": math.inf}]
    monkeypatch.setattr(latency.lut_measure, "evaluate_table",
                        _fake_eval(rows, spearman=math.nan))

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))

    assert main(["lut", "eval", "--lut", str(lut), "--n", "1", "--json", "--rows",
                 str(tmp_path / "rows.json")]) == 0
    res = strict(capsys.readouterr().out)
    assert res["spearman"] is None and res["raw"]["spearman"] is None
    assert strict((tmp_path / "rows.json").read_text())[0]["measured_ms"] is None
    assert main(["lut", "eval", "--lut", str(lut), "--n", "1"]) == 0
    assert "Spearman undefined" in capsys.readouterr().out

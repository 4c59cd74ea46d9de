"""Per-layer lookup table: unit enumeration, prediction, calibration, build/eval, lut:PATH."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import numpy as np
import pytest

from devices.base import get_device
from latency.lut import LatencyTable, MnasnetUnits
from latency.lut_measure import measure_file
from latency.measurement import MeasureSettings
from mnas.cli import main
from mnas.evaluate import make_latency
from mnas.spaces.mnasnet import MnasNetSpace

SPACE = MnasNetSpace()
LOW = 32  # tiny resolution: every unit runs in microseconds


def _archs(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(n)] + list(SPACE.named().values())


def _synthetic(units: MnasnetUnits, seed: int = 0, **kw) -> LatencyTable:
    rng = np.random.default_rng(seed)
    entries = {u.key: float(rng.uniform(0.01, 2.0)) for u in units.enumerate()}
    base = {"space": "mnasnet", "resolution": units.resolution, "num_classes":
            units.num_classes, "device": "local:onnxruntime", "fingerprint": {"x": 1},
            "clock": "wall", "settings": {}, "entries": entries}
    return LatencyTable(**{**base, **kw})


def test_enumeration_covers_every_unit_of_every_arch_once():
    units = MnasnetUnits(224)
    found = units.enumerate()
    keys = [u.key for u in found]
    assert len(keys) == len(set(keys))
    assert 2000 < len(keys) < 4000  # ~3k distinct layers behind the space's 10^30 networks
    known = set(keys)
    for a in _archs(300):
        for u in units.units(a):
            assert u.key in known
            # "identity" is only kept where the blocks add a shortcut, else it is "none"
            if u.skip == "identity":
                assert u.stride == 1 and u.in_ch == u.out_ch


def test_unit_modules_are_the_layers_the_space_builds():
    units = MnasnetUnits(224)
    for a in _archs(6, seed=1):
        model = SPACE.build(a)
        layers = [layer for stage in model.blocks for layer in stage]
        us = units.units(a)
        assert len(us) == len(layers) + 2
        assert repr(units.module(us[0])) == repr(model.stem)
        assert repr(units.module(us[-1])) == repr(model.head)
        for u, layer in zip(us[1:-1], layers, strict=True):
            assert repr(units.module(u)) == repr(layer)
            assert u.input_shape()[1] == u.in_ch


def test_predictions_agree_batched_and_one_at_a_time_and_sum_the_units():
    table = _synthetic(MnasnetUnits(224))
    table.calibration = {"a": 1.1, "b": 0.05, "c": 0.3, "points": 5}
    archs = _archs(100, seed=2)
    choices = np.array([SPACE.to_choices(a) for a in archs])
    batch = table.predict_choices(choices)
    for a, p in zip(archs, batch, strict=True):
        raw, n = table.raw(a)
        assert table.predict(a, calibrated=False) == pytest.approx(raw)
        assert table.predict(a) == pytest.approx(1.1 * raw + 0.05 * n + 0.3)
        assert p == pytest.approx(table.predict(a))
    with pytest.raises(ValueError, match="shape"):
        table.predict_choices(choices[:, :5])
    with pytest.raises(ValueError, match="not an arch"):
        table.predict("ir_r1")


def test_fit_recovers_a_known_calibration():
    table = _synthetic(MnasnetUnits(224))
    rng = np.random.default_rng(0)
    rows = [(s, n, 1.3 * s + 0.02 * n + 0.5) for s, n in
            zip(rng.uniform(5, 50, 12), rng.integers(10, 25, 12), strict=True)]
    c = table.fit(rows)
    assert (c["a"], c["b"], c["c"]) == pytest.approx((1.3, 0.02, 0.5), rel=1e-6)
    assert c["fit_mape"] < 1e-9 and c["points"] == 12
    c = table.fit(rows[:2])  # too few points for three coefficients: a ratio only
    assert c["b"] == 0.0 and c["c"] == 0.0 and c["a"] > 1.3


def test_save_load_round_trip_and_bad_files(tmp_path):
    table = _synthetic(MnasnetUnits(LOW))
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    a = _archs(1)[0]
    assert again.predict(a) == table.predict(a) and again.entries == table.entries
    with pytest.raises(FileNotFoundError):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "space": "mnasnet"}))
    with pytest.raises(ValueError, match="not a mnas lookup table"):
        LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'mnasnet' only"):
        _synthetic(MnasnetUnits(LOW), space="nb201")


def test_lut_latency_scheme_predicts_as_a_marked_measurement(tmp_path):
    table = _synthetic(MnasnetUnits(224),
                       fingerprint=get_device("local:onnxruntime").fingerprint())
    path = table.save(tmp_path / "t.json")
    est = make_latency(f"lut:{path}", device="local:onnxruntime", settings=None)
    a = _archs(1)[0]
    m = est(SPACE, a)
    assert m.median_ms == pytest.approx(table.predict(a))
    assert (m.runtime, m.runs, m.device) == ("lut", 0, "local:onnxruntime")
    with pytest.raises(ValueError, match="needs the table's path"):
        make_latency("lut:")
    with pytest.raises(ValueError, match="resolution 224, not 160"):
        make_latency(f"lut:{path}", resolution=160)
    with pytest.raises(FileNotFoundError) as ei:
        make_latency(f"lut:{tmp_path / 'none.json'}")
    assert str(ei.value) == f"lookup table not found: {tmp_path / 'none.json'}"  # no [Errno 2]


def test_units_are_measured_with_the_tables_clock(tmp_path):
    from latency.export import export_onnx

    units = MnasnetUnits(LOW)
    u = units.stem()
    path = export_onnx(units.module(u), tmp_path / "stem.onnx", u.input_shape())
    s = MeasureSettings(warmup=1, runs=5, max_runs=5, clock="cpu")
    m = measure_file(get_device("local:onnxruntime"), path, s)
    assert m.clock == "cpu" and m.runs == 5 and m.median_ms > 0
    from devices.adb import make_adb_device

    with pytest.raises(ValueError, match="clock must be 'wall'"):
        measure_file(make_adb_device("adb:127.0.0.1:1"), path, s)
    # a table written before MeasureSettings had a clock kept it beside the settings
    old = _synthetic(units, settings=asdict(MeasureSettings())).to_dict()
    del old["settings"]["clock"]
    old["clock"] = "cpu"
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert LatencyTable.load(tmp_path / "old.json").measure_settings().clock == "cpu"


def test_build_resumes_measures_the_rest_calibrates_and_eval_reports(tmp_path, capsys):
    """CLI end to end on this host at a tiny resolution: all but a few units come from a
    partial table (as after an interrupted build); the rest are measured for real."""
    device = get_device("local:onnxruntime")
    settings = MeasureSettings(threads=1, warmup=1, runs=3, max_runs=3, clock="cpu")
    units = MnasnetUnits(LOW)
    partial = _synthetic(units, fingerprint=device.fingerprint(), settings=asdict(settings))
    todo = [units.stem(), units.head(320)] + [u for u in units.enumerate()
                                             if u.kind == "layer"][:2]
    for u in todo:
        del partial.entries[u.key]
    out = partial.save(tmp_path / "lut.json")
    args = ["lut", "build", "--device", "local:onnxruntime", "--resolution", str(LOW),
            "--out", str(out), "--calibrate", "4", "--warmup", "1", "--runs", "3",
            "--max-runs", "3", "--clock", "cpu", "--cache", str(tmp_path / "lat.db"),
            "--no-anchor", "--passes", "1"]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert f"{len(units.enumerate())} units of mnasnet at {LOW}x{LOW}" in line
    table = LatencyTable.load(out)
    assert not table.missing()
    assert all(table.entries[u.key] > 0 for u in todo)
    assert table.calibration["points"] == 4 and len(table.calibration["archs"]) == 4
    from latency.cache import MeasurementCache

    assert len(MeasurementCache(tmp_path / "lat.db")) == 8  # 4 units + 4 networks, kept
    assert table.clock == "cpu"
    assert main(["lut", "eval", "--lut", str(out), "--n", "3", "--json", "--no-cache",
                 "--rows", str(tmp_path / "rows.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and 0.0 <= res["within_10pct"] <= 1.0 and res["mape"] >= 0
    assert res["predictions_per_s"]["batch"] > 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    calib = set(table.calibration["archs"])
    assert len(rows) == 3 and not calib & {r["arch"] for r in rows}
    for r in rows:
        assert r["predicted_ms"] == pytest.approx(table.predict(SPACE.decode(r["arch"])))


def test_build_refuses_a_table_of_another_device(tmp_path, monkeypatch):
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    units = MnasnetUnits(LOW)
    out = _synthetic(units, fingerprint={"cpu": "elsewhere"}).save(tmp_path / "lut.json")
    assert main(["lut", "build", "--resolution", str(LOW), "--out", str(out)]) == 2
    assert main(["lut", "eval", "--lut", str(out), "--n", "1"]) == 2
    assert main(["lut", "eval", "--lut", str(out), "--n", "0"]) == 2


def test_sample_archs_gives_exactly_n_distinct_unexcluded_archs():
    from latency.lut_measure import sample_archs

    assert sample_archs(SPACE, 0, seed=1) == []  # --calibrate 1: the named arch alone
    first = sample_archs(SPACE, 5, seed=1)
    keys = [SPACE.key(a) for a in first]
    assert len(set(keys)) == 5
    again = sample_archs(SPACE, 3, seed=1, exclude=keys[:2])
    assert len(again) == 3 and not {SPACE.key(a) for a in again} & set(keys[:2])


def test_measurements_median_and_disputes(tmp_path):
    """An entry is the median of its unit's measurements; two that disagree by more than
    5% make the unit disputed (and noisy) until a third settles it."""
    table = _synthetic(MnasnetUnits(LOW))
    k = next(iter(table.entries))
    del table.entries[k]
    table.passes.pop(k)
    assert [u.key for u in table.missing()] == [k]
    table.add_measurement(k, 1.0, flagged=True)
    assert table.entries[k] == 1.0 and k in table.noisy and k not in table.disputed()
    table.add_measurement(k, 1.2)
    assert table.entries[k] == pytest.approx(1.1) and k in table.disputed() and k in table.noisy
    assert k in {u.key for u in table.missing(3)} and k not in {u.key for u in table.missing(2)}
    table.add_measurement(k, 1.03)
    assert table.entries[k] == pytest.approx(1.03) and k not in table.noisy
    assert not table.disputed()
    again = LatencyTable.load(table.save(tmp_path / "t.json"))
    assert again.passes[k] == [1.0, 1.2, 1.03] and again.entries[k] == pytest.approx(1.03)


def test_build_measures_every_unit_in_each_pass_and_settles_disputes(tmp_path, capsys):
    """Real measurements, two passes: units without a measurement get two, a unit with
    one gets its second, and a unit whose two passes disagree by far gets a third."""
    device = get_device("local:onnxruntime")
    settings = MeasureSettings(threads=1, warmup=1, runs=3, max_runs=3, clock="cpu")
    units = MnasnetUnits(LOW)
    table = _synthetic(units, fingerprint=device.fingerprint(), settings=asdict(settings))
    layers = [u for u in units.enumerate() if u.kind == "layer"]
    fresh, once, disputed = layers[:2], layers[2], layers[3]
    for u in units.enumerate():
        table.passes[u.key] = [table.entries[u.key]] * 2
    for u in fresh:
        del table.entries[u.key]
    table.passes[once.key] = [table.entries[once.key]]
    table.passes[disputed.key] = [0.001, 100.0]
    out = table.save(tmp_path / "lut.json")
    assert main(["lut", "build", "--resolution", str(LOW), "--out", str(out), "--calibrate",
                 "4", "--warmup", "1", "--runs", "3", "--max-runs", "3", "--clock", "cpu",
                 "--no-anchor", "--no-cache", "--passes", "2"]) == 0
    capsys.readouterr()
    built = LatencyTable.load(out)
    for u in [*fresh, once]:  # two passes, a third exactly where those two disagree by > 5%
        first, second, *rest = built.passes[u.key]
        assert len(rest) == (max(first, second) > 1.05 * min(first, second))
        assert built.entries[u.key] == pytest.approx(float(np.median(built.passes[u.key])))
    assert built.passes[once.key][0] == table.entries[once.key]
    settled = built.passes[disputed.key]
    assert len(settled) == 3 and settled[:2] == [0.001, 100.0]
    assert built.entries[disputed.key] == settled[2]  # the new one is the median
    assert main(["lut", "build", "--resolution", str(LOW), "--out", str(out),
                 "--passes", "0"]) == 2
    assert "--passes must be >= 1" in capsys.readouterr().err


def test_anchored_build_scales_to_the_anchor_and_eval_reports_both(tmp_path, capsys):
    """Anchored (the default on a local device): units and networks are timed
    alternately with the anchor unit and scaled to its nominal latency; a resumed table
    keeps its nominal, so twice the nominal gives about twice the entries."""
    from latency.lut_measure import ANCHOR_INDEX

    device = get_device("local:onnxruntime")
    settings = MeasureSettings(threads=1, warmup=2, runs=15, max_runs=15, clock="cpu")
    units = MnasnetUnits(LOW)
    key = units.units(next(iter(SPACE.named().values())))[ANCHOR_INDEX].key
    todo = [u for u in units.enumerate() if u.kind == "layer"][-3:]
    built = {}
    for nominal in (1.0, 2.0):
        partial = _synthetic(units, fingerprint=device.fingerprint(), settings=asdict(settings),
                             anchor={"unit": key, "ms": nominal})
        for u in todo:
            del partial.entries[u.key]
        out = partial.save(tmp_path / f"lut{nominal}.json")
        assert main(["lut", "build", "--resolution", str(LOW), "--out", str(out),
                     "--calibrate", "4", "--warmup", "2", "--runs", "15", "--max-runs", "15",
                     "--clock", "cpu", "--passes", "1"]) == 0
        assert f"anchored to {key} ({nominal:.4f} ms)" in capsys.readouterr().out
        built[nominal] = LatencyTable.load(out)
        anchor = built[nominal].anchor
        assert {k: anchor[k] for k in ("unit", "ms")} == {"unit": key, "ms": nominal}
        # calibration networks are timed with the reference network, measured afresh
        assert anchor["network"]["arch"] == SPACE.encode(next(iter(SPACE.named().values())))
        assert anchor["network"]["ms"] > 0
    ratio = np.median([built[2.0].entries[u.key] / built[1.0].entries[u.key] for u in todo])
    assert 1.4 < ratio < 2.8, ratio
    out = tmp_path / "lut1.0.json"
    assert main(["lut", "eval", "--lut", str(out), "--n", "3", "--json",
                 "--rows", str(tmp_path / "rows.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["anchored"] and res["n"] == 3 and set(res["raw"]) >= {"mape", "within_10pct"}
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all(r["raw_ms"] > 0 and r["measured_ms"] > 0 for r in rows)
    # eval networks are scaled to the network anchor's nominal: doubling it doubles them
    doubled = LatencyTable.load(out)
    doubled.anchor["network"]["ms"] *= 2
    doubled.save(tmp_path / "doubled.json")
    assert main(["lut", "eval", "--lut", str(tmp_path / "doubled.json"), "--n", "3",
                 "--json", "--rows", str(tmp_path / "rows2.json")]) == 0
    capsys.readouterr()
    rows2 = json.loads((tmp_path / "rows2.json").read_text())
    assert [r["arch"] for r in rows2] == [r["arch"] for r in rows]
    ratio = np.median([b["measured_ms"] / a["measured_ms"]
                       for a, b in zip(rows, rows2, strict=True)])
    assert 1.4 < ratio < 2.8, ratio
    # an unanchored partial table cannot be resumed anchored: one line, exit 2
    plain = _synthetic(units, fingerprint=device.fingerprint(), settings=asdict(settings))
    del plain.entries[todo[0].key]
    p = plain.save(tmp_path / "plain.json")
    assert main(["lut", "build", "--resolution", str(LOW), "--out", str(p), "--warmup", "2",
                 "--runs", "15", "--max-runs", "15", "--clock", "cpu", "--anchor"]) == 2
    assert "built without an anchor" in capsys.readouterr().err

"""The gate's statistics and verdict rule, on constructed samples (no timing involved)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from latency.bench_results import BenchRecord, BenchResults
from latency.measurement import Measurement
from latency.regression import (
    classify,
    compare_records,
    compare_results,
    exit_code,
    median_ratio_ci,
    normalize,
    run_drift,
    update_baseline,
)

FP = {"kind": "local", "cpu": "Test CPU", "cores": 2, "runtime": "onnxruntime",
      "runtime_version": "1.0"}


def samples(median: float, n: int = 60, rel_sd: float = 0.02, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return median * np.exp(rng.normal(0.0, rel_sd, n))


def meas(x: np.ndarray | list[float], fp: dict | None = None, sha: str = "a" * 64,
         threads: int = 1, clock: str = "wall") -> Measurement:
    return Measurement.from_samples(x, warmup=1, threads=threads, runtime="onnxruntime",
                                    runtime_version="1.0", model_sha256=sha,
                                    device="local:onnxruntime", fingerprint=fp or FP,
                                    clock=clock)


def record(name: str, *rounds: np.ndarray, tol: float = 0.05, max_ms: float | None = None,
           fp: dict | None = None, sha: str = "a" * 64, clock: str = "wall") -> BenchRecord:
    entry = {"name": name, "tolerance": tol, "max_ms": max_ms, "settings": {"rel_ci": 0.02}}
    return BenchRecord.from_rounds(name, entry, [meas(r, fp, sha, clock=clock) for r in rounds])


def test_identical_distribution_is_ok_and_ten_percent_slowdown_is_a_regression() -> None:
    base = samples(10.0, seed=1)
    r, lo, hi = median_ratio_ci(base, samples(10.0, seed=2))
    assert lo < 1.0 < hi and hi < 1.05
    assert classify(r, lo, hi, 0.05, baseline_runs=1) == "ok"
    assert classify(r, lo, hi, 0.05, baseline_runs=5) == "ok"
    r, lo, hi = median_ratio_ci(base, samples(11.0, seed=3))
    assert 1.07 < r < 1.13 and lo > 1.05
    assert classify(r, lo, hi, 0.05, baseline_runs=1) == "regression"
    assert classify(r, lo, hi, 0.05, baseline_runs=5) == "regression"


def test_interval_straddling_the_tolerance_is_inconclusive() -> None:
    # a 5% slowdown measured with 4% sample noise: the interval must straddle 1.05
    base, cur = samples(10.0, n=30, rel_sd=0.04, seed=4), samples(10.5, n=30, rel_sd=0.04, seed=5)
    r, lo, hi = median_ratio_ci(base, cur)
    assert lo <= 1.05 < hi
    assert classify(r, lo, hi, 0.05, baseline_runs=1) == "inconclusive"


def test_rule_with_measured_drift() -> None:
    t = 0.05
    # beyond the tolerance and surely slower
    assert classify(1.07, 1.01, 1.13, t) == "regression"
    # beyond the tolerance, but no change is inside the interval
    assert classify(1.07, 0.99, 1.15, t) == "inconclusive"
    # measured within the tolerance, but a 2t slowdown cannot be excluded
    assert classify(1.03, 0.97, 1.11, t) == "inconclusive"
    # within the tolerance, 2t excluded: ok even though surely a bit slower
    assert classify(1.03, 1.01, 1.06, t) == "ok"
    assert classify(0.92, 0.88, 0.97, t) == "improvement"
    assert classify(0.97, 0.93, 0.99, t) == "ok"     # faster, but not beyond -t


def test_rule_without_measured_drift_needs_the_whole_interval_above_the_tolerance() -> None:
    t = 0.05
    for runs in (1, 2):
        assert classify(1.10, 1.051, 1.2, t, runs) == "regression"
        assert classify(1.10, 1.05, 1.2, t, runs) == "inconclusive"    # lo not strictly above
        assert classify(1.07, 1.01, 1.13, t, runs) == "inconclusive"   # a regression at k>=3
        assert classify(1.00, 0.97, 1.05, t, runs) == "ok"             # hi exactly on the bound
        assert classify(0.90, 0.80, 0.94, t, runs) == "improvement"
    with pytest.raises(ValueError, match="tolerance"):
        classify(1.0, 1.0, 1.0, 1.5)


def test_bootstrap_is_deterministic_and_validates_input() -> None:
    a, b = samples(5.0, seed=6), samples(5.2, seed=7)
    assert median_ratio_ci(a, b) == median_ratio_ci(a, b)
    assert median_ratio_ci(a, b, seed=1) != median_ratio_ci(a, b, seed=2)
    with pytest.raises(ValueError, match=">= 3 samples"):
        median_ratio_ci([1.0, 2.0], a)
    with pytest.raises(ValueError, match="finite and positive"):
        median_ratio_ci([1.0, 0.0, 2.0], a)
    with pytest.raises(ValueError, match="do not add up"):
        median_ratio_ci(a, b, baseline_rounds=[10, 10])


def test_rounds_that_disagree_widen_the_interval() -> None:
    # three rounds whose medians drift by +-8%: pooled as one run the interval is narrow
    # and would call a false regression; the two-level bootstrap sees the drift
    base = np.concatenate([samples(10.0 * d, n=40, rel_sd=0.01, seed=i)
                           for i, d in enumerate((0.92, 1.0, 1.08))])
    cur = np.concatenate([samples(10.0 * d, n=40, rel_sd=0.01, seed=10 + i)
                          for i, d in enumerate((1.02, 1.1, 1.12))])
    flat = median_ratio_ci(base, cur)
    nested = median_ratio_ci(base, cur, baseline_rounds=[40] * 3, current_rounds=[40] * 3)
    assert flat[0] == nested[0]
    assert (nested[2] - nested[1]) > 3 * (flat[2] - flat[1])
    assert classify(*flat, 0.05, 1) == "regression"
    assert classify(*nested, 0.05, 1) == "inconclusive"


def test_run_level_interval_from_a_multi_run_baseline() -> None:
    assert math.isnan(run_drift([10.0]))
    assert run_drift([10.0, 10.0, 10.0]) == 0.0
    assert run_drift([9.0, 10.0, 11.0]) == pytest.approx(np.std(np.log([9, 10, 11]), ddof=1))
    base, cur = samples(10.0, seed=20), samples(10.8, seed=21)
    plain = median_ratio_ci(base, cur)
    runs = [9.0, 10.0, 11.0, 10.5, 9.6]
    wide = median_ratio_ci(base, cur, baseline_run_medians=runs)
    assert wide[0] == plain[0]
    # log r +- t(4, 0.975) * s * sqrt(1 + 1/5), unioned with the bootstrap interval
    half = 2.7764451 * run_drift(runs) * math.sqrt(1.2)
    assert wide[1] == pytest.approx(min(plain[1], plain[0] * math.exp(-half)))
    assert wide[2] == pytest.approx(max(plain[2], plain[0] * math.exp(half)))
    assert classify(*plain, 0.05, 1) == "regression"
    assert classify(*wide, 0.05, 5) == "inconclusive"
    # two runs are not enough to measure drift: no run-level term
    assert median_ratio_ci(base, cur, baseline_run_medians=runs[:2]) == plain


def test_compare_records_verdicts_budget_and_notes() -> None:
    base = record("m", samples(10.0, seed=30))
    slow = record("m", samples(11.0, seed=31), max_ms=10.5, sha="b" * 64)
    c = compare_records("m", base, slow)
    assert c.verdict == "regression" and c.over_budget and c.failed()
    assert c.model_changed
    assert "over max_ms 10.5" in c.explain() and "model file changed" in c.explain()
    ok = compare_records("m", base, record("m", samples(10.0, seed=32), max_ms=20))
    assert ok.verdict == "ok" and not ok.over_budget and not ok.failed()
    # an entry can be ok against the baseline and still over its absolute budget
    over = compare_records("m", base, record("m", samples(10.0, seed=33), max_ms=9.0))
    assert over.verdict == "ok" and over.over_budget and exit_code([over]) == 1
    assert compare_records("m", None, slow).verdict == "new"
    assert compare_records("m", base, None).verdict == "missing"
    # --tolerance overrides the suite's: 10% slower is fine under a 20% tolerance
    assert compare_records("m", base, record("m", samples(11.0, seed=31)), 0.2).verdict == "ok"


def test_a_missing_entry_says_so_not_that_a_measurement_was_noisy() -> None:
    rounds = [meas(samples(10.0, seed=34)).with_(noisy=True)]
    base = BenchRecord.from_rounds("m", {"name": "m", "tolerance": 0.05}, rounds)
    assert base.measurement.noisy
    text = compare_records("m", base, None).explain()
    assert text.startswith("missing from the results") and "noisy" not in text


def test_exit_codes_and_inconclusive_policy() -> None:
    base = record("m", samples(10.0, n=30, rel_sd=0.04, seed=4))
    inc = compare_records("m", base, record("m", samples(10.5, n=30, rel_sd=0.04, seed=5)))
    assert inc.verdict == "inconclusive"
    ok = compare_records("m", base, record("m", samples(10.0, seed=40)))
    reg = compare_records("m", base, record("m", samples(12.0, seed=41)))
    assert exit_code([ok]) == 0
    assert exit_code([ok, inc]) == 2 and exit_code([ok, inc], "pass") == 0
    assert exit_code([inc, reg]) == 1 and exit_code([inc, reg], "pass") == 1
    assert inc.failed("fail") and not inc.failed("pass")
    with pytest.raises(ValueError, match="inconclusive policy"):
        exit_code([ok], "maybe")


def results(*recs: BenchRecord) -> BenchResults:
    return BenchResults({r.name: r for r in recs}, suite="s.toml")


def test_different_fingerprint_is_refused_naming_the_fields() -> None:
    other = dict(FP, cpu="Other CPU", cores=8)
    b = results(record("m", samples(10.0, seed=50)))
    c = results(record("m", samples(10.0, seed=51), fp=other))
    with pytest.raises(ValueError) as ei:
        compare_results(b, c)
    msg = str(ei.value)
    assert "entry 'm'" in msg and "fingerprint.cpu: 'Test CPU' != 'Other CPU'" in msg
    assert "fingerprint.cores: 2 != 8" in msg and "--force" in msg
    assert "runtime_version" not in msg    # only the fields that differ are named
    assert [x.verdict for x in compare_results(b, c, force=True)] == ["ok"]


def test_threads_are_part_of_the_identity() -> None:
    b = results(BenchRecord("m", {}, meas(samples(10.0, seed=52), threads=1)))
    c = results(BenchRecord("m", {}, meas(samples(10.0, seed=53), threads=4)))
    with pytest.raises(ValueError, match="threads: 1 != 4"):
        compare_results(b, c)


def test_clock_mismatch_is_refused_naming_the_field_unless_forced() -> None:
    b = results(record("m", samples(10.0, seed=54), clock="wall"))
    c = results(record("m", samples(8.0, seed=55), samples(8.1, seed=56), clock="cpu"))
    with pytest.raises(ValueError) as ei:
        compare_results(b, c)
    msg = str(ei.value)
    assert "entry 'm': field 'clock'" in msg and "wall clock" in msg and "cpu clock" in msg
    assert "--force" in msg and "\n" not in msg
    assert [x.name for x in compare_results(b, c, force=True)] == ["m"]
    # accepting cpu-clock numbers over a wall-clock baseline, or merging mixed runs, too
    with pytest.raises(ValueError, match="clock: 'wall' != 'cpu'.*--force"):
        update_baseline(b, c)
    with pytest.raises(ValueError, match="clock: 'wall' != 'cpu'"):
        update_baseline(None, [b, c])
    assert update_baseline(b, c, force=True)[0].records["m"].measurement.clock == "cpu"


def test_clock_survives_rounds_normalize_and_the_file(tmp_path) -> None:
    rec = record("m", samples(10.0, seed=57), samples(10.2, seed=58), clock="cpu")
    ref = record("r", samples(5.0, seed=59), samples(5.1, seed=60), clock="cpu")
    assert rec.measurement.clock == "cpu"
    assert {m.clock for m in rec.split_rounds()} == {"cpu"}
    assert normalize(rec, ref).measurement.clock == "cpu"
    assert BenchRecord.merge([rec, rec]).measurement.clock == "cpu"
    back = BenchResults.load(results(rec).save(tmp_path / "r.json"))
    assert back.records["m"].measurement.clock == "cpu"
    with pytest.raises(ValueError, match="timed with different clocks"):
        BenchRecord.from_rounds("m", {}, [meas(samples(10.0), clock="cpu"),
                                          meas(samples(10.0), clock="wall")])


def test_results_round_trip_and_file_safety(tmp_path) -> None:
    r = results(record("a", samples(3.0, n=20, seed=60), samples(3.1, n=25, seed=61), max_ms=5),
                record("b", samples(7.0, seed=62)))
    p = r.save(tmp_path / "r.json")
    back = BenchResults.load(p)
    assert list(back.records) == ["a", "b"]
    a = back.records["a"]
    assert a.rounds == (20, 25) and a.max_ms == 5.0
    assert a.measurement.samples_ms == r.records["a"].measurement.samples_ms
    assert a.measurement.fingerprint == FP
    assert [m.median_ms for m in a.split_rounds()] == pytest.approx(a.round_medians)
    with pytest.raises(FileExistsError, match="pass --force"):
        r.save(p)
    r.save(p, force=True)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BenchResults.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a mnas bench results file"):
        BenchResults.load(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="results file not found"):
        BenchResults.load(tmp_path / "none.json")
    # entries that are not a list would read as "every entry missing": a passing gate
    doc = json.loads(p.read_text())
    for entries in ({}, None, "a"):
        (tmp_path / "mut.json").write_text(json.dumps({**doc, "entries": entries}))
        with pytest.raises(ValueError, match="'entries' must be a list"):
            BenchResults.load(tmp_path / "mut.json")


def test_baseline_update_merges_runs_and_keeps_unselected_entries() -> None:
    runs = [results(record("a", samples(10.0 * d, seed=70 + i)), record("b", samples(5.0)))
            for i, d in enumerate((1.0, 1.04, 0.97))]
    new, lines = update_baseline(None, runs)
    a = new.records["a"]
    assert len(a.run_medians) == 3 and len(a.rounds) == 3
    assert len(a.measurement.samples_ms) == 180
    assert 0.02 < run_drift(a.run_medians) < 0.05
    assert lines[0].startswith("a: added at") and "drift" in lines[0]
    # accept only b later: a keeps its three runs
    later = results(record("a", samples(20.0, seed=80)), record("b", samples(6.0, seed=81)))
    newer, lines = update_baseline(new, later, names=["b"])
    assert newer.records["a"] is a and newer.records["b"].measurement.median_ms > 5.5
    assert len(lines) == 1 and re.fullmatch(r"b: 5\.\d{3} ms -> 6\.\d{3} ms \(\+\d+\.\d%\)", lines[0])
    with pytest.raises(ValueError, match="no entry named 'zz'"):
        update_baseline(new, later, names=["zz"])
    moved = results(record("b", samples(6.0, seed=82), fp=dict(FP, cpu="Phone")))
    with pytest.raises(ValueError, match="fingerprint.cpu: 'Test CPU' != 'Phone'.*--force"):
        update_baseline(newer, moved, names=["b"])
    forced, lines = update_baseline(newer, moved, names=["b"], force=True)
    assert "[device changed]" in lines[0]
    assert forced.records["b"].measurement.fingerprint["cpu"] == "Phone"


def test_baseline_update_without_entry_needs_every_entry_in_every_results_file() -> None:
    def suite_run(*names: str, ms: float = 10.0, seed: int = 0) -> BenchResults:
        return results(*(record(n, samples(ms, seed=seed + i)) for i, n in enumerate(names)))

    four = ("a", "b", "c", "d")
    base, _ = update_baseline(None, suite_run(*four))
    tiny = suite_run("b", ms=7.0, seed=90)            # an `--entry b` run
    # alone over a fuller baseline: refused, naming the file, what it lacks, the way out
    with pytest.raises(ValueError) as ei:
        update_baseline(base, tiny)
    msg = str(ei.value)
    assert msg.startswith("results file #1 lacks 'a', 'c', 'd' (in the baseline)")
    assert "`--entry NAME` updates only some" in msg and "\n" not in msg
    with pytest.raises(ValueError, match=r"^r_b\.json lacks 'a', 'c', 'd' \(in base\.json\)"):
        update_baseline(base, tiny, sources=["r_b.json"], baseline_label="base.json")
    # merged with full runs (no baseline yet): refused in either order, the file named
    full = suite_run(*four, seed=91)
    for runs, label in (([full, tiny], "results file #2"), ([tiny, full], "results file #1")):
        with pytest.raises(ValueError, match=f"^{label} lacks 'a', 'c', 'd' \\(in results "
                                             f"file #[12]\\)"):
            update_baseline(None, runs)
    # runs lacking different entries: each named with what it lacks
    with pytest.raises(ValueError, match=r"#1 lacks 'c' \(in results file #2\); results "
                                         r"file #2 lacks 'a' \(in results file #1\)"):
        update_baseline(None, [suite_run("a", "b"), suite_run("b", "c")])
    # with --entry only that entry changes; every other keeps its record as it was
    newer, lines = update_baseline(base, [full, tiny], names=["b", "b"])
    assert [ln.split(":")[0] for ln in lines] == ["b"]
    assert list(newer.records) == list(four)
    assert all(newer.records[n] is base.records[n] for n in ("a", "c", "d"))
    assert len(newer.records["b"].run_medians) == 2
    # complete runs may add an entry the baseline lacks
    grown, lines = update_baseline(base, suite_run(*four, "e", seed=92))
    assert list(grown.records) == [*four, "e"] and lines[-1].startswith("e: added at")


def test_merging_runs_of_different_models_is_refused() -> None:
    a = results(record("m", samples(10.0), sha="a" * 64))
    b = results(record("m", samples(10.0), sha="b" * 64))
    with pytest.raises(ValueError, match="different model files"):
        update_baseline(None, [a, b])


def test_reference_cancels_a_slowdown_of_the_whole_machine() -> None:
    def run(entry_ms: float, ref_ms: float, seed: int, host: tuple = (1.0, 1.0, 1.0)):
        # three rounds; `host` slows both models of a round alike (measured back to back)
        e = record("app", *[samples(entry_ms * h, n=40, seed=seed + i) for i, h in
                            enumerate(host)])
        r = record("canary", *[samples(ref_ms * h, n=40, seed=seed + 10 + i) for i, h in
                               enumerate(host)])
        e = BenchRecord(e.name, {**e.entry, "reference": "canary"}, e.measurement, e.rounds)
        return results(e, r)

    base = run(10.0, 5.0, 100)
    busy_host = run(10.0, 5.0, 200, host=(1.3, 1.25, 1.35))      # same models, slower machine
    cs = {c.name: c for c in compare_results(base, busy_host)}
    assert cs["canary"].verdict == "regression"                  # the raw view is fooled
    assert cs["app"].verdict == "ok" and cs["app"].reference == "canary"
    assert abs(cs["app"].ratio - 1.0) < 0.03
    assert cs["app"].current.median_ms > 12.0                    # raw numbers still shown
    assert "relative to reference 'canary'" in cs["app"].explain()
    slower_model = run(11.5, 5.0, 300, host=(1.3, 1.25, 1.35))   # a real 15% slowdown too
    assert {c.name: c for c in compare_results(base, slower_model)}["app"].verdict == \
        "regression"


def test_normalize_needs_paired_rounds() -> None:
    e = record("e", samples(10.0, n=30), samples(10.0, n=30, seed=1))
    r = record("r", samples(5.0, n=60))
    assert normalize(e, r) is None
    r2 = record("r", samples(5.0, n=20, seed=2), samples(5.0, n=25, seed=3))
    n = normalize(e, r2)
    assert n is not None and n.rounds == e.rounds
    assert n.measurement.median_ms == pytest.approx(2.0, rel=0.05)


def paired_record(name: str, entry_ms: float, ref_ms: float, episodes: np.ndarray,
                  seed: int, rounds: int = 3) -> BenchRecord:
    """Entry and reference timed alternately: sample i of both saw slowdown episodes[i]."""
    n = len(episodes) // rounds
    e = [samples(entry_ms, n=n, rel_sd=0.01, seed=seed + i) * episodes[i * n:(i + 1) * n]
         for i in range(rounds)]
    r = [samples(ref_ms, n=n, rel_sd=0.01, seed=seed + 50 + i) * episodes[i * n:(i + 1) * n]
         for i in range(rounds)]
    entry = {"name": name, "tolerance": 0.05, "reference": "canary",
             "settings": {"rel_ci": 0.02}}
    return BenchRecord.from_rounds(name, entry, [meas(x) for x in e], 0.02, [meas(x) for x in r])


def test_paired_reference_cancels_slow_episodes_within_a_round() -> None:
    rng = np.random.default_rng(7)

    def episodes(n: int = 90) -> np.ndarray:   # seconds-long 20% slowdowns, half the time
        return np.repeat(np.where(rng.random(n // 10) < 0.5, 1.2, 1.0), 10)

    canary = record("canary", samples(5.0, n=30), samples(5.0, n=30, seed=1),
                    samples(5.0, n=30, seed=2))
    runs = [paired_record("app", 10.0, 5.0, episodes(), seed=10 * k) for k in range(5)]
    base = BenchRecord.merge(runs)
    assert len(base.paired_ms) == len(base.measurement.samples_ms)
    assert len(base.paired_run_medians) == len(base.run_medians) == 5
    assert run_drift(base.paired_run_medians) < 0.02 < run_drift(base.run_medians)
    same = paired_record("app", 10.0, 5.0, episodes(), seed=99)
    slower = paired_record("app", 11.0, 5.0, episodes(), seed=98)
    for cur, verdict in ((same, "ok"), (slower, "regression")):
        c = compare_results(results(base, canary), results(cur, canary))
        app = {x.name: x for x in c}["app"]
        assert app.verdict == verdict and app.paired, (app.ratio, app.ci_low, app.ci_high)
        assert "timed alternately" in app.explain()
    # file round trip keeps the pairing; a run without it drops pairing from a merge
    back = BenchResults.from_dict(results(base, canary).to_dict())
    assert back.records["app"].paired_ms == base.paired_ms
    assert back.records["app"].paired_run_medians == base.paired_run_medians
    plain = BenchRecord(same.name, same.entry, same.measurement, same.rounds)
    assert BenchRecord.merge([same, plain]).paired_ms == ()
    with pytest.raises(ValueError, match="paired reference samples"):
        BenchRecord(same.name, same.entry, same.measurement, same.rounds, (), (1.0, 2.0))

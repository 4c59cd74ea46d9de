"""Latency-regression statistics and verdicts for ``mnas bench compare``.

**Statistic.** The ratio of medians ``r = median(current) / median(baseline)`` with a
95% confidence interval ``[lo, hi]``, the union of two intervals:

* a **percentile bootstrap** (fixed seed), two-level: each side is a set of *rounds*
  (separate measurements of the model within one run, see :mod:`latency.suite`);
  rounds are resampled, then samples within each chosen round, so drift between the
  rounds of a run widens the interval. With one round it is the plain bootstrap.
* when the baseline was accepted from ``k >= 2`` runs (``mnas bench baseline update
  r1.json r2.json ...``), a **run-level prediction interval**: the current run is one
  more draw from the distribution of run medians, ``log r ± t(k-1) · s · sqrt(1 + 1/k)``
  with ``s`` the SD of the baseline's log run medians. Drift that outlasts a run
  (another job on the runner for minutes, another VM) is invisible inside one run —
  on this project's shared 2-core host it was 2-20% between runs against 1-3% within
  one — and only repeated runs can measure it. A one-run baseline gets no such term.

An entry with a ``reference`` (another suite entry measured in the same rounds, e.g. an
unchanging copy of the model) is compared *relative* to it: each round's samples are
divided by the reference's median of the same round (its run medians likewise), which
cancels slowdowns of the whole machine — on the shared host one run in 16 was 45%
slower throughout, which no statistic of the entry alone can tell from a regression.

Why a bootstrap of the median ratio and not Mann-Whitney / Hodges-Lehmann: the median
is the number people read and is robust to the one-sided spikes (preemption, frequency
changes) that dominate latency samples; Hodges-Lehmann's interval assumes the two
distributions differ by a pure shift (or scale), while a slower model also stretches
the tail; and a fixed seed makes the same two files give the same verdict.

**Rule**, with tolerance ``t`` (default 5%), for a baseline of ``k >= 3`` runs: the
tolerance is a threshold on the *measured* change, the interval guards it against noise.

* ``regression``   — ``r > 1 + t`` and ``lo > 1``: slower than the tolerance allows, and
  surely slower than the baseline;
* ``inconclusive`` — ``r > 1 + t`` but ``lo <= 1`` (beyond the tolerance, but not
  distinguishable from no change), or ``hi > 1 + 2t`` (a slowdown of twice the tolerance
  cannot be excluded): noise makes the decision impossible; the policy decides (fail
  with exit 2, or pass);
* ``improvement``  — ``r < 1 - t`` and ``hi < 1``;
* ``ok``           — otherwise: measured within the tolerance, and ``2t`` excluded.

A baseline of one or two runs cannot know the run-to-run drift (the interval misses
that term), so there the tolerance has to absorb it: ``regression`` needs the whole
interval above ``1 + t``, an interval straddling ``1 + t`` is ``inconclusive``, and
``ok`` needs ``hi <= 1 + t``.

Why not "regression only when the whole interval is above ``1 + t``": to catch a
``2t`` slowdown 95% of the time that rule needs the standard error of ``log r`` under
``t / 3.6`` (1.4% for t = 5%), which repeated runs on the shared host never reached
(between-run drift alone was 2%). This rule needs about ``t / 2`` (a 10% slowdown has
its estimate above 1.05 with probability Φ(0.05/SE)), while a false alarm still needs
an identical run to *measure* beyond ``t`` *and* be significantly slower.
``benchmarks/bench_gate.py`` measures both rules' rates on real repeated measurements.
Independently, an entry whose current median exceeds its ``max_ms`` fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from latency.bench_results import BenchRecord, BenchResults, identity_diff
from latency.measurement import Measurement

VERDICTS = ("ok", "regression", "improvement", "inconclusive", "new", "missing")
INCONCLUSIVE_POLICIES = ("fail", "pass")
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
N_BOOT = 2000
SEED = 0
#: baseline runs from which the run-to-run drift counts as measured (interval + rule)
MIN_RUNS_FOR_DRIFT = 3


# --------------------------------------------------------------------- statistics
def _check_rounds(x: np.ndarray, rounds: Sequence[int] | None, side: str) -> list[int]:
    sizes = [int(x.size)] if not rounds else [int(r) for r in rounds]
    if sum(sizes) != x.size or min(sizes) < 1:
        raise ValueError(f"{side} rounds {list(sizes)} do not add up to its {x.size} samples")
    return sizes


def _boot_medians(x: np.ndarray, sizes: list[int], rng: np.random.Generator,
                  n_boot: int) -> np.ndarray:
    """Bootstrap medians: resample rounds, then samples within each chosen round (every
    chosen round contributes the median round size, so each round weighs the same)."""
    if len(sizes) == 1:
        return np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    r = len(sizes)
    lens = np.asarray(sizes, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int32)
    per = int(np.median(lens))
    pick = rng.integers(0, r, size=(n_boot, r, 1))
    offs = rng.integers(0, lens[pick], size=(n_boot, r, per), dtype=np.int32)
    # float32 halves the memory traffic; 1e-7 relative precision is far below any CI
    return np.median(x.astype(np.float32)[(starts[pick] + offs).reshape(n_boot, -1)],
                     axis=1).astype(float)


def run_drift(run_medians: Sequence[float]) -> float:
    """Run-to-run spread: sample SD of log run medians (nan with fewer than 2 runs)."""
    x = np.asarray(run_medians, dtype=float)
    if x.size < 2 or np.any(x <= 0):
        return math.nan
    return float(np.std(np.log(x), ddof=1))


def median_ratio_ci(baseline_ms: Iterable[float], current_ms: Iterable[float], *,
                    baseline_rounds: Sequence[int] | None = None,
                    current_rounds: Sequence[int] | None = None,
                    baseline_run_medians: Sequence[float] = (),
                    confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = SEED
                    ) -> tuple[float, float, float]:
    """``(ratio, low, high)``: median(current)/median(baseline) and its 95% interval.

    ``*_rounds`` are the sizes of consecutive rounds within each sample list (None: one
    round). ``baseline_run_medians`` (>= 3 runs) adds the run-level prediction interval
    (see the module docstring).
    """
    b = np.asarray(list(baseline_ms), dtype=float)
    c = np.asarray(list(current_ms), dtype=float)
    if b.size < 3 or c.size < 3:
        raise ValueError(f"need >= 3 samples on each side, got {b.size} and {c.size}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))) or b.min() <= 0 or c.min() <= 0:
        raise ValueError("latency samples must be finite and positive")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    bs = _check_rounds(b, baseline_rounds, "baseline")
    cs = _check_rounds(c, current_rounds, "current")
    rng = np.random.default_rng(seed)
    ratios = _boot_medians(c, cs, rng, n_boot) / _boot_medians(b, bs, rng, n_boot)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(ratios, [alpha, 1.0 - alpha]))
    ratio = float(np.median(c) / np.median(b))
    k = len(baseline_run_medians)
    drift = run_drift(baseline_run_medians)
    if k >= MIN_RUNS_FOR_DRIFT and not math.isnan(drift):
        half = _t_quantile(1.0 - alpha, k - 1) * drift * math.sqrt(1.0 + 1.0 / k)
        lo, hi = min(lo, ratio * math.exp(-half)), max(hi, ratio * math.exp(half))
    # the percentile interval of a discrete statistic can miss the point estimate
    return ratio, min(lo, ratio), max(hi, ratio)


def _t_quantile(p: float, df: int) -> float:
    """Student t quantile (scipy comes with scikit-learn, a core dependency)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def classify(ratio: float, low: float, high: float, tolerance: float,
             baseline_runs: int = MIN_RUNS_FOR_DRIFT) -> str:
    """Verdict for a ratio and its interval (see the module docstring for the rule)."""
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be a fraction in (0, 1), got {tolerance}")
    if baseline_runs < MIN_RUNS_FOR_DRIFT:   # drift unmeasured: the tolerance absorbs it
        if low > 1.0 + tolerance:
            return "regression"
        if high > 1.0 + tolerance:
            return "inconclusive"
        return "improvement" if high < 1.0 - tolerance else "ok"
    if ratio > 1.0 + tolerance and low > 1.0:
        return "regression"
    if ratio > 1.0 + tolerance or high > 1.0 + 2.0 * tolerance:
        return "inconclusive"
    if ratio < 1.0 - tolerance and high < 1.0:
        return "improvement"
    return "ok"


# ---------------------------------------------------------------------- comparing
@dataclass(frozen=True)
class Comparison:
    """The verdict for one entry."""

    name: str
    verdict: str
    tolerance: float
    baseline: Measurement | None = None
    current: Measurement | None = None
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    max_ms: float | None = None
    drift: float = math.nan        # SD of the baseline's log run medians, nan if one run
    baseline_runs: int = 1
    reference: str | None = None   # ratio and CI are relative to this entry's, per round
    paired: bool = False           # ... to its samples timed alternately with the entry's

    @property
    def over_budget(self) -> bool:
        return (self.current is not None and self.max_ms is not None
                and self.current.median_ms > self.max_ms)

    @property
    def model_changed(self) -> bool:
        return (self.baseline is not None and self.current is not None
                and self.baseline.model_sha256 != self.current.model_sha256)

    @property
    def noisy(self) -> bool:
        return any(m is not None and m.noisy for m in (self.baseline, self.current))

    def failed(self, inconclusive: str = "fail") -> bool:
        return (self.verdict == "regression" or self.over_budget
                or (self.verdict == "inconclusive" and inconclusive == "fail"))

    @property
    def status(self) -> str:
        """Verdict plus the budget outcome, e.g. ``regression, over max_ms``."""
        return (self.verdict + (", over max_ms" if self.over_budget else "")
                + (f" (vs {self.reference})" if self.reference else ""))

    def explain(self) -> str:
        """One sentence a person reads in a CI log."""
        t = f"{self.tolerance:.1%}"
        parts: list[str] = []
        if self.verdict == "new":
            parts.append("not in the baseline (accept it with `mnas bench baseline update`)")
        elif self.verdict == "missing":
            parts.append("missing from the results: in the baseline but not measured in this "
                         "run")
        else:
            change = f"{self.ratio - 1:+.1%} (95% CI {self.ci_low - 1:+.1%} .. " \
                     f"{self.ci_high - 1:+.1%})"
            strict = self.baseline_runs < MIN_RUNS_FOR_DRIFT
            if strict:
                why = f"the interval straddles the +{t} tolerance"
            elif self.ratio > 1 + self.tolerance:
                why = "beyond the tolerance, but the interval includes no change"
            else:
                why = f"a slowdown of +{2 * self.tolerance:.1%} cannot be excluded"
            parts.append({
                "regression": f"slower by {change}: " + (
                    f"the whole interval is above the +{t} tolerance" if strict else
                    f"beyond the +{t} tolerance and significantly slower than the baseline"),
                "inconclusive": f"{change}: {why} - too noisy to decide (a baseline from "
                                "more runs, more rounds/runs, a quieter runner, or a "
                                "larger tolerance)",
                "improvement": f"faster by {change}, significantly and beyond -{t}",
                "ok": f"{change}, within the +{t} tolerance",
            }[self.verdict])
        if self.over_budget:
            assert self.current is not None
            parts.append(f"median {self.current.median_ms:.3f} ms is over max_ms "
                         f"{self.max_ms:g} ms")
        if not math.isnan(self.drift):
            parts.append(f"run-to-run spread ±{self.drift:.1%} (SD) over {self.baseline_runs} "
                         "baseline runs included")
        elif self.verdict in ("regression", "inconclusive"):
            parts.append(f"baseline from {self.baseline_runs} run(s): run-to-run drift not "
                         "measured (accept 5+ runs with `mnas bench baseline update`)")
        if self.reference is not None:
            parts.append(f"relative to reference {self.reference!r} " + (
                "timed alternately with it" if self.paired else "measured in the same rounds"))
        if self.model_changed:
            parts.append("model file changed since the baseline")
        if self.noisy and self.verdict != "missing":  # nothing of this run to be noisy
            parts.append("a measurement was flagged noisy")
        return "; ".join(parts)


def compare_records(name: str, base: BenchRecord | None, cur: BenchRecord | None,
                    tolerance: float | None = None) -> Comparison:
    """Compare one entry; ``tolerance`` overrides the suite's per-entry tolerance."""
    tol = tolerance if tolerance is not None else (cur or base).tolerance  # type: ignore[union-attr]
    max_ms = cur.max_ms if cur is not None else None
    if base is None or cur is None:
        return Comparison(name, "new" if base is None else "missing", tol,
                          None if base is None else base.measurement,
                          None if cur is None else cur.measurement, max_ms=max_ms)
    ratio, lo, hi = median_ratio_ci(base.measurement.samples_ms, cur.measurement.samples_ms,
                                    baseline_rounds=base.rounds or None,
                                    current_rounds=cur.rounds or None,
                                    baseline_run_medians=base.run_medians)
    runs = max(len(base.run_medians), 1)
    return Comparison(name, classify(ratio, lo, hi, tol, runs), tol, base.measurement, cur.measurement,
                      ratio, lo, hi, max_ms,
                      run_drift(base.run_medians) if runs >= MIN_RUNS_FOR_DRIFT else math.nan,
                      runs)


def normalize(rec: BenchRecord, ref: BenchRecord | None, *, paired: bool = True
              ) -> BenchRecord | None:
    """``rec`` relative to its reference: what is left is the entry's speed relative to
    the reference measured at the same moments, with the machine's slowdowns cancelled.

    With ``paired`` and samples of the reference timed *alternately* with ``rec``'s
    (:attr:`BenchRecord.paired_ms`, local devices), each round is divided by the median
    of its own paired samples, and run medians by the paired run medians; ``ref`` is not
    needed. Otherwise ``rec``'s samples are divided, round by round, by ``ref``'s round
    medians (and its run medians by ``ref``'s). None when those rounds (or runs) do not
    pair up."""
    m = rec.measurement
    if paired and rec.paired_ms:
        x = rec.relative_samples()
        runs = rec.paired_run_medians
    else:
        if ref is None:
            return None
        a, b = rec.rounds or (len(m.samples_ms),), ref.rounds or (len(ref.measurement.samples_ms),)
        if len(a) != len(b) or len(rec.run_medians) != len(ref.run_medians):
            return None
        x = np.asarray(m.samples_ms, dtype=float) / np.repeat(np.asarray(ref.round_medians), a)
        runs = tuple(e / r for e, r in zip(rec.run_medians, ref.run_medians, strict=True))
    norm = Measurement.from_samples(x, warmup=m.warmup, threads=m.threads,
                                    runtime=m.runtime, runtime_version=m.runtime_version,
                                    model_sha256=m.model_sha256, device=m.device,
                                    fingerprint=m.fingerprint, clock=m.clock)
    return BenchRecord(rec.name, rec.entry, norm, rec.rounds, runs)


def _compare_entry(name: str, baseline: BenchResults, results: BenchResults,
                   tolerance: float | None) -> Comparison:
    base, cur = baseline.records.get(name), results.records.get(name)
    ref_name = (cur or base).entry.get("reference")  # type: ignore[union-attr]
    if base is None or cur is None or not ref_name or ref_name == name:
        return compare_records(name, base, cur, tolerance)
    rb, rc = baseline.records.get(ref_name), results.records.get(ref_name)
    # both sides paired (timed alternately with the reference) or both per round
    paired = bool(base.paired_ms) and bool(cur.paired_ms)
    nb, nc = normalize(base, rb, paired=paired), normalize(cur, rc, paired=paired)
    if nb is None or nc is None:
        raise ValueError(f"entry {name!r}: its reference {ref_name!r} is missing or its rounds "
                         "do not pair up in one of the files; measure both together (`mnas "
                         "bench run` does) and accept them together")
    c = compare_records(name, nb, nc, tolerance)
    return replace(c, baseline=base.measurement, current=cur.measurement, reference=ref_name,
                   paired=paired)


def compare_results(baseline: BenchResults, results: BenchResults, *,
                    tolerance: float | None = None, force: bool = False) -> list[Comparison]:
    """Verdicts for every entry of either file, in results order then baseline-only ones.

    Raises ValueError naming the differing fields when an entry's device fingerprint,
    runtime, threads or clock differ from the baseline's (comparing them would measure the
    machine, not the change) unless ``force``.
    """
    if tolerance is not None and not 0.0 < tolerance < 1.0:
        raise ValueError(f"--tolerance must be a fraction in (0, 1) such as 0.05, got {tolerance}")
    if not force:
        for name, cur in results.records.items():
            base = baseline.records.get(name)
            if base is None:
                continue
            a, b = base.measurement.clock, cur.measurement.clock
            if a != b:
                raise ValueError(
                    f"entry {name!r}: field 'clock': the baseline was timed with the {a} "
                    f"clock and the results with the {b} clock, which measure different "
                    "things (CPU time leaves out descheduling and waits); set the suite's "
                    f"clock to {a!r}, or re-measure and accept a {b}-clock baseline with "
                    "`mnas bench baseline update ... --force`, or compare anyway with --force")
            diff = identity_diff(base.identity(), cur.identity())
            if diff:
                raise ValueError(
                    f"entry {name!r}: the baseline was measured on a different device or "
                    f"runtime ({'; '.join(diff)}); re-measure it here and accept it with "
                    "`mnas bench baseline update RESULTS --baseline BASELINE --force`, "
                    "or compare anyway with --force")
    names = list(results.records) + [n for n in baseline.records if n not in results.records]
    if not names:
        raise ValueError("nothing to compare: both files have no entries")
    return [_compare_entry(n, baseline, results, tolerance) for n in names]


def exit_code(comparisons: Iterable[Comparison], inconclusive: str = "fail") -> int:
    """0 = no regression, 1 = a regression or an entry over max_ms, 2 = inconclusive
    under the ``fail`` policy."""
    if inconclusive not in INCONCLUSIVE_POLICIES:
        raise ValueError(f"inconclusive policy must be one of {INCONCLUSIVE_POLICIES}, "
                         f"got {inconclusive!r}")
    cs = list(comparisons)
    if any(c.verdict == "regression" or c.over_budget for c in cs):
        return EXIT_REGRESSION
    if inconclusive == "fail" and any(c.verdict == "inconclusive" for c in cs):
        return EXIT_ERROR
    return EXIT_OK


def _all_entries(baseline: BenchResults | None, runs: Sequence[BenchResults],
                 labels: Sequence[str], baseline_label: str) -> list[str]:
    """Every entry of the runs and the baseline, which each run must hold.

    Without ``--entry`` the runs are taken as complete runs of the suite: one lacking an
    entry (an ``--entry NAME`` run) would otherwise leave that entry silently on old
    numbers, or merged from fewer runs than the others.
    """
    sources = [(label, r.records) for label, r in zip(labels, runs, strict=True)]
    if baseline is not None:
        sources.append((baseline_label, baseline.records))
    wanted = list(dict.fromkeys(n for _, recs in sources for n in recs))
    problems = []
    for label, recs in sources[:len(runs)]:
        lacking = [n for n in wanted if n not in recs]
        if lacking:
            holders = [other for other, o in sources if any(n in o for n in lacking)]
            problems.append(f"{label} lacks {', '.join(map(repr, lacking))} "
                            f"(in {', '.join(holders)})")
    if problems:
        raise ValueError(f"{'; '.join(problems)}: without --entry every results file must "
                         "hold the same entries, all of the baseline's included; "
                         "`--entry NAME` updates only some")
    return wanted


def update_baseline(baseline: BenchResults | None, results: BenchResults | Sequence[BenchResults],
                    *, names: list[str] | None = None, force: bool = False,
                    sources: Sequence[str] | None = None, baseline_label: str = "the baseline"
                    ) -> tuple[BenchResults, list[str]]:
    """Accept ``results`` (one run or several; all entries, or ``names``) as the baseline.

    Several runs of the same suite are merged per entry (see :meth:`BenchRecord.merge`),
    which lets the comparison account for run-to-run drift. Without ``names`` every run
    must hold every entry of the others and of ``baseline``; with ``names`` only those are
    replaced and the others keep their old numbers. Replacing an entry measured on a
    different device/runtime is refused unless ``force``. ``sources`` (one per run) and
    ``baseline_label`` name the files in errors. Returns the new baseline and one line per
    change.
    """
    runs = [results] if isinstance(results, BenchResults) else list(results)
    if not runs:
        raise ValueError("no results to accept")
    labels = list(sources) if sources is not None else [
        f"results file #{i}" for i in range(1, len(runs) + 1)]
    if not names:
        chosen = _all_entries(baseline, runs, labels, baseline_label)
    else:
        chosen = list(dict.fromkeys(names))   # --entry a --entry a: one line, not two
        for label, r in zip(labels, runs, strict=True):
            unknown = [n for n in chosen if n not in r.records]
            if unknown:
                raise ValueError(f"no entry named {', '.join(map(repr, unknown))} in {label}; "
                                 f"entries: {', '.join(r.records)}")
    old = baseline.records if baseline is not None else {}
    lines: list[str] = []
    accepted: dict[str, BenchRecord] = {}
    for n in chosen:
        new = BenchRecord.merge([r.records[n] for r in runs])
        accepted[n] = new
        drift = run_drift(new.run_medians)
        note = "" if math.isnan(drift) else f", run-to-run drift ±{drift:.1%} over " \
            f"{len(new.run_medians)} runs"
        prev = old.get(n)
        if prev is None:
            lines.append(f"{n}: added at {new.measurement.median_ms:.3f} ms{note}")
            continue
        diff = identity_diff(prev.identity(), new.identity())
        if diff and not force:
            raise ValueError(f"entry {n!r}: the new results come from a different device or "
                             f"runtime than the baseline ({'; '.join(diff)}); pass --force to "
                             "replace the baseline measured there")
        a, b = prev.measurement.median_ms, new.measurement.median_ms
        lines.append(f"{n}: {a:.3f} ms -> {b:.3f} ms ({b / a - 1:+.1%}){note}"
                     + (" [device changed]" if diff else ""))
    merged = dict(old)
    merged.update(accepted)
    meta = dict(baseline.meta) if baseline is not None else {}
    meta["accepted_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta["accepted_runs"] = len(runs)
    return BenchResults(merged, runs[-1].suite, runs[-1].created, meta), lines

"""Latency-regression statistics and verdicts for ``mnas bench compare``.

The statistic is the **ratio of medians** ``current / baseline`` with a 95% confidence
interval from a **percentile bootstrap** (each side resampled independently, fixed
seed). Each side is a set of *rounds* (separate measurements of the same model, see
:mod:`latency.suite`) and the bootstrap is two-level: rounds are resampled, then samples
within each chosen round. On a shared machine the median moves between runs far more
than the samples of one run suggest (measured here: 9-20% between runs under load,
1-3% within one); resampling rounds puts that drift into the interval, so it makes a
comparison *inconclusive* instead of a false regression. With one round per side it is
the plain bootstrap. Drift that outlasts one run (another job on the runner for minutes,
a different VM) is invisible inside a run, so a baseline accepted from several runs
(``mnas bench baseline update r1.json r2.json r3.json``) records its per-run medians;
their spread ``s`` (log scale) is the device's run-to-run drift, and the current run's
own unknown offset is added to every bootstrap ratio as ``exp(s * T_{k-1})`` (Student t:
``s`` comes from only ``k`` runs). A single-run baseline has no drift term. Why the bootstrap and not a Mann-Whitney / Hodges-Lehmann shift:

* we report medians everywhere (robust to the one-sided spikes — preemption,
  frequency changes — that dominate latency samples), so the gate judges the number
  people read, not a different location estimate;
* Hodges-Lehmann's interval assumes the two distributions differ by a pure shift
  (or a pure scale, on logs); a slower model also stretches the tail, which the
  bootstrap of the median ratio does not need to assume away;
* with a fixed seed the same two files always give the same interval and verdict,
  so a CI job is reproducible.

Rule, with tolerance ``t`` (default 5%) and bootstrap interval ``[lo, hi]``:

* ``regression``   — ``lo > 1 + t``: the whole interval is above the tolerance band;
* ``inconclusive`` — ``lo <= 1 + t < hi``: the interval straddles the upper bound,
  noise makes the decision impossible (policy decides: fail with exit 2, or pass);
* ``improvement``  — ``hi < 1 - t``: the whole interval is below the band;
* ``ok``           — otherwise (``hi <= 1 + t``: confidently not slower than ``t``).

So an identical re-run (ratio ≈ 1, interval narrower than ``t``) is ``ok``, and a real
10% slowdown (ratio ≈ 1.10) is a ``regression`` as soon as the interval's half-width
is under 5%. ``benchmarks/bench_gate.py`` measures both rates on real noise.
Independently, an entry whose current median exceeds its ``max_ms`` fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from latency.bench_results import BenchRecord, BenchResults, identity_diff
from latency.measurement import Measurement

VERDICTS = ("ok", "regression", "improvement", "inconclusive", "new", "missing")
INCONCLUSIVE_POLICIES = ("fail", "pass")
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
N_BOOT = 2000
SEED = 0


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
    lens = np.asarray(sizes)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    per = int(np.median(lens))
    pick = rng.integers(0, r, size=(n_boot, r, 1))
    offs = (rng.random((n_boot, r, per)) * lens[pick]).astype(np.int64)
    return np.median(x[(starts[pick] + offs).reshape(n_boot, -1)], axis=1)


def run_drift(run_medians: Sequence[float]) -> float:
    """Run-to-run drift: sample SD of log run medians (nan with fewer than 2 runs)."""
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
    """``(ratio, low, high)``: median(current)/median(baseline) and its bootstrap CI.

    ``*_rounds`` are the sizes of consecutive rounds within each sample list (None: one
    round); with several rounds the bootstrap is two-level. ``baseline_run_medians``
    (>= 2 runs) adds the run-to-run drift term (see the module docstring).
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
    drift = run_drift(baseline_run_medians)
    if not math.isnan(drift):
        ratios = ratios * np.exp(drift * rng.standard_t(len(baseline_run_medians) - 1, n_boot))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    ratio = float(np.median(c) / np.median(b))
    # the percentile interval of a discrete statistic can miss the point estimate
    return ratio, float(min(lo, ratio)), float(max(hi, ratio))


def classify(low: float, high: float, tolerance: float) -> str:
    """Verdict for a ratio interval (see the module docstring for the rule)."""
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be a fraction in (0, 1), got {tolerance}")
    if low > 1.0 + tolerance:
        return "regression"
    if high > 1.0 + tolerance:
        return "inconclusive"
    if high < 1.0 - tolerance:
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
    drift: float = math.nan        # run-to-run drift of the baseline (log SD), nan unknown
    baseline_runs: int = 1

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
        return self.verdict + (", over max_ms" if self.over_budget else "")

    def explain(self) -> str:
        """One sentence a person reads in a CI log."""
        t = f"{self.tolerance:.1%}"
        parts: list[str] = []
        if self.verdict == "new":
            parts.append("not in the baseline (accept it with `mnas bench baseline update`)")
        elif self.verdict == "missing":
            parts.append("in the baseline but not measured in these results")
        else:
            change = f"{self.ratio - 1:+.1%} (95% CI {self.ci_low - 1:+.1%} .. " \
                     f"{self.ci_high - 1:+.1%})"
            parts.append({
                "regression": f"slower by {change}, entirely above the +{t} tolerance",
                "inconclusive": f"{change} straddles the +{t} tolerance: too noisy to "
                                "decide (more runs/rounds, a quieter runner, or a larger "
                                "tolerance)",
                "improvement": f"faster by {change}, entirely below -{t}",
                "ok": f"{change}, within the +{t} tolerance",
            }[self.verdict])
        if self.over_budget:
            assert self.current is not None
            parts.append(f"median {self.current.median_ms:.3f} ms is over max_ms "
                         f"{self.max_ms:g} ms")
        if not math.isnan(self.drift):
            parts.append(f"run-to-run drift ±{self.drift:.1%} over {self.baseline_runs} "
                         "baseline runs included")
        elif self.verdict in ("regression", "inconclusive"):
            parts.append("single-run baseline: run-to-run drift not measured (accept 3+ runs "
                         "with `mnas bench baseline update`)")
        if self.model_changed:
            parts.append("model file changed since the baseline")
        if self.noisy:
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
    return Comparison(name, classify(lo, hi, tol), tol, base.measurement, cur.measurement,
                      ratio, lo, hi, max_ms, run_drift(base.run_medians),
                      max(len(base.run_medians), 1))


def compare_results(baseline: BenchResults, results: BenchResults, *,
                    tolerance: float | None = None, force: bool = False) -> list[Comparison]:
    """Verdicts for every entry of either file, in results order then baseline-only ones.

    Raises ValueError naming the differing fields when an entry's device fingerprint,
    runtime or threads differ from the baseline's (comparing them would measure the
    machine, not the change) unless ``force``.
    """
    if tolerance is not None and not 0.0 < tolerance < 1.0:
        raise ValueError(f"--tolerance must be a fraction in (0, 1) such as 0.05, got {tolerance}")
    if not force:
        for name, cur in results.records.items():
            base = baseline.records.get(name)
            if base is None:
                continue
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
    return [compare_records(n, baseline.records.get(n), results.records.get(n), tolerance)
            for n in names]


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


def update_baseline(baseline: BenchResults | None, results: BenchResults | Sequence[BenchResults],
                    *, names: list[str] | None = None, force: bool = False
                    ) -> tuple[BenchResults, list[str]]:
    """Accept ``results`` (one run or several; all entries, or ``names``) as the baseline.

    Several runs of the same suite are merged per entry (see :meth:`BenchRecord.merge`),
    which lets the comparison account for run-to-run drift. Entries not selected keep
    their old numbers. Replacing an entry measured on a different device/runtime is
    refused unless ``force``. Returns the new baseline and one line per change.
    """
    runs = [results] if isinstance(results, BenchResults) else list(results)
    if not runs:
        raise ValueError("no results to accept")
    available = [n for n in runs[-1].records]
    chosen = names or available
    for i, r in enumerate(runs, start=1):
        unknown = [n for n in chosen if n not in r.records]
        if unknown:
            raise ValueError(f"no entry named {', '.join(map(repr, unknown))} in results file "
                             f"#{i}; entries: {', '.join(r.records)}")
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

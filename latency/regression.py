"""Latency-regression statistics and verdicts for ``mnas bench compare``.

The statistic is the **ratio of medians** ``current / baseline`` with a 95% confidence
interval from a **percentile bootstrap** (each side resampled independently, fixed
seed). Why this and not a Mann-Whitney / Hodges-Lehmann shift:

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

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latency.measurement import Measurement

RESULTS_FORMAT = "mnas-bench-results/1"
VERDICTS = ("ok", "regression", "improvement", "inconclusive", "new", "missing")
INCONCLUSIVE_POLICIES = ("fail", "pass")
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
N_BOOT = 2000
SEED = 0
# Measurement fields that change latency as much as the hardware does: part of identity.
_IDENTITY_FIELDS = ("runtime", "runtime_version", "threads")


# --------------------------------------------------------------------- statistics
def median_ratio_ci(baseline_ms: Iterable[float], current_ms: Iterable[float], *,
                    confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = SEED
                    ) -> tuple[float, float, float]:
    """``(ratio, low, high)``: median(current)/median(baseline) and its bootstrap CI."""
    b = np.asarray(list(baseline_ms), dtype=float)
    c = np.asarray(list(current_ms), dtype=float)
    if b.size < 3 or c.size < 3:
        raise ValueError(f"need >= 3 samples on each side, got {b.size} and {c.size}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))) or b.min() <= 0 or c.min() <= 0:
        raise ValueError("latency samples must be finite and positive")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, size=(n_boot, c.size))], axis=1)
    ratios = mc / mb
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


# ------------------------------------------------------------------ results files
@dataclass(frozen=True)
class BenchRecord:
    """One measured suite entry: what was measured and how, and the raw samples."""

    name: str
    entry: dict[str, Any]          # SuiteEntry.to_dict(): device, settings, tolerance...
    measurement: Measurement

    @property
    def tolerance(self) -> float:
        return float(self.entry.get("tolerance", 0.05))

    @property
    def max_ms(self) -> float | None:
        v = self.entry.get("max_ms")
        return None if v is None else float(v)

    def identity(self) -> dict[str, Any]:
        """Device fingerprint plus the runtime/threads: what must match to compare."""
        m = self.measurement
        ident = {f"fingerprint.{k}": v for k, v in m.fingerprint.items()}
        ident.update({k: getattr(m, k) for k in _IDENTITY_FIELDS})
        return ident

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entry": self.entry, "measurement": self.measurement.to_dict()}


@dataclass
class BenchResults:
    """A ``mnas bench run`` output; a baseline is the same format."""

    records: dict[str, BenchRecord] = field(default_factory=dict)
    suite: str = ""
    created: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": RESULTS_FORMAT, "suite": self.suite, "created": self.created,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
                "meta": self.meta,
                "entries": [r.to_dict() for r in self.records.values()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "results") -> BenchResults:
        if not isinstance(d, Mapping) or d.get("format") != RESULTS_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(f"{where}: not a mnas bench results file (format {got!r}, "
                             f"expected {RESULTS_FORMAT!r}); produce one with `mnas bench run`")
        records: dict[str, BenchRecord] = {}
        for i, r in enumerate(d.get("entries") or [], start=1):
            try:
                rec = BenchRecord(str(r["name"]), dict(r["entry"]),
                                  Measurement.from_dict(r["measurement"]))
            except (KeyError, TypeError) as e:
                raise ValueError(f"{where}: entry #{i} is malformed ({e!r})") from None
            if len(rec.measurement.samples_ms) < 3:
                raise ValueError(f"{where}: entry {rec.name!r} has fewer than 3 raw samples")
            records[rec.name] = rec
        return cls(records, str(d.get("suite", "")), float(d.get("created", 0.0)),
                   dict(d.get("meta") or {}))

    @classmethod
    def load(cls, path: str | Path) -> BenchResults:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"results file not found: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        return cls.from_dict(data, str(p))

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write atomically; refuse to replace an existing file unless ``force``."""
        p = Path(path)
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")
        if p.exists() and p.is_dir():
            raise IsADirectoryError(f"{p} is a directory, expected a .json file path")
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, p)
        return p


# ---------------------------------------------------------------------- comparing
def identity_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``field: 'x' != 'y'`` for every identity field that differs (missing = None)."""
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


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
                                "decide; re-run with more runs",
                "improvement": f"faster by {change}, entirely below -{t}",
                "ok": f"{change}, within the +{t} tolerance",
            }[self.verdict])
        if self.over_budget:
            assert self.current is not None
            parts.append(f"median {self.current.median_ms:.3f} ms is over max_ms "
                         f"{self.max_ms:g} ms")
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
    ratio, lo, hi = median_ratio_ci(base.measurement.samples_ms, cur.measurement.samples_ms)
    return Comparison(name, classify(lo, hi, tol), tol, base.measurement, cur.measurement,
                      ratio, lo, hi, max_ms)


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


def update_baseline(baseline: BenchResults | None, results: BenchResults, *,
                    names: list[str] | None = None, force: bool = False
                    ) -> tuple[BenchResults, list[str]]:
    """Accept ``results`` (all entries, or ``names``) into ``baseline``.

    Entries not selected keep their old numbers. Replacing an entry measured on a
    different device/runtime is refused unless ``force``. Returns the new baseline
    and one line per change.
    """
    chosen = names or list(results.records)
    unknown = [n for n in chosen if n not in results.records]
    if unknown:
        raise ValueError(f"no entry named {', '.join(map(repr, unknown))} in the results; "
                         f"entries: {', '.join(results.records)}")
    old = baseline.records if baseline is not None else {}
    lines: list[str] = []
    for n in chosen:
        new = results.records[n]
        prev = old.get(n)
        if prev is None:
            lines.append(f"{n}: added at {new.measurement.median_ms:.3f} ms")
            continue
        diff = identity_diff(prev.identity(), new.identity())
        if diff and not force:
            raise ValueError(f"entry {n!r}: the new results come from a different device or "
                             f"runtime than the baseline ({'; '.join(diff)}); pass --force to "
                             "replace the baseline measured there")
        a, b = prev.measurement.median_ms, new.measurement.median_ms
        lines.append(f"{n}: {a:.3f} ms -> {b:.3f} ms ({b / a - 1:+.1%})"
                     + (" [device changed]" if diff else ""))
    merged = dict(old)
    merged.update({n: results.records[n] for n in chosen})
    meta = dict(baseline.meta) if baseline is not None else {}
    meta["accepted_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return BenchResults(merged, results.suite, results.created, meta), lines

"""The ``mnas bench`` results file: one JSON per run (a baseline is the same format).

Every entry keeps what a later comparison needs to be honest: the raw samples of each
measurement round, the device fingerprint, runtime and settings, the model sha256 and a
timestamp. Files are written atomically and never overwritten silently.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latency.measurement import Measurement
from latency.paths import check_input_path

RESULTS_FORMAT = "mnas-bench-results/1"
# Measurement fields that change latency as much as the hardware does: part of identity.
# The clock too: wall and CPU time of the same run differ (descheduling, waits).
_IDENTITY_FIELDS = ("runtime", "runtime_version", "threads", "clock")

@dataclass(frozen=True)
class BenchRecord:
    """One measured suite entry: what was measured and how, and the raw samples."""

    name: str
    entry: dict[str, Any]          # SuiteEntry.to_dict(): device, settings, tolerance...
    measurement: Measurement       # all rounds' samples pooled, in round order
    rounds: tuple[int, ...] = ()   # samples per round; () = one round
    run_medians: tuple[float, ...] = ()   # per-run medians of a baseline merged from runs
    #: the entry's reference timed alternately with it, sample for sample (same rounds);
    #: () when the device cannot interleave (a phone) or the entry has no reference
    paired_ms: tuple[float, ...] = ()
    #: per-run medians of the entry relative to ``paired_ms`` (a merged baseline)
    paired_run_medians: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.measurement.samples_ms)
        if self.rounds and (sum(self.rounds) != n or min(self.rounds) < 1):
            raise ValueError(f"entry {self.name!r}: rounds {list(self.rounds)} do not add up "
                             f"to its {n} samples")
        if self.paired_ms and len(self.paired_ms) != n:
            raise ValueError(f"entry {self.name!r}: {len(self.paired_ms)} paired reference "
                             f"samples for its {n} samples")
        if self.paired_ms and not all(math.isfinite(v) and v > 0 for v in self.paired_ms):
            raise ValueError(f"entry {self.name!r}: paired reference samples must be finite "
                             "and positive")
        if self.paired_run_medians and len(self.paired_run_medians) != len(self.run_medians):
            raise ValueError(f"entry {self.name!r}: paired run medians do not match its runs")

    @classmethod
    def from_rounds(cls, name: str, entry: dict[str, Any], rounds: Sequence[Measurement],
                    rel_ci_goal: float = 0.02,
                    paired: Sequence[Measurement] | None = None) -> BenchRecord:
        """Pool the rounds of one entry; noisy if any round was or the pool is.
        ``paired``: the reference's samples timed alternately with each round."""
        if not rounds:
            raise ValueError(f"entry {name!r}: no measurement rounds")
        if paired is not None and [len(m.samples_ms) for m in paired] != \
                [len(m.samples_ms) for m in rounds]:
            raise ValueError(f"entry {name!r}: the paired reference rounds do not match its "
                             "rounds sample for sample")
        m0 = rounds[0]
        if len({m.model_sha256 for m in rounds}) != 1:
            raise ValueError(f"entry {name!r}: the model changed between rounds")
        if len({m.clock for m in rounds}) != 1:
            raise ValueError(f"entry {name!r}: the rounds were timed with different clocks")
        pooled = Measurement.from_samples(
            [v for m in rounds for v in m.samples_ms], warmup=m0.warmup, threads=m0.threads,
            runtime=m0.runtime, runtime_version=m0.runtime_version,
            model_sha256=m0.model_sha256, device=m0.device, fingerprint=m0.fingerprint,
            rel_ci_goal=rel_ci_goal, clock=m0.clock)
        pooled = pooled.with_(noisy=pooled.noisy or any(m.noisy for m in rounds),
                              timestamp=m0.timestamp)
        pair = tuple(float(v) for m in paired or () for v in m.samples_ms)
        return cls(name, entry, pooled, tuple(len(m.samples_ms) for m in rounds), (), pair)

    @classmethod
    def merge(cls, records: Sequence[BenchRecord]) -> BenchRecord:
        """One baseline record from several runs of the same entry (same device, model):
        rounds concatenated, each run's median kept for the drift estimate."""
        if not records:
            raise ValueError("nothing to merge")
        if len(records) == 1:
            return records[0]
        first = records[0]
        for r in records[1:]:
            diff = identity_diff(first.identity(), r.identity())
            if diff:
                raise ValueError(f"entry {first.name!r}: the runs to merge come from different "
                                 f"devices or runtimes ({'; '.join(diff)})")
            if r.measurement.model_sha256 != first.measurement.model_sha256:
                raise ValueError(f"entry {first.name!r}: the runs to merge measured different "
                                 "model files (sha256 differs); accept one run per model")
        rounds = [m for r in records for m in r.split_rounds()]
        merged = cls.from_rounds(first.name, records[-1].entry, rounds,
                                 float(first.entry.get("settings", {}).get("rel_ci", 0.02)))
        medians = [v for r in records for v in (r.run_medians or (r.measurement.median_ms,))]
        # paired samples survive only when every run has them (else: round-level reference)
        paired = all(r.paired_ms for r in records)
        pair = tuple(v for r in records for v in r.paired_ms) if paired else ()
        rel = tuple(v for r in records for v in (r.paired_run_medians or
                                                  (float(np.median(r.relative_samples())),))
                    ) if paired else ()
        return cls(merged.name, merged.entry, merged.measurement, merged.rounds, tuple(medians),
                   pair, rel)

    def relative_samples(self) -> np.ndarray:
        """The samples divided, round by round, by the median of the paired reference's
        samples of the same round: the entry's speed relative to its reference, measured at
        the same moments. ValueError without paired samples."""
        if not self.paired_ms:
            raise ValueError(f"entry {self.name!r} has no paired reference samples")
        sizes = self.rounds or (len(self.paired_ms),)
        ref = np.asarray(self.paired_ms, dtype=float)
        edges = np.cumsum([0, *sizes])
        meds = [float(np.median(ref[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return np.asarray(self.measurement.samples_ms, dtype=float) / np.repeat(meds, sizes)

    def split_rounds(self) -> list[Measurement]:
        """The rounds as separate Measurements (inverse of :meth:`from_rounds`)."""
        m = self.measurement
        sizes = self.rounds or (len(m.samples_ms),)
        edges = np.cumsum([0, *sizes])
        return [Measurement.from_samples(m.samples_ms[a:b], warmup=m.warmup, threads=m.threads,
                                         runtime=m.runtime, runtime_version=m.runtime_version,
                                         model_sha256=m.model_sha256, device=m.device,
                                         fingerprint=m.fingerprint, clock=m.clock).with_(
                                             timestamp=m.timestamp, noisy=m.noisy)
                for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)]

    @property
    def round_medians(self) -> list[float]:
        sizes = self.rounds or (len(self.measurement.samples_ms),)
        x = np.asarray(self.measurement.samples_ms)
        edges = np.cumsum([0, *sizes])
        return [float(np.median(x[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)]

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
        return {"name": self.name, "entry": self.entry, "rounds": list(self.rounds),
                "round_medians_ms": self.round_medians,
                "run_medians_ms": list(self.run_medians),
                "measurement": self.measurement.to_dict(),
                "paired_ms": list(self.paired_ms),
                "paired_run_medians": list(self.paired_run_medians)}


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
        entries = d.get("entries")
        if not isinstance(entries, list):   # {} would read as "every entry missing": a pass
            raise ValueError(f"{where}: not a mnas bench results file ('entries' must be a "
                             f"list, got {type(entries).__name__})")
        for i, r in enumerate(entries, start=1):
            try:
                rec = BenchRecord(str(r["name"]), dict(r["entry"]),
                                  Measurement.from_dict(r["measurement"]),
                                  tuple(int(v) for v in r.get("rounds") or ()),
                                  tuple(float(v) for v in r.get("run_medians_ms") or ()),
                                  tuple(float(v) for v in r.get("paired_ms") or ()),
                                  tuple(float(v) for v in r.get("paired_run_medians") or ()))
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                raise ValueError(f"{where}: entry #{i} is malformed ({e!r})") from None
            if len(rec.measurement.samples_ms) < 3:
                raise ValueError(f"{where}: entry {rec.name!r} has fewer than 3 raw samples")
            records[rec.name] = rec
        return cls(records, str(d.get("suite", "")), float(d.get("created", 0.0)),
                   dict(d.get("meta") or {}))

    @classmethod
    def load(cls, path: str | Path, what: str = "results file") -> BenchResults:
        """Read ``path``; ``what`` ("baseline") names the file in errors."""
        p = check_input_path(path, what)
        if p.is_dir():
            raise ValueError(f"{what} {p} is a directory, expected a .json file path")
        if not p.is_file():
            raise FileNotFoundError(f"{what} not found: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{what} {p}: not valid JSON ({e})") from None
        # "results file X: not a mnas bench results file" would say it twice
        return cls.from_dict(data, str(p) if what == "results file" else f"{what} {p}")

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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, p)
        return p


def identity_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``field: 'x' != 'y'`` for every identity field that differs (missing = None)."""
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]

"""Run-folder reports: trials.csv, pareto.csv, pareto.json, pareto.png and front models."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnas.pareto import hypervolume, pareto_front
from mnas.trial import Trial

TRIAL_COLUMNS = ["number", "state", "arch", "accuracy", "latency_ms", "reward", "target_ms",
                 "params", "macs", "train_seconds", "measure_seconds", "noisy",
                 "device_changed", "reason"]
FRONT_COLUMNS = ["arch", "accuracy", "latency_ms", "reward", "params", "macs", "model"]


def measured_after_change(trials: Sequence[Trial],
                          fingerprint: dict[str, Any] | None) -> list[Trial]:
    """Trials measured on the run's device after its fingerprint changed from ``fingerprint``
    (the run's, recorded at its start): a phone updated mid-run, whose latencies do not
    compare with the others'. Empty when the run recorded no fingerprint (a table)."""
    if not fingerprint:
        return []
    return [t for t in trials if isinstance(t.measurement, dict)
            and isinstance(t.measurement.get("fingerprint"), dict)
            and t.measurement["fingerprint"] != fingerprint]


def device_change_note(trials: Sequence[Trial], fingerprint: dict[str, Any] | None) -> str | None:
    """One line naming the children measured after the device changed, else None."""
    later = measured_after_change(trials, fingerprint)
    if not later:
        return None
    from devices.base import describe_change

    what = describe_change(fingerprint or {}, later[0].measurement["fingerprint"])
    return (f"{len(later)} of {len(trials)} children (from #{later[0].number} on) were "
            f"measured after the device changed ({what}); their latencies do not compare "
            "with the others' (marked device_changed in trials.csv and pareto.csv)")


def front_trials(trials: Sequence[Trial]) -> list[Trial]:
    """Completed, non-duplicate trials on the accuracy/latency front, fastest first."""
    done = [t for t in trials if t.ok and "duplicate_of" not in t.meta]
    idx = pareto_front([(t.accuracy, t.latency_ms) for t in done])
    return [done[i] for i in idx]


def reference_point(trials: Sequence[Trial]) -> tuple[float, float]:
    """Default hypervolume reference: accuracy 0, 1.1 × the slowest completed child."""
    lats = [t.latency_ms for t in trials if t.ok]
    return (0.0, 1.1 * max(lats)) if lats else (0.0, 1.0)


def write_reports(out: Path, trials: Sequence[Trial], *, target_ms: float | Sequence[float],
                  device: str, space: str,
                  export_model: Callable[[str, Path], Path] | None = None,
                  fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every report file; returns the pareto.json document. ``fingerprint``: the
    device's at the run's start; trials measured after it changed are marked."""
    out.mkdir(parents=True, exist_ok=True)
    changed = {t.number for t in measured_after_change(trials, fingerprint)}
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TRIAL_COLUMNS)
        w.writeheader()
        for t in trials:
            row = {k: getattr(t, k, None) for k in TRIAL_COLUMNS if hasattr(t, k)}
            row["noisy"] = bool((t.measurement or {}).get("noisy", False))
            row["device_changed"] = t.number in changed
            w.writerow(row)
    front = front_trials(trials)
    models = out / "models"
    rows = []
    for rank, t in enumerate(front):
        model = ""
        if export_model is not None:
            path = models / f"front{rank:02d}_trial{t.number}.onnx"
            try:
                model = str(export_model(t.arch, path).relative_to(out))
            except Exception as e:  # noqa: BLE001 — a report must not lose the run
                model = f"export failed: {type(e).__name__}: {e}"
        rows.append({"arch": t.arch, "accuracy": t.accuracy, "latency_ms": t.latency_ms,
                     "reward": t.reward, "params": t.params, "macs": t.macs, "model": model,
                     "trial": t.number, "target_ms": t.target_ms,
                     "device_changed": t.number in changed})
    exported = [r["model"] for r in rows if r["model"].startswith("models")]
    if export_model is not None and models.is_dir() and len(exported) == len(rows):
        # an earlier front's files (a resumed run's front moved) go once the whole new
        # front is written: an export that failed keeps what was there
        kept = {Path(m).name for m in exported}
        for old in models.glob("front*_trial*.*"):
            if old.name not in kept and re.fullmatch(r"front\d+_trial\d+\.\w+", old.name):
                with contextlib.suppress(OSError):  # a read-only models/: left as it is
                    old.unlink()
    with open(out / "pareto.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FRONT_COLUMNS + ["trial", "target_ms",
                                                          "device_changed"])
        w.writeheader()
        w.writerows(rows)
    ref = reference_point(trials)
    targets = [target_ms] if isinstance(target_ms, int | float) else list(target_ms)
    doc = {
        "space": space,
        "device": device,
        "target_ms": targets[0] if len(targets) == 1 else targets,
        "trials": len(trials),
        "completed": sum(t.ok for t in trials),
        "failed": sum(t.state == "failed" for t in trials),
        "hypervolume": hypervolume([(t.accuracy, t.latency_ms) for t in trials if t.ok], ref),
        "hypervolume_ref": list(ref),
        "device_changed": sorted(changed),
        "front": rows,
    }
    (out / "pareto.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot_front(out / "pareto.png", trials, front, targets, device)
    return doc


def plot_front(path: Path, trials: Sequence[Trial], front: Sequence[Trial],
               targets: Sequence[float], device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    done = [t for t in trials if t.ok]
    ax.scatter([t.latency_ms for t in done], [100 * t.accuracy for t in done], s=18,
               color="0.65", label=f"children ({len(done)})", zorder=2)
    if front:
        # a staircase: everything right of and below a front point is dominated by it
        ax.plot([t.latency_ms for t in front], [100 * t.accuracy for t in front], "-o",
                drawstyle="steps-post", color="tab:red", ms=6, lw=1.5,
                label=f"Pareto front ({len(front)})", zorder=3)
    for i, tgt in enumerate(targets):
        ax.axvline(tgt, color="tab:blue", ls="--", lw=1,
                   label="target T" if i == 0 else None, zorder=1)
    failed = sum(t.state == "failed" for t in trials)
    ax.set_xlabel(f"latency (ms, median) on {device}")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"accuracy vs latency — {len(trials)} children, {failed} failed")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_front(doc: dict[str, Any]) -> None:
    """A run's summary and front on stdout; front models that failed to export, on stderr."""
    print(f"{doc['completed']} of {doc['trials']} children completed, {doc['failed']} failed; "
          f"front of {len(doc['front'])}, hypervolume {doc['hypervolume']:.4g}")
    for row in doc["front"]:
        print(f"  acc {100 * row['accuracy']:5.1f}%  {row['latency_ms']:8.2f} ms  "
              f"reward {row['reward']:.4f}  {row['arch']}"
              + ("  (measured after the device changed)" if row.get("device_changed") else ""))
    failed = [r["model"] for r in doc["front"] if str(r.get("model", "")).startswith("export")]
    if failed:
        print(f"mnas: note: {len(failed)} of {len(doc['front'])} front models were not exported "
              f"({failed[0]}); pareto.csv names each", file=sys.stderr)

"""Run folders: configuration, evaluator wiring, the reference target, reports.

``mnas search`` and ``mnas front`` both go through here so a resumed or re-exported run
is configured exactly as it was started.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnas.reward import Reward

CONFIG = "config.json"
STUDY = "study.db"
CHECKPOINT = "strategy.ckpt"
#: files a search writes (and a kill may leave: the checkpoint's temporary file, SQLite's
#: journal, which must not meet a new study.db); --force removes exactly these
RUN_FILES = (CONFIG, STUDY, CHECKPOINT, "trials.csv", "pareto.csv", "pareto.json",
             "pareto.png", "strategy_report.json", "strategy.tmp", f"{STUDY}-journal")
#: held by the process searching a run folder (the file stays; the lock goes with it)
LOCK = ".mnas.lock"
#: what every config.json ``mnas search`` wrote has, and resume and ``front`` read
REQUIRED = ("space", "strategy", "accuracy", "latency", "alpha", "beta", "targets_ms")
RUN_DIRS = ("models", "trained")


def prepare_folder(out: Path, resume: bool, force: bool, create: bool = True) -> None:
    """Refuse to overwrite an existing run unless resuming or forced. With ``create``
    (else only the checks), ``force`` removes the old run's files and the folder is
    made: do that once the settings have been validated, so a typo loses nothing."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    existing = [n for n in RUN_FILES + RUN_DIRS if (out / n).exists()]
    if resume:
        if not (out / CONFIG).exists():
            raise FileNotFoundError(f"nothing to resume in {out}: no {CONFIG} there")
        return
    if existing and not force:
        raise FileExistsError(f"{out} already holds a run ({', '.join(existing)}); "
                              "pass --resume to continue it or --force to start over")
    if not create:
        _check_writable(out)
        return
    if force:
        for n in existing:
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check_writable(out: Path) -> None:
    """ValueError unless the run folder ``out`` can be written (made, where missing): found
    now, not after the target is measured. Whatever is made to find out is removed."""
    missing = out
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    if not out.exists() and not missing.parent.is_dir():
        raise NotADirectoryError(f"--out {out}: {missing.parent} is a file, not a folder")
    try:
        if out.exists():
            with tempfile.TemporaryFile(dir=out):
                pass
        else:
            missing.mkdir()
            missing.rmdir()
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e.strerror or e}") from None


def save_config(out: Path, config: dict[str, Any]) -> None:
    tmp = out / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")
    tmp.replace(out / CONFIG)


def check_run_folder(path: str | Path) -> Path:
    """``path`` as a Path once it is a folder (a run's): ValueError for an empty path or a
    symbolic-link loop, FileNotFoundError / NotADirectoryError otherwise."""
    from latency.paths import check_input_path

    out = check_input_path(path, "run folder")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a run folder")
    if not out.is_dir():
        raise FileNotFoundError(f"run folder {out} does not exist")
    return out


def load_config(out: Path) -> dict[str, Any]:
    path = out / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{out} is not a run folder: no {CONFIG}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    missing = [k for k in REQUIRED if k not in cfg] if isinstance(cfg, dict) else None
    if missing is None or missing:
        what = f"lacks {', '.join(missing)}" if missing else "is not a JSON object"
    else:
        what = next((f"has {k} = {cfg[k]!r}, not {kind}" for k, kind, ok in _SHAPES
                     if k in cfg and not ok(cfg[k])), "")
    if what:
        raise ValueError(f"{path} {what}: not a config mnas search wrote (edited or "
                         "damaged); restore it, or start over with --force")
    return cfg


def check_resumable(out: Path, cfg: dict[str, Any]) -> None:
    """A checkpoint whose study.db is gone or empty is refused before the ledger would
    make a new, empty one there (the loop refuses the rest: see ``SearchLoop._restore``)."""
    study = out / STUDY
    if not cfg.get("storage") and (out / CHECKPOINT).exists() and (
            not study.is_file() or study.stat().st_size == 0):
        raise ValueError(f"{out} has {CHECKPOINT} but {'an empty ' if study.exists() else 'no '}"
                         f"{STUDY}: its children are lost; restore the run's {STUDY}, or "
                         "--force starts over")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


#: (key, what it must be, check) for the keys whose wrong type surfaced as a traceback,
#: or as a silently wrong report (targets_ms "80" became targets 8 and 0)
_SHAPES: tuple[tuple[str, str, Any], ...] = (
    *((k, "a string", lambda v: isinstance(v, str)) for k in ("space", "strategy",
                                                              "accuracy", "latency")),
    ("alpha", "a number", _number), ("beta", "a number", _number),
    ("targets_ms", "a list of positive latencies",
     lambda v: isinstance(v, list) and bool(v) and all(_number(t) and t > 0 for t in v)),
    *((k, "an object", lambda v: isinstance(v, dict))
      for k in ("space_options", "strategy_options")),
    ("device_fingerprint", "an object or null", lambda v: v is None or isinstance(v, dict)),
    ("storage", "a storage URL or null", lambda v: v is None or isinstance(v, str)),
    ("study_name", "a string", lambda v: isinstance(v, str)),
)


@contextlib.contextmanager
def lock_run(out: Path) -> Iterator[None]:
    """Hold run folder ``out`` (made if missing) for this process: a second ``mnas search``
    on it (a resume, a --force) would re-score or delete this one's children.
    FileExistsError names the holder. Where ``fcntl`` is missing (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FileExistsError(f"{out} is in use by {holder} (an mnas search on the same "
                                  "run folder); wait for it or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(f"mnas pid {os.getpid()}")
        f.flush()
        yield


def load_trials(out: Path, cfg: dict[str, Any]) -> list[Any]:
    """The run's finished children, from its ledger (ValueError when there are none)."""
    from search.ledger import Ledger

    if not cfg.get("storage") and not (out / STUDY).exists():
        raise FileNotFoundError(f"{out} has no {STUDY}: the search never started")
    ledger = Ledger(cfg.get("storage") or out / STUDY,
                    study_name=cfg.get("study_name", out.resolve().name), create=False)
    trials = ledger.trials()
    if not trials:
        raise ValueError(f"{out} has no finished children yet")
    return trials


def rewards_from(cfg: dict[str, Any]) -> list[Reward]:
    return [Reward(t, alpha=cfg["alpha"], beta=cfg["beta"], transform=cfg["reward_transform"])
            for t in cfg["targets_ms"]]


def make_latency(cfg: dict[str, Any], out: Path) -> Any:
    from latency.measurement import MeasureSettings
    from mnas.evaluate import make_latency as _make

    settings = MeasureSettings(threads=cfg["threads"], warmup=cfg["warmup"], runs=cfg["runs"],
                               max_runs=max(cfg["runs"], cfg["max_runs"]),
                               clock=cfg.get("clock", "wall"))
    # children are exported to a temporary folder each (a run keeps only front models);
    # the shared latency cache ($MNAS_CACHE_DIR) means no child is measured twice
    # a lookup table's device was checked when the run was made (it may be a phone that
    # a search, its resume or `mnas front` never needs)
    device = None if cfg["latency"].partition(":")[0] == "lut" else cfg["device"]
    return _make(cfg["latency"], device=device, settings=settings, cache=None)


def make_accuracy(cfg: dict[str, Any]) -> Any:
    from mnas.evaluate import make_accuracy as _make

    ctx = {k: v for k, v in cfg["proxy"].items() if v is not None}
    return _make(cfg["accuracy"], seed=cfg["seed"], **ctx)


def reference_arch(space: Any) -> tuple[str, Any]:
    """The point ``--target-ms auto`` measures: MobileNetV2 where the space has it."""
    named = space.named()
    for name in ("mobilenetv2", *named):
        if name in named:
            return name, named[name]
    raise ValueError(f"--target-ms auto needs a named reference point and space "
                     f"{space.name!r} has none; give --target-ms N")


def export_front_model(space: Any, arch_str: str, path: Path, latency: Any = None,
                       model_format: str | None = None) -> Path:
    """The full-size child (deployment classes and input) as the device's model file.

    Through the latency estimator when it can export; otherwise built the way it builds
    children (fixed seed, width 1.0) and exported as ``model_format`` (the run's recorded
    format; ONNX when None), so the file is the one measured without reaching the device.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = space.decode(arch_str)
    if hasattr(latency, "export"):
        return latency.export(space, arch, path.with_suffix(getattr(latency, "suffix", ".onnx")))
    from latency.estimate import build_deployable
    from latency.export import get_exporter

    fmt = model_format or "onnx"
    export = get_exporter(fmt)
    model = build_deployable(space, arch)      # the measured weights
    r = space.deploy_resolution
    return export(model, path.with_suffix(f".{fmt}"), input_shape=(1, 3, r, r))


def write_run_reports(out: Path, cfg: dict[str, Any], trials: list, space: Any,
                      export: bool = True, latency: Any = None) -> dict[str, Any]:
    from mnas.report import write_reports

    # without an estimator that exports, the run's recorded format (none: ONNX)
    def exporter(arch: str, path: Path) -> Path:
        return export_front_model(space, arch, path, latency, cfg.get("model_format"))

    return write_reports(out, trials, target_ms=cfg["targets_ms"], device=cfg["device"],
                         space=cfg["space"], export_model=exporter if export else None,
                         fingerprint=cfg.get("device_fingerprint"))

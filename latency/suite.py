"""Latency suites for ``mnas bench``: a TOML file listing what a CI job measures.

Format (paths are relative to the suite file)::

    [defaults]                  # optional; any entry field except name/model/arch
    device = "local:onnxruntime"
    tolerance = 0.05            # relative slowdown the gate tolerates (default 5%)
    threads = 1
    warmup = 10
    runs = 30                   # timed runs per round (minimum; adaptive up to max_runs)
    rounds = 3                  # measurements per entry, interleaved across entries
    clock = "cpu"               # "wall" (default) or "cpu": see below

    [[entry]]
    name = "mobilenetv2"        # unique; keys the baseline
    arch = "mobilenetv2"        # a named point or canonical string of `space`
    space = "mnasnet"           # default "mnasnet"
    max_ms = 40.0               # optional absolute budget on the median

    [[entry]]
    name = "tiny-cnn"
    model = "models/tiny_cnn.onnx"   # .onnx or .tflite

Each entry is measured in ``rounds`` separate rounds, round-robin over the entries, so the
comparison sees how much a median moves between runs on this machine (the dominant
noise on shared CI runners), not only the spread of samples within one run. An entry
with ``reference = "other-entry"`` is compared *relative* to that entry: the reference
(a model that does not change, e.g. a copy of the shipped one) is measured in the same
rounds, so a slowdown of the whole machine cancels out. On a local device it is also
timed *alternately* with the entry, inference by inference
(:meth:`devices.local.LocalDevice.measure_paired`), and the entry is compared relative to
those paired samples, which cancels slow episodes of seconds too; a phone, whose tool
times one model per call, falls back to the reference's same-round medians.

``clock`` picks what a sample is (:class:`MeasureSettings`): ``"wall"`` is the latency a
user waits; ``"cpu"`` is the measuring thread's CPU time, which other jobs on a shared CI
runner cannot inflate by descheduling it. ``"cpu"`` needs ``threads = 1`` and a local
device (an ``adb:`` phone is timed by a tool on the phone). Results record the clock and
``mnas bench compare`` refuses to compare results measured with different clocks.

Every problem is reported as one ``ValueError`` line naming the file, the entry and
the field, so ``mnas bench`` can print it and exit 2.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from devices.base import can_pair
from latency.measurement import CLOCKS, MeasureSettings
from latency.paths import check_input_path, unresolvable

DEFAULT_DEVICE = "local:onnxruntime"
DEFAULT_TOLERANCE = 0.05
DEFAULT_SPACE = "mnasnet"
MODEL_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# MeasureSettings fields a suite may set, with their types.
_SETTINGS: dict[str, type] = {"threads": int, "warmup": int, "runs": int, "max_runs": int,
                              "rel_ci": float, "max_seconds": float}
_ENTRY_ONLY = ("name", "model", "arch")
_SHARED = ("device", "space", "tolerance", "max_ms", "rounds", "reference", "input_shape",
           "num_classes", "clock",
           *_SETTINGS)
# device kinds timed on the device by its own tool: only the wall clock exists there
_WALL_ONLY_DEVICES = ("adb",)
_ENTRY_KEYS = (*_ENTRY_ONLY, *_SHARED)
# Defaults chosen for a CI gate: a tighter CI goal than the search uses (to resolve a 5%
# tolerance) and several rounds (to see run-to-run drift).
BENCH_SETTINGS = MeasureSettings(threads=1, warmup=10, runs=30, max_runs=100, rel_ci=0.01,
                                  max_seconds=30.0)
DEFAULT_ROUNDS = 3
MAX_ROUNDS = 50


@dataclass(frozen=True)
class SuiteEntry:
    """One thing to measure: a model file or an architecture, on one device."""

    name: str
    device: str
    settings: MeasureSettings
    tolerance: float = DEFAULT_TOLERANCE
    max_ms: float | None = None
    rounds: int = DEFAULT_ROUNDS
    reference: str | None = None        # entry whose same-round medians normalize this one
    model: Path | None = None           # absolute path of an .onnx / .tflite file
    arch: str | None = None             # named point or canonical string of `space`
    space: str = DEFAULT_SPACE
    input_shape: tuple[int, ...] | None = None   # arch entries; None = space default
    num_classes: int | None = None               # arch entries; None = space default

    @property
    def model_format(self) -> str:
        """``onnx`` / ``tflite`` for file entries, ``arch`` otherwise."""
        if self.model is None:
            return "arch"
        return MODEL_SUFFIXES[self.model.suffix.lower()]

    @property
    def source(self) -> str:
        """What is measured, as a person reads it."""
        return str(self.model) if self.model is not None else f"{self.space}:{self.arch}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "settings": asdict(self.settings),
                "tolerance": self.tolerance, "max_ms": self.max_ms, "rounds": self.rounds,
                "reference": self.reference,
                "model": None if self.model is None else str(self.model),
                "arch": self.arch, "space": self.space if self.arch is not None else None,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "num_classes": self.num_classes}


@dataclass(frozen=True)
class Suite:
    path: Path
    entries: tuple[SuiteEntry, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def select(self, names: list[str] | None) -> Suite:
        """The entries named (all when ``names`` is empty) and their references; ValueError
        for unknown names."""
        if not names:
            return self
        unknown = [n for n in names if n not in self.names()]
        if unknown:
            raise ValueError(f"{self.path}: no entry named {', '.join(map(repr, unknown))}; "
                             f"entries: {', '.join(self.names())}")
        keep = set(names) | {e.reference for e in self.entries
                             if e.name in names and e.reference is not None}
        return Suite(self.path, tuple(e for e in self.entries if e.name in keep))


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file (see the module docstring for the format)."""
    p = check_input_path(path, "suite file")
    if p.is_dir():
        raise ValueError(f"suite file {p} is a directory, expected a .toml file path")
    if not p.is_file():
        raise FileNotFoundError(f"suite file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a UTF-8 text file ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: malformed TOML: {e}") from None
    return parse_suite(data, p)


def parse_suite(data: Mapping[str, Any], path: str | Path) -> Suite:
    """Validate parsed TOML; relative model paths resolve against ``path``'s folder."""
    p = Path(path)
    unknown = sorted(set(data) - {"defaults", "entry"})
    if unknown:
        raise ValueError(f"{p}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                         "valid: 'defaults', 'entry' (write entries as [[entry]] tables)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise ValueError(f"{p}: 'defaults' must be a table ([defaults])")
    for key in defaults:
        if key not in _SHARED:
            hint = " (it is per entry)" if key in _ENTRY_ONLY else ""
            raise ValueError(f"{p}: [defaults]: unknown field {key!r}{hint}; "
                             f"valid: {', '.join(_SHARED)}")
    raw = data.get("entry", [])
    if not isinstance(raw, list) or not all(isinstance(e, Mapping) for e in raw):
        raise ValueError(f"{p}: 'entry' must be an array of tables ([[entry]])")
    if not raw:
        raise ValueError(f"{p}: empty suite: add at least one [[entry]] with a name and "
                         "a model or arch")
    entries: list[SuiteEntry] = []
    seen: dict[str, int] = {}
    for i, e in enumerate(raw, start=1):
        entry = _parse_entry({**defaults, **e}, set(e), i, p)
        if entry.name in seen:
            raise ValueError(f"{p}: entry #{i} {entry.name!r}: field 'name': duplicate of "
                             f"entry #{seen[entry.name]}")
        seen[entry.name] = i
        entries.append(entry)
    return Suite(p, tuple(_check_references(entries, seen, p)))


def _check_references(entries: list[SuiteEntry], index: dict[str, int], path: Path
                      ) -> list[SuiteEntry]:
    """A reference must be another entry on the same device with as many rounds (its
    rounds are paired with the entry's); the reference itself is compared raw."""
    by_name = {e.name: e for e in entries}
    out = []
    for e in entries:
        ref = e.reference
        if ref is None or ref == e.name:   # a [defaults] reference reaches itself too
            out.append(replace(e, reference=None))
            continue
        where = f"{path}: entry #{index[e.name]} {e.name!r}: field 'reference'"
        if ref not in by_name:
            raise ValueError(f"{where}: no entry named {ref!r}; entries: {', '.join(by_name)}")
        r = by_name[ref]
        if r.device != e.device or r.rounds != e.rounds:
            raise ValueError(f"{where}: {ref!r} must be measured on the same device with the "
                             f"same rounds ({r.device}, {r.rounds} rounds vs {e.device}, "
                             f"{e.rounds} rounds)")
        if r.reference not in (None, r.name):
            raise ValueError(f"{where}: {ref!r} has a reference itself; references do not "
                             "chain")
        out.append(e)
    return out


def _parse_entry(e: Mapping[str, Any], own: set[str], index: int, path: Path) -> SuiteEntry:
    name = e.get("name")
    where = f"{path}: entry #{index}" + (f" {name!r}" if isinstance(name, str) else "")

    def bad(fld: str, msg: str) -> ValueError:
        return ValueError(f"{where}: field {fld!r}: {msg}")

    for key in e:
        if key not in _ENTRY_KEYS:
            raise bad(key, f"unknown field; valid: {', '.join(_ENTRY_KEYS)}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise bad("name", "required, a string of letters, digits, '_', '.', '-' "
                  f"(got {name!r})")
    model, arch = e.get("model"), e.get("arch")
    if (model is None) == (arch is None):
        raise bad("model" if model is not None else "model/arch",
                  "give exactly one of 'model' (an .onnx/.tflite path) or 'arch' "
                  "(with 'space')")
    model_path: Path | None = None
    if model is not None:
        if not isinstance(model, str) or not model:
            raise bad("model", f"must be a path string, got {model!r}")
        model_path = path.parent / model
        if why := unresolvable(model_path):   # resolve() raises RuntimeError there (< 3.13)
            raise bad("model", f"model file {model_path} cannot be resolved: {why}")
        model_path = model_path.resolve()
        if model_path.suffix.lower() not in MODEL_SUFFIXES:
            raise bad("model", f"{model!r} is neither .onnx nor .tflite")
        if not model_path.is_file():
            raise bad("model", f"model file not found: {model_path}")
    else:
        if not isinstance(arch, str) or not arch.strip():
            raise bad("arch", f"must be a non-empty string, got {arch!r}")
    for key in ("input_shape", "num_classes", "space"):
        if key in own and arch is None:
            raise bad(key, "only applies to 'arch' entries (a model file fixes it)")
    space = e.get("space", DEFAULT_SPACE)
    if not isinstance(space, str) or not space:
        raise bad("space", f"must be a space name, got {space!r}")
    device = e.get("device", DEFAULT_DEVICE)
    if not isinstance(device, str) or not device.strip():
        raise bad("device", f"must be a device spec such as {DEFAULT_DEVICE!r}, got {device!r}")
    tol = _number(e.get("tolerance", DEFAULT_TOLERANCE), "tolerance", bad)
    if not 0.0 < tol < 1.0:
        raise bad("tolerance", f"must be a fraction in (0, 1) such as 0.05 for 5%, got {tol}")
    max_ms = e.get("max_ms")
    if max_ms is not None:
        max_ms = _number(max_ms, "max_ms", bad)
        if max_ms <= 0:
            raise bad("max_ms", f"must be a positive number of milliseconds, got {max_ms}")
    reference = e.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference):
        raise bad("reference", f"must be the name of another entry, got {reference!r}")
    rounds = e.get("rounds", DEFAULT_ROUNDS)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise bad("rounds", f"must be an integer in [1, {MAX_ROUNDS}], got {rounds!r}")
    shape = e.get("input_shape")
    if shape is not None:
        if (not isinstance(shape, list) or len(shape) != 4
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in shape)):
            raise bad("input_shape", f"must be 4 positive integers [N, C, H, W], got {shape!r}")
        shape = tuple(shape)
    classes = e.get("num_classes")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool)
                                or classes < 1):
        raise bad("num_classes", f"must be a positive integer, got {classes!r}")
    clock = e.get("clock", BENCH_SETTINGS.clock)
    if clock not in CLOCKS:
        raise bad("clock", f"must be one of {', '.join(map(repr, CLOCKS))}, got {clock!r}")
    if clock == "cpu" and device.strip().split(":", 1)[0] in _WALL_ONLY_DEVICES:
        raise bad("clock", f"'cpu' needs a local device: {device.strip()!r} is timed on the "
                  "phone by its own tool, which reports wall time only; use clock = 'wall'")
    settings = _settings(e, bad, clock)
    if arch is None:  # a model file fixes its own shape; ignore inherited [defaults]
        shape, classes = None, None
    return SuiteEntry(name=name, device=device.strip(), settings=settings, tolerance=tol,
                      max_ms=max_ms, rounds=rounds, reference=reference, model=model_path,
                      arch=arch.strip() if isinstance(arch, str) else None, space=space,
                      input_shape=shape, num_classes=classes)


def _number(v: Any, fld: str, bad: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise bad(fld, f"must be a number, got {v!r}")
    return float(v)


def _settings(e: Mapping[str, Any], bad: Any, clock: str) -> MeasureSettings:
    kw: dict[str, Any] = {}
    for key, typ in _SETTINGS.items():
        if key not in e:
            continue
        v = e[key]
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise bad(key, f"must be an integer, got {v!r}")
        kw[key] = _number(v, key, bad) if typ is float else v
    base = asdict(BENCH_SETTINGS)
    base.update(kw, clock=clock)
    if "runs" in kw and "max_runs" not in kw:   # a fixed count asked for stays fixed-ish
        base["max_runs"] = max(base["max_runs"], kw["runs"])
    try:
        return MeasureSettings(**base)
    except ValueError as err:
        fld = "clock" if "clock" in str(err) else next((k for k in kw if k in str(err)),
                                                         "runs")
        raise bad(fld, str(err)) from None


# ------------------------------------------------------------------------ running
def _exporters() -> dict[str, Any]:
    from latency.export import EXPORTERS

    with contextlib.suppress(ImportError):   # registers the tflite exporter when present
        import latency.tflite  # noqa: F401
    return EXPORTERS


def check_entry_model(entry: SuiteEntry, device: Any) -> None:
    """ValueError when ``device`` cannot run the entry's model file (format or content)."""
    fmt = getattr(device, "model_format", "onnx")
    if entry.model is None:
        EXPORTERS = _exporters()  # noqa: N806

        if fmt not in EXPORTERS:
            raise ValueError(f"entry {entry.name!r}: field 'arch': device {entry.device!r} "
                             f"runs {fmt} models and this install cannot export an arch to "
                             f"{fmt} (exporters: {', '.join(sorted(EXPORTERS))}); give a "
                             f"'model' file in {fmt} format instead")
        return
    if entry.model_format != fmt:
        raise ValueError(f"entry {entry.name!r}: field 'model': device {entry.device!r} runs "
                         f"{fmt} models, but {entry.model.name} is {entry.model_format}; use a "
                         f"device that runs {entry.model_format} files or give a .{fmt} model")
    if fmt == "onnx":
        from latency.export import check_onnx

        try:
            check_onnx(entry.model)
        except ValueError as e:
            raise ValueError(f"entry {entry.name!r}: field 'model': {e}") from None
    elif fmt == "tflite":
        with open(entry.model, "rb") as f:
            head = f.read(8)
        if head[4:8] != b"TFL3":   # the flatbuffer file identifier of every .tflite model
            raise ValueError(f"entry {entry.name!r}: field 'model': {entry.model} is not a "
                             "TFLite model (no TFL3 identifier)")


def prepare_model(entry: SuiteEntry, model_format: str, workdir: Path) -> Path:
    """The model file to measure: the entry's own file, or its arch built and exported
    (seeded weights, so the same arch exports the same bytes and sha256)."""
    if entry.model is not None:
        return entry.model
    import torch

    from mnas.spaces import get_space

    try:
        space = get_space(entry.space)
    except ValueError as e:
        raise ValueError(f"entry {entry.name!r}: field 'space': {e}") from None
    try:
        arch = space.parse(entry.arch)
    except ValueError as e:
        raise ValueError(f"entry {entry.name!r}: field 'arch': {e}") from None
    r = space.deploy_resolution
    shape = entry.input_shape or (1, 3, r, r)
    torch.manual_seed(0)
    model = space.build(arch, num_classes=entry.num_classes or space.deploy_classes,
                        in_channels=shape[1])
    out = workdir / f"{entry.name}.{model_format}"
    return Path(_exporters()[model_format](model, out, input_shape=shape))


def open_devices(entries: tuple[SuiteEntry, ...] | list[SuiteEntry],
                 timeout_s: float | None = None) -> dict[str, Any]:
    """One device per distinct spec, every entry's model checked against its device —
    all before anything is measured, so a bad entry fails in seconds, not minutes.
    ``timeout_s``: local runtimes measure in a child process killed after that long
    (:func:`devices.local.isolated`); None measures in this process."""
    from devices import get_device
    from devices.local import isolated

    opened: dict[str, Any] = {}
    try:
        for e in entries:
            if e.device not in opened:
                try:
                    opened[e.device] = get_device(e.device)
                    if timeout_s is not None:
                        isolated(opened[e.device], timeout_s)
                except ValueError as err:
                    raise ValueError(f"entry {e.name!r}: field 'device': {err}") from None
            check_entry_model(e, opened[e.device])
    except BaseException:
        close_devices(opened)
        raise
    return opened


def close_devices(opened: Mapping[str, Any]) -> None:
    for dev in opened.values():
        dev.close()


def run_suite(suite: Suite, *, progress: Callable[[str], None] | None = None,
              workdir: str | Path | None = None, timeout_s: float | None = None) -> Any:
    """Measure every entry fresh (no cache: a gate must see today's numbers) and return
    :class:`latency.regression.BenchResults` with raw samples and fingerprints.

    Rounds run round-robin (round 1 of every entry, then round 2, ...) so an entry's
    rounds are spread over the whole run. ValueError for a bad entry (before anything
    is measured), RuntimeError naming the entry when a device fails to measure.
    """
    from latency.bench_results import BenchRecord, BenchResults
    from latency.estimate import measure_model

    opened = open_devices(suite.entries, timeout_s)
    results = BenchResults(suite=str(suite.path), meta={"host": _host(), "python": _python()})
    n, total = len(suite.entries), max(e.rounds for e in suite.entries)
    if progress is not None:   # only once every entry checked out: bad input stays one line
        progress(f"bench: measuring {n} entr{'y' if n == 1 else 'ies'} of {suite.path}")
    try:
        with tempfile.TemporaryDirectory(prefix="mnas-bench-") as tmp:
            work = Path(workdir) if workdir is not None else Path(tmp)
            paths = {e.name: prepare_model(e, getattr(opened[e.device], "model_format", "onnx"),
                                           work) for e in suite.entries}
            rounds: dict[str, list[Any]] = {e.name: [] for e in suite.entries}
            paired: dict[str, list[Any]] = {e.name: [] for e in suite.entries}
            for r in range(1, total + 1):
                for i, e in enumerate(suite.entries, start=1):
                    if r > e.rounds:
                        continue
                    dev = opened[e.device]
                    try:
                        if e.reference and can_pair(dev):
                            m, pm = dev.measure_paired(paths[e.name], paths[e.reference],
                                                       e.settings)
                            paired[e.name].append(pm)
                        else:
                            m = measure_model(dev, paths[e.name], e.settings)
                    except RuntimeError as err:
                        raise RuntimeError(f"entry {e.name!r}: measuring on {e.device} "
                                           f"failed: {err}") from err
                    rounds[e.name].append(m)
                    if progress is not None:
                        progress(progress_line(i, n, e, m, r))
            for e in suite.entries:
                entry = e.to_dict()
                if e.model is not None:   # portable: relative to the suite file
                    entry["model"] = os.path.relpath(e.model, suite.path.parent.resolve())
                results.records[e.name] = BenchRecord.from_rounds(
                    e.name, entry, rounds[e.name], e.settings.rel_ci, paired[e.name] or None)
    finally:
        close_devices(opened)
    return results


def progress_line(i: int, n: int, e: SuiteEntry, m: Any, r: int = 1) -> str:
    noisy = ", NOISY" if m.noisy else ""
    budget = ""
    if e.max_ms is not None:
        budget = f", max_ms {e.max_ms:g}" + (" EXCEEDED" if m.median_ms > e.max_ms else "")
    return (f"[round {r}/{e.rounds}] [{i}/{n}] {e.name}: {m.median_ms:.3f} ms (95% CI "
            f"{m.ci_low_ms:.3f}-{m.ci_high_ms:.3f}, {m.runs} runs{noisy}{budget}) on {e.device}"
            f", {e.settings.clock} clock")


def _host() -> str:
    import platform

    return platform.node()


def _python() -> str:
    import platform

    return platform.python_version()

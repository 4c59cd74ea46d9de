"""``mnas latency``: measure one model file, or one architecture, on a device."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mnas.cli import CliError

#: file endings taken as a model file rather than an architecture string
MODEL_SUFFIXES = (".onnx", ".tflite")
DEFAULT_SPACE = "mnasnet"
#: flags that only shape a built ARCH; a model file fixes all of them
ARCH_ONLY = ("space", "classes", "resolution")


def register(sub: Any) -> None:
    d = _defaults()
    p = sub.add_parser(
        "latency", help="measure a model's latency on a device",
        description="Measure MODEL.onnx, or ARCH (a named point or canonical string of "
                    "--space) built full size and exported at 1x3xRxR, with the adaptive "
                    "protocol: warm-up, then repeats until the 95% CI of the median is "
                    "within ±--rel-ci or a cap is reached. Results are cached by (model "
                    "sha256, device fingerprint, runtime, settings).")
    p.add_argument("target", metavar="MODEL.onnx|ARCH")
    p.add_argument("--device", default="local:onnxruntime",
                   help="device spec (default local:onnxruntime)")
    # None: an ARCH-only flag given with a model file is refused, not silently ignored
    p.add_argument("--space", default=None, help=f"space of ARCH (default {DEFAULT_SPACE})")
    p.add_argument("--classes", type=int, default=None,
                   help="classes of the built ARCH (default: the space's deploy classes)")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution R for ARCH (default: the space's, 224)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"intra-op threads (default {d.threads})")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help=f"untimed warm-up runs (default {d.warmup})")
    p.add_argument("--runs", type=int, default=d.runs,
                   help=f"minimum timed runs (default {d.runs})")
    p.add_argument("--max-runs", type=int, default=None,
                   help=f"cap on timed runs (default max({d.max_runs}, --runs))")
    p.add_argument("--rel-ci", type=float, default=d.rel_ci,
                   help=f"target half-width of the median's 95%% CI (default {d.rel_ci})")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help=f"time cap once --runs are done (default {d.max_seconds})")
    p.add_argument("--clock", choices=("wall", "cpu"), default=d.clock,
                   help="wall: perf_counter, the latency a user waits (default); cpu: the "
                        "measuring thread's CPU time, robust on a busy shared host "
                        "(--threads 1 only)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", default=None, metavar="PATH",
                       help="cache file (default $MNAS_CACHE_DIR/latency.db or "
                            "~/.cache/mnas/latency.db)")
    cache.add_argument("--no-cache", action="store_true", help="measure afresh, store nothing")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON")
    p.add_argument("--measure-timeout", type=float, default=600.0, metavar="S",
                   help="a MODEL file measures on a local runtime in a child process killed "
                        "after S seconds, so a file that hangs or crashes the runtime is one "
                        "line (default 600); an ARCH is built here and measured in-process")
    p.set_defaults(func=run)


def _defaults() -> Any:
    from latency.measurement import MeasureSettings

    return MeasureSettings()


def checked_runs(args: argparse.Namespace, default_max_runs: int) -> int:
    """``--threads``, ``--warmup``, ``--runs``, ``--max-runs`` and ``--clock`` checked as
    every measuring command does (ValueError naming the flag); the ``--max-runs`` to use."""
    max_runs = args.max_runs if args.max_runs is not None else max(default_max_runs, args.runs)
    for flag, value, low in (("--threads", args.threads, 1), ("--warmup", args.warmup, 0),
                             ("--runs", args.runs, 3)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if max_runs < args.runs:
        raise ValueError(f"--max-runs ({max_runs}) must be >= --runs ({args.runs})")
    if args.clock == "cpu" and args.threads != 1:
        raise ValueError(f"--clock cpu counts one thread's CPU time, so it needs --threads 1 "
                         f"(got --threads {args.threads}); use --clock wall")
    return max_runs


def _settings(args: argparse.Namespace) -> Any:
    from latency.measurement import MeasureSettings

    max_runs = checked_runs(args, _defaults().max_runs)
    for flag, fvalue in (("--rel-ci", args.rel_ci), ("--max-seconds", args.max_seconds)):
        if not 0 < fvalue < float("inf"):   # inf surfaced as the runtime failing
            raise ValueError(f"{flag} must be a finite number > 0, got {fvalue}")
    return MeasureSettings(threads=args.threads, warmup=args.warmup, runs=args.runs,
                           max_runs=max_runs, rel_ci=args.rel_ci, max_seconds=args.max_seconds,
                           clock=args.clock)


def _is_model_file(target: str) -> bool:
    # lexists: a symbolic-link loop is a file that cannot be read, not an ARCH; "" is a
    # path left empty (a variable unset), refused as such
    return (not target or Path(target).suffix.lower() in MODEL_SUFFIXES
            or os.path.lexists(target))


def run(args: argparse.Namespace) -> int:
    from devices.base import get_device
    from latency.cache import MeasurementCache
    from latency.estimate import MeasuredLatency, measure_model
    from latency.export import check_onnx
    from latency.paths import check_input_path

    settings = _settings(args)
    is_file = _is_model_file(args.target)
    given = [f"--{k}" for k in ARCH_ONLY if getattr(args, k) is not None]
    if is_file and given:
        raise ValueError(f"{', '.join(given)} only {'apply' if len(given) > 1 else 'applies'} "
                         f"to an ARCH (built at that size); the model file {args.target} fixes "
                         f"its own: drop {'them' if len(given) > 1 else 'it'}")
    device = get_device(args.device)
    if is_file:
        from devices.local import isolated

        isolated(device, args.measure_timeout)
    cache = None if args.no_cache else MeasurementCache(args.cache)
    try:
        if is_file:
            path = check_input_path(args.target, "model file")
            if not path.exists():
                raise FileNotFoundError(f"model file not found: {path}")
            if device.model_format == "onnx":
                check_onnx(path)
            elif path.suffix.lower() != f".{device.model_format}":
                raise ValueError(f"device {args.device!r} runs .{device.model_format} "
                                 f"models, got {path.name}")
            m = measure_model(device, path, settings, cache)
            what = str(path)
        else:
            from mnas.spaces import get_space

            space = get_space(args.space or DEFAULT_SPACE)
            arch = space.parse(args.target)
            est = MeasuredLatency(device, settings=settings, cache=cache,
                                  resolution=args.resolution, num_classes=args.classes)
            m = est(space, arch)
            what = f"{space.key(arch)} at {'x'.join(map(str, est.input_shape(space)))}"
    except RuntimeError as e:  # the runtime failed on a valid input: one line, no traceback
        raise CliError(str(e)) from None
    finally:
        device.close()
    if args.json:
        print(json.dumps(m.to_dict(), sort_keys=True))
    else:
        print(summary(m, what))
    return 0


def summary(m: Any, what: str) -> str:
    """The human-readable block ``mnas latency`` prints."""
    flag = "NOISY (CI wider than asked; re-measure on a quieter host)" if m.noisy else "no"
    return "\n".join([
        f"model     {what}",
        f"device    {m.device}  ({m.runtime} {m.runtime_version}, {m.threads} thread"
        f"{'s' if m.threads != 1 else ''})",
        f"median    {m.median_ms:.3f} ms",
        f"p10/p90   {m.p10_ms:.3f} / {m.p90_ms:.3f} ms",
        f"MAD       {m.mad_ms:.3f} ms",
        f"95% CI    [{m.ci_low_ms:.3f}, {m.ci_high_ms:.3f}] ms  (±{100 * m.rel_ci:.2f}%)",
        f"runs      {m.runs} timed after {m.warmup} warm-up ({m.clock} clock)",
        f"noisy     {flag}",
        f"cached    {'yes' if m.cached else 'no'}",
        f"sha256    {m.model_sha256}",
    ])

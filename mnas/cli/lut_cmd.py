"""``mnas lut build`` / ``mnas lut eval``: per-layer latency lookup tables.

``build`` measures every distinct layer the space can produce once on ``--device`` (a
tiny one-layer model each), calibrates the sum on a few measured networks and writes a
JSON table with the device fingerprint; ``--latency lut:PATH`` then predicts instead of
measuring. ``eval`` measures random networks (none used for calibration) and reports the
share within ±5% / ±10%, MAPE, Spearman's rank correlation and predictions per second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any

from latency.lut import LUT_SPACES, MAX_CLASSES, MAX_RESOLUTION
from mnas.cli.options import doc_help

#: most networks `--n` / `--calibrate` may ask for: each is measured for about a second,
#: and the list of them is built up front (10**9 would take gigabytes before measuring)
MAX_NETWORKS = 100_000
#: most passes: each measures every unit once (about 10 minutes on a laptop)
MAX_PASSES = 100
#: the --max-runs a build uses unless --runs asks for more (MeasureSettings' default)
DEFAULT_MAX_RUNS = 300


def register(sub: Any) -> None:
    p = sub.add_parser("lut", help="per-layer latency lookup tables (build, eval)",
                       description=doc_help(__doc__, skip_first=True))
    lsub = p.add_subparsers(dest="lut_command", metavar="{build,eval}")
    lsub.required = True

    b = lsub.add_parser("build", help="measure every layer configuration of a space once")
    b.add_argument("--device", default="local:onnxruntime",
                   help="device spec (default local:onnxruntime)")
    b.add_argument("--space", default="mnasnet", choices=LUT_SPACES,
                   help="search space; lookup tables exist for mnasnet only (default mnasnet)")
    b.add_argument("--resolution", type=int, default=None,
                   help=f"deployment input resolution R, 32 to {MAX_RESOLUTION} (default: the "
                        "space's, 224)")
    b.add_argument("--classes", type=int, default=None,
                   help=f"classes of the head, 1 to {MAX_CLASSES} (default: the space's "
                        "deploy classes)")
    b.add_argument("--out", required=True, metavar="PATH", help="table file to write (JSON); "
                   "an existing compatible partial table is resumed")
    b.add_argument("--calibrate", type=int, default=30,
                   help=f"full networks measured for the calibration, 1 to {MAX_NETWORKS:,} "
                        "(default 30)")
    b.add_argument("--seed", type=int, default=1_000_003,
                   help="seed of the calibration networks")
    b.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=None,
                   help="time every unit alternately with a fixed anchor layer, every "
                        "network with the space's reference network, and scale each to "
                        "its reference's build-time latency, cancelling the host's slow "
                        "episodes (default: on where the device can, i.e. local runtimes; "
                        "see docs/lut.md)")
    b.add_argument("--passes", type=int, default=2,
                   help="measure every unit this many times, one pass over all units after "
                        "another; entries are medians, and a unit whose passes disagree by "
                        f"more than 5%% is measured once more (default 2, at most {MAX_PASSES})")
    _measure_args(b)
    b.set_defaults(func=run_build)

    e = lsub.add_parser("eval", help="compare a table's predictions with measurements")
    e.add_argument("--lut", required=True, metavar="PATH", help="table written by 'lut build'")
    e.add_argument("--device", default=None,
                   help="device to measure on (default: the table's device; its fingerprint "
                        "must match the table's)")
    e.add_argument("--n", type=int, default=100,
                   help=f"random networks to measure, 1 to {MAX_NETWORKS:,} (default 100)")
    e.add_argument("--seed", type=int, default=0, help="seed of the random networks")
    e.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="clock of the reference measurements (default: the table's)")
    e.add_argument("--rows", default=None, metavar="PATH",
                   help="also write every network's measured and predicted latency (JSON); "
                        "an existing file is replaced only with --force")
    e.add_argument("--force", action="store_true", help="overwrite an existing --rows file")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    _cache_args(e)
    e.set_defaults(func=run_eval)


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: the device's timing (default); cpu: the measuring thread's "
                        "CPU time (local devices, one thread; a busy host then inflates "
                        "long and short runs alike)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    p.add_argument("--runs", type=int, default=30, help="minimum timed runs (default 30)")
    p.add_argument("--max-runs", type=int, default=None,
                   help=f"cap on timed runs, at least --runs (default {DEFAULT_MAX_RUNS}, or "
                        "--runs if that is more)")
    _cache_args(p)


def _cache_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cache", default=None, metavar="PATH",
                   help="measurement cache file (default $MNAS_CACHE_DIR/latency.db or "
                        "~/.cache/mnas/latency.db): every unit and network measurement is "
                        "kept with its samples")
    g.add_argument("--no-cache", action="store_true", help="measure afresh, store nothing")


def _settings(args: argparse.Namespace) -> Any:
    """The build's MeasureSettings, refused in the flags' names as `mnas latency` does."""
    from latency.measurement import MeasureSettings
    from mnas.cli.latency_cmd import checked_runs

    max_runs = checked_runs(args, DEFAULT_MAX_RUNS)
    return MeasureSettings(threads=args.threads, warmup=args.warmup, runs=args.runs,
                           max_runs=max_runs, clock=args.clock)


def _check_range(flag: str, value: int | None, low: int, high: int) -> None:
    """One line unless ``value`` (None: the default) is in [low, high]."""
    if value is not None and not low <= value <= high:
        raise ValueError(f"{flag} must be in [{low}, {high:,}], got {value:,}")


def _json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as None: json.dumps would write NaN, which is not JSON
    (Spearman's correlation of one network is undefined)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def _cache(args: argparse.Namespace) -> Any:
    if args.no_cache:
        return None
    from latency.cache import MeasurementCache

    return MeasurementCache(args.cache)  # None: the default file


def run_build(args: argparse.Namespace) -> int:
    from devices.base import get_device
    from latency.lut_measure import build_table
    from latency.paths import check_output_file
    from mnas.spaces.base import get_space

    if args.passes < 1:
        raise ValueError(f"--passes must be >= 1, got {args.passes}")
    _check_range("--calibrate", args.calibrate, 1, MAX_NETWORKS)
    _check_range("--passes", args.passes, 1, MAX_PASSES)
    # 32: the smallest input the space's five stride-2 stages leave a pixel of
    _check_range("--resolution", args.resolution, 32, MAX_RESOLUTION)
    _check_range("--classes", args.classes, 1, MAX_CLASSES)
    settings = _settings(args)
    check_output_file(args.out, "--out")   # an existing table is resumed, not refused
    space = get_space(args.space)
    device = get_device(args.device)
    t0 = time.monotonic()
    try:
        table = build_table(device, space, args.out, resolution=args.resolution,
                            num_classes=args.classes, settings=settings,
                            calibrate=args.calibrate, seed=args.seed,
                            cache=_cache(args), anchor=args.anchor, passes=args.passes)
    finally:
        device.close()
    c = table.calibration
    print(f"lookup table {args.out}: {len(table.entries)} units of {table.space} at "
          f"{table.resolution}x{table.resolution} on {table.device} (clock {table.clock}), "
          f"{len(table.noisy)} noisy; "
          + (f"anchored to {table.anchor['unit']} ({table.anchor['ms']:.4f} ms)"
             + (f", networks to {table.anchor['network']['ms']:.3f} ms of the reference "
                "network" if "network" in table.anchor else "") + "; "
             if table.anchor else "")
          + f"calibration on {c['points']} networks: "
          f"{c['a']:.4f} x sum + {c['b']:.4f} ms x units + {c['c']:.3f} ms "
          f"(fit MAPE {c['fit_mape']:.2%}); {time.monotonic() - t0:.0f} s")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from devices.base import get_device
    from latency.lut import LatencyTable
    from latency.lut_measure import evaluate_table
    from latency.paths import check_output_file
    from mnas.spaces.base import get_space

    _check_range("--n", args.n, 1, MAX_NETWORKS)
    if args.rows and _same_file(args.rows, args.lut):
        raise ValueError(f"--rows {args.rows} is the --lut table: the rows would replace it; "
                         "give --rows another file")
    table = LatencyTable.load(args.lut)
    table.check_complete()
    # before minutes of measuring; its folder is made as `lut build --out`'s is
    rows_path = (check_output_file(args.rows, "--rows", force=args.force) if args.rows
                 else None)
    space = get_space(table.space)
    device = get_device(args.device or table.device)
    settings = table.measure_settings()
    if args.clock:
        settings = dataclasses.replace(settings, clock=args.clock)
    t0 = time.monotonic()
    try:
        res = evaluate_table(table, device, space, n=args.n, seed=args.seed, settings=settings,
                             cache=_cache(args))
    finally:
        device.close()
    rows = res.pop("rows")
    res["seconds"] = time.monotonic() - t0
    if rows_path is not None:
        rows_path.write_text(json.dumps(_json_safe(rows), indent=1))
    if args.json:
        print(json.dumps(_json_safe(res), indent=1, sort_keys=True, allow_nan=False))
        return 0
    sp = res["predictions_per_s"]

    def metrics(r: dict[str, Any]) -> str:
        return (f"within ±5% {r['within_5pct']:.1%}, within ±10% {r['within_10pct']:.1%}, "
                f"MAPE {r['mape']:.2%}, Spearman "
                + (f"{r['spearman']:.4f}" if math.isfinite(r["spearman"]) else
                   "undefined (needs two networks of different latencies)"))

    how = ("timed alternately with the table's "
           + ("reference network" if "network" in (table.anchor or {}) else "anchor")
           + " and scaled to its build-time latency" if res["anchored"] else "raw medians")
    print(f"{res['n']} networks on {device.spec} (table clock {table.clock}, measured "
          f"with clock {settings.clock}, {how}): {metrics(res)}, "
          f"{res['noisy_measurements']} noisy measurements; predictions/s: "
          f"{sp['batch']:.3g} batched, {sp['single']:.3g} one arch at a time; "
          f"{res['seconds']:.0f} s")
    if res["anchored"]:
        print(f"against the unscaled medians: {metrics(res['raw'])}")
    return 0


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (links and ``..`` resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:   # one does not exist (yet); realpath, unlike resolve, takes a loop
        return (os.path.realpath(os.path.expanduser(a))
                == os.path.realpath(os.path.expanduser(b)))

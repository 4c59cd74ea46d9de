"""``mnas bench``: the CI latency-regression gate.

* ``mnas bench run SUITE.toml --out results.json [--force] [--entry NAME]`` — measure
  every suite entry fresh (raw samples, device fingerprint, settings, model sha256).
* ``mnas bench compare BASELINE.json RESULTS.json [--tolerance 5%] [--inconclusive
  fail|pass] [--junit F] [--markdown F] [--plot F.png] [--force]`` — a verdict per
  entry; exit 0 (no regression), 1 (regression or over max_ms), 2 (error, or
  inconclusive under ``--inconclusive fail``, the default).
* ``mnas bench baseline update RESULTS.json [MORE.json ...] --baseline BASELINE.json
  [--entry NAME] [--force]`` — accept new numbers on purpose; several runs are merged
  and their spread becomes the entry's run-to-run drift.

The statistics and the verdict rule are in :mod:`latency.regression`; the suite format
in :mod:`latency.suite`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from latency.bench_results import BenchResults

from latency.regression import INCONCLUSIVE_POLICIES
from mnas.cli.options import doc_help


def _tolerance(text: str) -> float:
    """``5%`` or ``0.05``."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.05 or a percentage "
                                         f"such as 5%, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"tolerance must be in (0, 1) — 0.05 or 5% for 5% — "
                                         f"got {text!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    from latency.paths import check_output_file
    from latency.suite import load_suite, run_suite
    from mnas.cli import CliError

    suite = load_suite(args.suite).select(args.entry)
    # refuse before minutes of measuring, not after
    out = check_output_file(args.out, "--out", force=args.force)
    try:
        results = run_suite(suite, progress=lambda line: print(line, flush=True),
                            timeout_s=args.measure_timeout)
    except RuntimeError as e:
        raise CliError(str(e)) from e
    results.save(out, force=args.force)
    print(f"bench: wrote {out}")
    over = [r.name for r in results.records.values()
            if r.max_ms is not None and r.measurement.median_ms > r.max_ms]
    if over:
        print(f"bench: over max_ms: {', '.join(over)} (`mnas bench compare` fails them)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from latency import bench_report
    from latency.bench_results import BenchResults
    from latency.paths import check_output_file
    from latency.regression import compare_results, exit_code

    # the report files are checked first: a CI gate must not print a verdict, then fail
    for flag, path, kind in (("--junit", args.junit, ".xml file"),
                             ("--markdown", args.markdown, ".md file"),
                             ("--plot", args.plot, ".png file")):
        if path:
            check_output_file(path, flag, kind=kind,
                              suffix=".png" if flag == "--plot" else None)
    baseline = BenchResults.load(args.baseline, what="baseline")
    results = BenchResults.load(args.results)
    cs = compare_results(baseline, results, tolerance=args.tolerance, force=args.force)
    print(bench_report.text_table(cs, args.inconclusive))
    if args.junit:
        _write(args.junit, bench_report.junit_xml(cs, args.inconclusive))
    if args.markdown:
        _write(args.markdown, bench_report.markdown(cs, args.inconclusive))
    if args.plot:
        bench_report.plot(cs, args.plot, title=f"mnas bench: {Path(args.results).name} vs "
                          f"{Path(args.baseline).name}")
        print(f"bench: wrote {args.plot}")
    return exit_code(cs, args.inconclusive)


def _write(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    print(f"bench: wrote {p}")


def _baseline_update(args: argparse.Namespace) -> int:
    from latency.bench_results import BenchResults
    from latency.paths import check_output_file
    from latency.regression import update_baseline

    bpath = check_output_file(args.baseline, "--baseline")
    runs = [BenchResults.load(p) for p in args.results]
    old = BenchResults.load(bpath, what="baseline") if bpath.exists() else None
    if args.drop:
        old = _dropped(old, bpath, args.drop, runs, args.results)
    new, lines = update_baseline(old, runs, names=args.entry, force=args.force,
                                 sources=[str(p) for p in args.results],
                                 baseline_label=f"the baseline {bpath}")
    for line in lines:
        print(f"baseline: {line}")
    new.save(bpath, force=True)  # updating the baseline is the point of this command
    print(f"baseline: wrote {bpath} ({len(new.records)} entries)")
    return 0


def _dropped(old: BenchResults | None, bpath: Path, drop: list[str], runs: list[BenchResults],
             paths: list[str]) -> BenchResults:
    """The baseline without the ``--drop`` entries (ones removed from the suite, which a
    full update would otherwise require every results file to hold)."""
    import dataclasses

    if old is None:
        raise ValueError(f"--drop: there is no baseline {bpath} yet to drop entries from")
    unknown = [n for n in drop if n not in old.records]
    if unknown:
        raise ValueError(f"--drop: no entry named {', '.join(map(repr, unknown))} in the "
                         f"baseline {bpath}; entries: {', '.join(old.records)}")
    for path, run in zip(paths, runs, strict=True):
        measured = [n for n in drop if n in run.records]
        if measured:
            raise ValueError(f"--drop {', '.join(map(repr, measured))}: {path} measures it; "
                             "remove the entry from the suite first")
    for name in dict.fromkeys(drop):
        print(f"baseline: {name}: dropped")
    return dataclasses.replace(old, records={k: v for k, v in old.records.items()
                                             if k not in drop})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="CI latency-regression gate: run a suite, "
                              "compare against a baseline",
                              description=doc_help((__doc__ or "").split("\n\n")[0]))
    sub = p.add_subparsers(dest="bench_command", metavar="ACTION")
    sub.required = True

    r = sub.add_parser("run", help="measure every entry of a suite TOML file")
    r.add_argument("suite", help="suite file (TOML, see latency/suite.py)")
    r.add_argument("--out", required=True, help="results JSON to write")
    r.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    r.add_argument("--measure-timeout", type=float, default=600.0, metavar="S",
                   help="local runtimes measure each entry in a child process killed after S "
                        "seconds, so a model file that hangs or crashes the runtime fails "
                        "its entry in one line (default 600)")
    r.add_argument("--entry", action="append", metavar="NAME",
                   help="measure only this entry (repeatable)")
    r.set_defaults(func=_run)

    c = sub.add_parser("compare", help="verdict per entry: ok, regression, improvement, "
                       "inconclusive; exit 0/1/2")
    c.add_argument("baseline", help="baseline JSON (from `mnas bench baseline update`)")
    c.add_argument("results", help="results JSON (from `mnas bench run`)")
    c.add_argument("--tolerance", type=_tolerance, default=None,
                   help="override every entry's tolerance (0.05 or 5%%)")
    c.add_argument("--inconclusive", choices=INCONCLUSIVE_POLICIES, default="fail",
                   help="what an inconclusive entry does: fail (exit 2, default) or pass")
    c.add_argument("--junit", metavar="FILE", help="write JUnit XML for the CI's test report")
    c.add_argument("--markdown", metavar="FILE", help="write a Markdown table for a PR comment")
    c.add_argument("--plot", metavar="FILE.png", help="write a PNG of baseline vs current")
    c.add_argument("--force", action="store_true",
                   help="compare even if the device fingerprint differs from the baseline's")
    c.set_defaults(func=_compare)

    b = sub.add_parser("baseline", help="manage the baseline file")
    bsub = b.add_subparsers(dest="baseline_command", metavar="ACTION")
    bsub.required = True
    u = bsub.add_parser("update", help="accept results as the new baseline, on purpose")
    u.add_argument("results", nargs="+", help="results JSON (from `mnas bench run`); give 3+ "
                   "runs, ideally taken at different times, so the gate knows this device's "
                   "run-to-run drift")
    u.add_argument("--baseline", required=True, help="baseline JSON to create or update")
    u.add_argument("--entry", action="append", metavar="NAME",
                   help="accept only this entry (repeatable); others keep their numbers")
    u.add_argument("--drop", action="append", metavar="NAME",
                   help="remove this entry (one dropped from the suite) from the baseline "
                        "(repeatable)")
    u.add_argument("--force", action="store_true",
                   help="replace entries measured on a different device or runtime")
    u.set_defaults(func=_baseline_update)

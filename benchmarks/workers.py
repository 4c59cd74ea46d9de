"""Parallel children: the same search one child at a time and with ``--workers N``.

Runs ``mnas search`` twice on the same children (``--strategy random``, one seed, so the
asks do not depend on the rewards), each in its own run folder and latency cache so both
measure every child: once with ``--batch N`` (children trained one after another, here)
and once with ``--workers N`` (each batch's children trained at once as Ray tasks).
Prints the wall time of each whole command, their ratio (> 1: the workers were faster;
Ray's start and each worker's first imports are included) and checks that both runs
scored the same accuracies. Latency is measured one child at a time in both.

    .venv/bin/python benchmarks/workers.py [--budget 24] [--workers 2] [--space mnasnet]
        [-- extra mnas search flags]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search(out: Path, flags: list[str]) -> tuple[float, list[tuple[str, str]]]:
    env = {**os.environ, "MNAS_CACHE_DIR": str(out.parent / f"{out.name}-cache"),
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mnas", "search", "--out", str(out),
                        "--no-progress", "--no-export", *flags], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode == 2:      # refused input: its one line, and the same exit code
        print(r.stderr.strip().splitlines()[-1], file=sys.stderr)
        raise SystemExit(2)
    if r.returncode != 0:
        raise SystemExit(f"mnas search failed ({r.returncode}):\n{r.stderr[-2000:]}")
    with open(out / "trials.csv") as f:
        return wall, [(row["arch"], row["accuracy"]) for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("extra", nargs="*", help="more `mnas search` flags (after --)")
    args = ap.parse_args(argv)
    if args.budget < 1 or args.workers < 2:
        ap.error("need --budget >= 1 and --workers >= 2")
    common = ["--strategy", "random", "--space", args.space, "--budget", str(args.budget),
              "--seed", str(args.seed), *args.extra]
    with tempfile.TemporaryDirectory(prefix="mnas-workers-") as tmp:
        serial, rows_s = search(Path(tmp) / "serial", [*common, "--batch", str(args.workers)])
        par, rows_p = search(Path(tmp) / "ray", [*common, "--workers", str(args.workers)])
    same = rows_s == rows_p
    print(f"{args.budget} {args.space} children, batches of {args.workers}:")
    print(f"  one at a time   {serial:7.1f} s wall")
    print(f"  --workers {args.workers:<4d}  {par:7.1f} s wall (Ray's start included)")
    print(f"  ratio {serial / par:.2f}× (> 1: the workers were faster); accuracies "
          f"{'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

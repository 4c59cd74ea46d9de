"""Does ``mnas latency`` measure what a bare ONNX Runtime loop measures, repeatably?

One model (default: the mnasnet space's MobileNetV2 point, full size, exported at
1x3x224x224; or a .onnx path) is measured in alternating rounds, in this one process:

- ours: ``mnas latency MODEL --json --no-cache`` (the CLI's code path: device, runtime,
  adaptive protocol), its median;
- bare: a fresh ``onnxruntime.InferenceSession`` with the same session options, the same
  warm-up, then a plain ``time.perf_counter`` loop of as many runs as ours took.

Printed: per-round medians, the ratio of medians ours/bare (goal within ±3%) and the
coefficient of variation of our repeated medians (goal <= 2%). The round order alternates
so slow drift of the host loads both sides alike.

``--clock cpu`` compares ``mnas latency --clock cpu`` with a bare loop timed by
``time.thread_time`` instead (the robust choice on a busy shared host).

    .venv/bin/python benchmarks/latency_fidelity.py [MODEL.onnx] [--rounds 6] [--threads 1]
        [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RATIO_GOAL = 0.03
CV_GOAL = 0.02


def export_reference(folder: Path) -> Path:
    """MobileNetV2 from the mnasnet space at 224 (twice: the first export pays imports)."""
    from devices.base import get_device
    from latency.estimate import MeasuredLatency
    from mnas.spaces import get_space

    space = get_space("mnasnet")
    arch = space.parse("mobilenetv2")
    est = MeasuredLatency(get_device("local:onnxruntime"))
    for i in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        path = est.export(space, arch, folder / "mobilenetv2.onnx")
        print(f"export mobilenetv2 (build + ONNX, 1x3x224x224) #{i + 1}: "
              f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")
    return path


def ours(path: Path, args: argparse.Namespace) -> dict:
    from mnas.cli import main

    argv = ["latency", str(path), "--json", "--no-cache", "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--runs", str(args.runs), "--clock", args.clock]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"mnas latency exited {rc}")
    return json.loads(buf.getvalue())


def bare(path: Path, threads: int, warmup: int, runs: int, clock: str) -> float:
    import onnxruntime as ort

    from latency.runtimes import onnxruntime_session_options

    sess = ort.InferenceSession(str(path), onnxruntime_session_options(threads),
                                providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    now = time.perf_counter if clock == "wall" else time.thread_time
    times = []
    for _ in range(runs):
        t0 = now()
        sess.run(None, feed)
        times.append((now() - t0) * 1e3)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help=".onnx file (default: MobileNetV2 at 224)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()

    import onnxruntime
    import torch

    torch.set_num_threads(1)  # as the tests and a 2-core host's workers: export on one core

    print(f"onnxruntime {onnxruntime.__version__}, threads {args.threads}, "
          f"warm-up {args.warmup}, min runs {args.runs}, rounds {args.rounds}, "
          f"clock {args.clock}, load average {_loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else export_reference(Path(tmp))
        ours_med, bare_med, runs = [], [], []
        for r in range(args.rounds):
            order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
            for side in order:
                if side == "ours":
                    rec = ours(path, args)
                    ours_med.append(rec["median_ms"])
                    runs.append(rec["runs"])
                    noisy = rec["noisy"]
                else:  # as many timed runs as ours took last (or the minimum, first)
                    n = runs[-1] if runs else args.runs
                    bare_med.append(bare(path, args.threads, args.warmup, n, args.clock))
            print(f"round {r + 1}: ours {ours_med[-1]:8.3f} ms ({runs[-1]} runs"
                  f"{', NOISY' if noisy else ''})   bare {bare_med[-1]:8.3f} ms   "
                  f"ratio {ours_med[-1] / bare_med[-1]:.4f}")
    ratio = statistics.median(ours_med) / statistics.median(bare_med)
    cv = statistics.stdev(ours_med) / statistics.mean(ours_med) if len(ours_med) > 1 else 0.0
    cv_bare = (statistics.stdev(bare_med) / statistics.mean(bare_med)
               if len(bare_med) > 1 else 0.0)
    paired = statistics.median(o / b for o, b in zip(ours_med, bare_med, strict=True))
    print(f"model: {path.name if args.model else 'mobilenetv2 (mnasnet space), 1x3x224x224'}")
    print(f"ratio of medians ours/bare: {ratio:.4f}  (goal within ±{RATIO_GOAL:.0%}: "
          f"{'PASS' if abs(ratio - 1) <= RATIO_GOAL else 'FAIL'}); median of per-round "
          f"ratios: {paired:.4f}")
    print(f"CV of our repeated medians: {cv:.2%}  (goal <= {CV_GOAL:.0%}: "
          f"{'PASS' if cv <= CV_GOAL else 'FAIL'}); bare loop's CV for reference: "
          f"{cv_bare:.2%}")
    print(f"load average at the end: {_loadavg()}")
    return 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())

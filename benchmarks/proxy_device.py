"""Proxy training on a GPU vs the CPU: wall seconds per child and the accuracies.

The same ``--children`` (drawn uniformly from the space with ``--seed``) are trained by
:class:`mnas.evaluators.proxy.ProxyAccuracy` with the same settings, once per
``--cpu-threads`` value on the CPU and once on ``--torch-device`` (default ``cuda``).
Before them one untimed child per device (MobileNetV2 where the space has it) pays the
start-up (CUDA context, cuDNN's first kernels). Printed per child: wall
seconds on each device and the accuracies; then the median speed-up of the GPU over each
CPU setting (CPU seconds ÷ GPU seconds, same process) and the largest accuracy difference.

The proxy's defaults (digits 32×32, width 0.5, 2 epochs: 44 steps of batch 64) are the
search's; ``--epochs 10 --width-mult 1.0`` is closer to ``mnas train``'s full-size
training. Without CUDA the GPU column is left out and only the CPU settings are compared.

    .venv/bin/python benchmarks/proxy_device.py [--children 6] [--epochs 2]
        [--width-mult 0.5] [--cpu-threads 1,16] [--space mnasnet] [--json PATH]
        [--profile 25]      # + one child under torch.profiler: why is a GPU step slow?
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _children(space: Any, n: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    named = space.named()
    first = [named["mobilenetv2"]] if "mobilenetv2" in named else []
    return (first + [space.sample(rng) for _ in range(n)])[:n]


def _timed(ev: Any, space: Any, arch: Any) -> tuple[float, float]:
    t0 = time.perf_counter()
    acc = ev(space, arch)
    return time.perf_counter() - t0, acc


def _profile(ev: Any, space: Any, arch: Any, rows: int, name: str) -> None:
    """One child's training under torch.profiler: where a step's time goes (kernels,
    launches, Lightning's own work)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if name.startswith("cuda")
                                     else [])
    with profile(activities=acts) as prof:
        s, _ = _timed(ev, space, arch)
    key = "self_cuda_time_total" if len(acts) > 1 else "self_cpu_time_total"
    print(f"profiled child on {name}: {s:.2f} s (the proxy's settings: deterministic "
          "algorithms, warn-only on CUDA; cudnn.benchmark off)")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
    if len(acts) > 1:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--children", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--cpu-threads", default="1",
                    help="comma-separated torch thread counts for the CPU runs (default 1)")
    ap.add_argument("--torch-device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", metavar="PATH", help="also write the rows here")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="then train the first child once more under torch.profiler on the "
                         "last setting (the GPU if any) and print its ROWS costliest ops")
    args = ap.parse_args()

    import torch

    from mnas.evaluators.proxy import ProxyAccuracy
    from mnas.spaces import SPACES, get_space

    if args.space not in SPACES:
        ap.error(f"unknown space {args.space!r}; valid: {', '.join(sorted(SPACES))}")
    if args.children < 1 or args.epochs < 1:
        ap.error("need --children >= 1 and --epochs >= 1")
    try:
        threads = [int(t) for t in args.cpu_threads.split(",") if t.strip()]
        if not threads or min(threads) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--cpu-threads must be positive integers, e.g. 1,16; got {args.cpu_threads!r}")
    space = get_space(args.space)
    common = {"data": args.data, "epochs": args.epochs, "width_mult": args.width_mult,
              "resolution": args.resolution, "seed": args.seed}
    setups: dict[str, Any] = {f"cpu-t{t}": ProxyAccuracy(**common, threads=t) for t in threads}
    gpu = args.torch_device if torch.cuda.is_available() else ""
    if gpu:
        try:
            setups[gpu] = ProxyAccuracy(**common, torch_device=gpu)
        except ValueError as e:
            ap.error(str(e))
        print(f"GPU: {torch.cuda.get_device_name(setups[gpu].torch_device)}")
    else:
        print("no CUDA device here: CPU settings only")
    children = _children(space, args.children + 1, args.seed)
    warm, timed = children[0], children[1:]
    for name, ev in setups.items():
        s, _ = _timed(ev, space, warm)
        print(f"start-up child on {name}: {s:.2f} s (untimed)")
    rows: list[dict[str, Any]] = []
    names = list(setups)
    print(" ".join(f"{n + ' s':>10} {n + ' acc':>12}" for n in names) + "  arch")
    for arch in timed:
        row: dict[str, Any] = {"arch": arch.encode()}
        for name, ev in setups.items():
            row[name + "_s"], row[name + "_acc"] = _timed(ev, space, arch)
        rows.append(row)
        print(" ".join(f"{row[n + '_s']:10.2f} {row[n + '_acc']:12.4f}" for n in names)
              + f"  {row['arch'][:60]}")
    summary: dict[str, Any] = {"settings": {**common, "space": args.space,
                                            "children": len(rows)}}
    for n in names:
        summary[n + "_median_s"] = statistics.median(r[n + "_s"] for r in rows)
    if gpu:
        for n in names[:-1]:
            ratio = statistics.median(r[n + "_s"] / r[gpu + "_s"] for r in rows)
            diff = max(abs(r[n + "_acc"] - r[gpu + "_acc"]) for r in rows)
            summary[f"speedup_{gpu}_over_{n}"] = ratio
            summary[f"max_acc_diff_{n}"] = diff
            print(f"{gpu} vs {n}: median speed-up {ratio:.2f}x per child; largest accuracy "
                  f"difference {diff:.4f}")
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}))
    if args.profile > 0:
        _profile(setups[names[-1]], space, timed[0], args.profile, names[-1])
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

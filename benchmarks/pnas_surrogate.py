"""PNAS on the ``pnas`` space: does the surrogate rank cells, stage by stage, and does the
search beat random search for the same budget?

``benchmarks/strategies.py`` compares strategies on the NAS-Bench-201 table, where PNAS
grows cells by node (1 → 3; see ``search.strategies.pnas``). This benchmark runs PNAS on
its own space, whose cells grow 1 → B blocks, through the project's loop (``search.loop.SearchLoop``, in-memory ledger), with a cheap
**proxy task** so a run takes seconds:

- **latency** = the real built network's multiply-accumulates at the deployment shape
  (1×3×32×32, ``mnas.counting.arch_stats``) at ``--gmacs`` GMAC/s — a proxy for measured
  latency with the real structure (heavy ops, reduction strides, all-block concatenation);
- **accuracy** = a synthetic function of the cell with structure the surrogate must learn:
  per-op quality (random, fixed by ``--task-seed``), a bonus for blocks that read other
  blocks (depth), a penalty for a block applying the same op twice, saturating in the
  total, plus fixed per-cell noise (σ 0.005, like proxy-training noise). Nobody should
  read these accuracies as CIFAR numbers.

Reward: MnasNet's soft ``ACC × (LAT/T)^−0.07`` with ``--target`` T ms.

Printed per stage (mean over seeds): the surrogate's Spearman on the stage's own children
(predicted before they were scored vs real — the top-K of the ranking, so a narrow
range), and on ``--holdout`` random cells of the stage's size (accuracy only — free to
score here; the unrestricted ranking quality). Then the best reward found by PNAS vs
random search at the same budget and seeds. ``--csv`` writes the per-seed stage rows.

    .venv/bin/python benchmarks/pnas_surrogate.py [--budget 100] [--seeds 3]
        [--initial 32] [--beam 16] [--target 8] [--predictor mlp|lstm] [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # shared hosts: one thread, steady timings
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


@dataclass(frozen=True)
class ProxyLatency:
    """What the loop needs from a measurement: a median and a record."""

    median_ms: float
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "macs": self.macs, "kind": "macs-proxy"}


class ProxyTask:
    """Synthetic accuracy and MACs-proxy latency of pnas cells (see the module docstring)."""

    def __init__(self, space: Any, task_seed: int, gmacs: float) -> None:
        rng = random.Random(task_seed)
        self.space = space
        self.quality = {op: rng.random() for op in space.OPS}
        self.gmacs = gmacs
        self._macs: dict[str, int] = {}

    def accuracy(self, _space: Any, arch: Any) -> float:
        score = 0.0
        for b in arch.blocks:
            score += self.quality[b.op1] + self.quality[b.op2]
            score += 0.25 * (b.in1 >= 2) + 0.25 * (b.in2 >= 2) - 0.3 * (b.op1 == b.op2)
        key = self.space.canonical(arch).encode()
        noise = ((zlib.crc32(key.encode()) % 2001) / 1000 - 1.0) * 0.005 * math.sqrt(3)
        return min(1.0, max(0.0, 0.25 + 0.65 * (1 - math.exp(-max(score, 0.0) / 4)) + noise))

    def latency(self, _space: Any, arch: Any) -> ProxyLatency:
        from mnas.counting import arch_stats

        key = arch.encode()
        if key not in self._macs:
            self._macs[key] = int(arch_stats(self.space, arch)["macs"])
        macs = self._macs[key]
        return ProxyLatency(macs / (self.gmacs * 1e6), macs)


def run_one(space: Any, task: ProxyTask, name: str, seed: int, budget: int, target: float,
            holdout: int, options: dict[str, Any]) -> dict[str, Any]:
    from mnas.reward import Reward
    from search.base import get_strategy
    from search.loop import ChildScorer, SearchLoop
    from search.surrogate import spearman

    strategy = get_strategy(name, space, seed=seed, **options)
    scorer = ChildScorer(space, task.accuracy, task.latency, [Reward(target)],
                         count_stats=False)
    held: list[dict[str, Any]] = []
    rng = random.Random(1000 + seed)

    def after_tell(_trial: Any) -> None:
        # a new stage was just ranked: score the fresh surrogate on random cells of its size
        stage = getattr(strategy, "stage", None)
        if stage is None or any(h["stage"] == stage for h in held):
            return
        if not strategy.surrogate.fitted:
            return
        b = strategy.blocks
        cells = [space.from_choices([rng.randrange(d.size) for d in space.decisions_for_blocks(b)])
                 for _ in range(holdout)]
        mu, _ = strategy.surrogate.predict(np.stack([space.vector(c) for c in cells]))
        held.append({"stage": stage, "blocks": b,
                     "holdout_spearman_acc": spearman(mu, [task.accuracy(space, c)
                                                           for c in cells])})

    t0 = time.process_time()
    loop = SearchLoop(space, strategy, scorer, budget=budget, batch=1, callbacks=[after_tell])
    trials = loop.run()
    cpu = time.process_time() - t0
    ok = [t for t in trials if t.ok and t.reward is not None]
    out: dict[str, Any] = {"best_reward": max(t.reward for t in ok), "cpu_s": cpu,
                           "best_arch": max(ok, key=lambda t: t.reward).arch}
    if name == "pnas":
        by_stage = {h["stage"]: h for h in held}
        rows = []
        for r in strategy.report()["stage_spearman"]:
            rows.append({**r, "seed": seed, "holdout_spearman_acc":
                         by_stage.get(r["stage"], {}).get("holdout_spearman_acc")})
        out["stages"] = rows
    return out


def _mean(xs: list[float | None]) -> str:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    if not vals:
        return "   n/a"
    return f"{statistics.mean(vals):+.3f}" + (f"±{statistics.stdev(vals):.2f}"
                                               if len(vals) > 1 else "     ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=5, help="B of the pnas space")
    ap.add_argument("--initial", type=int, default=32)
    ap.add_argument("--beam", type=int, default=16)
    ap.add_argument("--latency-model", choices=("linear", "none"), default="linear")
    ap.add_argument("--predictor", choices=("mlp", "lstm"), default="mlp",
                    help="accuracy predictor: MLP ensemble (default) or LSTM ensemble")
    ap.add_argument("--target", type=float, default=8.0, help="T in ms of the proxy latency")
    ap.add_argument("--gmacs", type=float, default=10.0, help="proxy throughput, GMAC/s")
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--task-seed", type=int, default=0)
    ap.add_argument("--csv", default="")
    args = ap.parse_args()
    if args.budget < 2 or args.seeds < 1:
        ap.error("--budget must be >= 2 and --seeds >= 1")

    import torch

    torch.set_num_threads(1)
    from mnas.spaces import get_space

    space = get_space("pnas", blocks=args.blocks)
    task = ProxyTask(space, args.task_seed, args.gmacs)
    options = {"initial": args.initial, "beam": args.beam,
               "latency_model": args.latency_model, "predictor": args.predictor}
    print(f"pnas space B={args.blocks}; budget {args.budget}; seeds {args.seeds}; "
          f"initial {args.initial}, beam {args.beam}; T = {args.target} ms "
          f"(MACs at {args.gmacs} GMAC/s); latency model {args.latency_model}; "
          f"predictor {args.predictor}")
    pnas, rand = [], []
    for seed in range(args.seeds):
        pnas.append(run_one(space, task, "pnas", seed, args.budget, args.target,
                            args.holdout, options))
        rand.append(run_one(space, task, "random", seed, args.budget, args.target, 0, {}))
        print(f"seed {seed}: pnas best reward {pnas[-1]['best_reward']:.4f} "
              f"({pnas[-1]['cpu_s']:.1f} s CPU) {pnas[-1]['best_arch']}; random "
              f"{rand[-1]['best_reward']:.4f}", flush=True)

    rows = [r for p in pnas for r in p["stages"]]
    print("\nstage blocks children  Spearman(reward) Spearman(acc) Spearman(lat)"
          "  holdout Spearman(acc)  best reward")
    for stage in sorted({r["stage"] for r in rows}):
        rs = [r for r in rows if r["stage"] == stage]
        print(f"{stage:5d} {rs[0]['blocks']:6d} {statistics.mean(r['children'] for r in rs):8.1f}"
              f"  {_mean([r['spearman_reward'] for r in rs]):>16} {_mean([r['spearman_acc'] for r in rs]):>13}"
              f" {_mean([r['spearman_lat'] for r in rs]):>13}"
              f"  {_mean([r['holdout_spearman_acc'] for r in rs]):>21}"
              f"  {statistics.mean(r['best_reward'] or 0 for r in rs):11.4f}")
    pb = [p["best_reward"] for p in pnas]
    rb = [r["best_reward"] for r in rand]
    print(f"\nbest reward in {args.budget} children (mean over {args.seeds} seeds): "
          f"pnas {statistics.mean(pb):.4f}, random {statistics.mean(rb):.4f}, "
          f"ratio {statistics.mean(pb) / statistics.mean(rb):.3f}; pnas wins "
          f"{sum(p > r for p, r in zip(pb, rb, strict=True))}/{args.seeds} seeds")
    if args.csv:
        keys = ["seed", "stage", "blocks", "children", "complete", "predicted",
                "spearman_reward", "spearman_acc", "spearman_lat", "holdout_spearman_acc",
                "best_reward"]
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

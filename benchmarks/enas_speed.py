"""ENAS speed and fidelity: children scored per CPU-minute on the supernet vs standalone
proxy training, and the Spearman correlation between the two accuracies.

What is counted (all CPU seconds from ``time.process_time``, one torch thread):

* **supernet training** ``T_train`` — building the strategy's supernet and data, then
  ``--rounds`` rounds of the strategy's own inner loop (``shared_steps`` minibatches of
  shared-weight training and ``controller_steps`` REINFORCE updates per round, exactly
  what ``ask`` runs), i.e. everything ENAS spends before it can score a child;
* **supernet scoring** ``t_eval`` per child — what ``ask`` ranks by: one child's
  accuracy with the shared weights on the strategy's ranking set (``rank_examples``
  validation images, default 64; ``--opt rank_examples=0`` for the whole split;
  BatchNorm on batch statistics), plus its fast latency estimate;
* **standalone proxy** ``t_proxy`` per child — ``ProxyAccuracy()`` at its defaults
  (digits 32×32, width 0.5, 2 epochs, BN recalibration, validation), the cost every
  other strategy pays per child. It trains on the supernet's task: ``--opt data=…``
  (and ``val_fraction``, ``data_seed``: the validation split) go to the proxy too.

ENAS children per CPU-minute are reported two ways: *amortised* = ``N / (T_train + N ·
t_eval)`` over the ``N`` children this run scored on the supernet (the ``--children``
compared with the proxy plus ``--extra`` more), and *marginal* = ``1 / t_eval`` (the
limit for large ``N``). The proxy's rate is ``1 / t_proxy``. The script also prints the
``N`` at which the amortised ratio would reach 100× (none if ``t_eval`` alone is too
slow).

Measured (this 2-core host, defaults, ``mnasnet``, seed 0): supernet trained in 149
CPU-s (1,100 shared + 100 controller steps), scoring 23 CPU-ms per child on 64 images,
proxy 3.5 CPU-s per child → marginal 152× the proxy's rate, amortised over 120 children
2.8× (100× amortised at ≈ 12,450 children per supernet). Fidelity is not there:
supernet accuracies 0.03–0.20 (chance 0.10), Spearman 0.27 (p = 0.26) over 20
children. The same 40 children (this script's first 40, 16 single-thread processes on
the lent machine's CPUs): uniform supernets trained 1,100 / 2,200 steps in eight
variants score 0.10–0.17 on average, Spearman within ±0.33 of 0 against both the
2-epoch proxy and an 8-epoch standalone training (``--proxy-epochs 8``; 8-epoch
accuracies 0.74–0.99, Spearman with the 2-epoch proxy 0.73) — see
``search.strategies.enas``. ``--space nasnet`` (ENAS's own micro cells), defaults, seeds
0 / 1: 1,122 / 1,091 CPU-s of supernet training over 3,417 shared modules, training loss
2.32 / 2.43 (chance 2.30), supernet accuracies 0.06–0.20, Spearman 0.18 (p = 0.46) /
0.35 (p = 0.13) over 20 children; 259 / 219 CPU-ms a child against the proxy's 35–36
CPU-s: 135× / 164× marginal, 3.6× / 3.8× amortised over 120 children.

``--space nb201`` (NAS-Bench-201's one-shot supernet), defaults: supernet trained in
346 / 326 CPU-s, scoring 83 / 76 CPU-ms a child, proxy 11.2 / 10.0 CPU-s → **134× /
132× marginal**, 3.8× / 3.6× amortised over 120 children; **Spearman 0.73 (p = 3e-4)
over 20 children** (seed 0) and **0.83 (p = 2e-8) over 30** (``--seed 1 --children 30
--extra 90``); supernet accuracies 0.06–0.75, proxy 0.10–0.96. There the shared weights
rank children; on ``mnasnet`` and ``nasnet`` they do not (above).

Children are drawn uniformly from the space (seeded), so the correlation covers the
space rather than what the controller prefers. Run::

    .venv/bin/python benchmarks/enas_speed.py                      # mnasnet, 20 children
    .venv/bin/python benchmarks/enas_speed.py --rounds 40 --opt shared_steps=50
    .venv/bin/python benchmarks/enas_speed.py --proxy-epochs 8     # + an 8-epoch reference
    .venv/bin/python benchmarks/enas_speed.py --proxy-retest       # + the proxy's seed-to-seed Spearman
    # fidelity vs steps, reusing an earlier run's proxy accuracies, on a GPU:
    .venv/bin/python benchmarks/enas_speed.py --children 40 --extra 0 --rounds 100000 \
        --curve 20 --max-minutes 5 --proxy-from runs/bench-enas/children.csv \
        --opt torch_device=cuda --out runs/bench-enas-gpu

Wall-clock seconds are reported next to CPU seconds (on a GPU the CPU time is the
launching). What the GPU runs showed is in ``docs/strategies.md``.

Writes ``children.csv`` and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    return time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="mnasnet", choices=("mnasnet", "nasnet", "nb201"))
    ap.add_argument("--children", type=int, default=20,
                    help="children scored both on the supernet and standalone (>= 20)")
    ap.add_argument("--extra", type=int, default=100,
                    help="further children scored on the supernet only (throughput)")
    ap.add_argument("--rounds", type=int, default=20,
                    help="inner-loop rounds (each = the strategy's shared + controller steps)")
    ap.add_argument("--proxy-epochs", type=int, default=0,
                    help="also train each compared child standalone this many epochs and "
                         "report the Spearman against that too (0 = only the 2-epoch proxy)")
    ap.add_argument("--proxy-from", default="", metavar="CSV",
                    help="reuse the proxy accuracies of children with the same arch string "
                         "from an earlier run's children.csv trained on the same data (the "
                         "rest are trained)")
    ap.add_argument("--curve", type=int, default=0, metavar="K",
                    help="every K rounds, score the compared children on the supernet and "
                         "print their Spearman against the proxy (fidelity vs steps)")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop supernet training after this many wall-clock minutes "
                         "(0 = run every round)")
    ap.add_argument("--proxy-retest", action="store_true",
                    help="train the compared children again with another proxy seed and "
                         "report the two proxies' Spearman: the yardstick for the supernet's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="enas option, repeatable (e.g. shared_steps=50 lr=0.1)")
    ap.add_argument("--space-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="space option, repeatable (e.g. ops=mbconv3,mbconv6 skips=identity)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-enas"))
    args = ap.parse_args()
    if args.children < 3 or args.extra < 0 or args.rounds < 0 or args.proxy_epochs < 0:
        ap.error("need --children >= 3, --extra >= 0, --rounds >= 0, --proxy-epochs >= 0")
    if args.curve < 0 or args.max_minutes < 0:
        ap.error("need --curve >= 0 and --max-minutes >= 0")
    known: dict[str, dict[str, str]] = {}
    if args.proxy_from:
        try:
            with open(args.proxy_from, newline="") as f:
                known = {r["arch"]: r for r in csv.DictReader(f) if r.get("proxy_accuracy")}
        except (OSError, KeyError, csv.Error) as e:
            ap.error(f"--proxy-from {args.proxy_from}: cannot read an arch/proxy_accuracy "
                     f"CSV ({e})")

    import torch
    from scipy.stats import kendalltau, spearmanr

    torch.set_num_threads(1)
    from mnas.cli.options import parse_kv, typed_options
    from mnas.evaluators.proxy import ProxyAccuracy
    from mnas.spaces import SPACES, get_space
    from search.base import strategy_factory
    from search.strategies.enas import Enas

    try:
        space = get_space(args.space, **typed_options(
            SPACES[args.space], parse_kv(args.space_opt, "space"), "space", skip=("self",)))
    except ValueError as e:
        ap.error(f"--space-opt: {e}")
    try:
        opts = typed_options(strategy_factory("enas"), parse_kv(args.opt, "enas"), "enas")
    except ValueError as e:
        ap.error(f"--opt: {e}")
    import mnas.train.data  # noqa: F401  (import cost is not ENAS's)

    # -- children: uniform over the space; the standalone proxy first (curve needs it) --
    rng = random.Random(args.seed + 1)
    archs = [space.sample(rng) for _ in range(args.children + args.extra)]
    rows: list[dict[str, Any]] = [{"arch": a.encode()} for a in archs]
    # the yardstick trains on the supernet's task and split (its own resolution and width)
    task = {"data": opts.get("data", "digits"), "val_fraction": opts.get("val_fraction", 0.2)}
    split_seed = opts.get("data_seed", 0)        # the proxy's seed also draws its split
    proxy = ProxyAccuracy(seed=split_seed, **task)
    for i, row in enumerate(rows[: args.children]):
        row["proxy_data"] = task["data"]
        old = known.get(row["arch"])
        if old is not None and (old.get("proxy_data") or "digits") == task["data"]:
            row["proxy_accuracy"] = float(old["proxy_accuracy"])
            row["proxy_cpu_s"] = float(old.get("proxy_cpu_s") or "nan")
            continue
        c = _cpu()
        row["proxy_accuracy"] = proxy(space, archs[i])
        row["proxy_cpu_s"] = _cpu() - c
        print(f"  child {i + 1}/{args.children}: proxy {row['proxy_accuracy']:.3f} "
              f"({row['proxy_cpu_s']:.1f} CPU-s)", flush=True)
    prx = [r["proxy_accuracy"] for r in rows[: args.children]]
    curve: list[dict[str, float]] = []

    # -- supernet training ------------------------------------------------------------
    c0, w0 = _cpu(), time.perf_counter()
    st = Enas(space, seed=args.seed, **opts)
    o = st.options
    print(f"enas on {args.space}: {o['shared_steps']} shared + {o['controller_steps']} "
          f"controller steps per round, {args.rounds} rounds (+{o['warmup_steps']} warm-up "
          f"steps); batch {o['batch_size']}, {o['resolution']}px, width {o['width_mult']}",
          flush=True)
    st.train(o["warmup_steps"], 0)
    rounds_done = 0
    for r in range(args.rounds):
        if args.max_minutes and time.perf_counter() - w0 > 60 * args.max_minutes:
            print(f"  stopped after {r} rounds: --max-minutes {args.max_minutes}", flush=True)
            break
        st.train(o["shared_steps"], o["controller_steps"])
        rounds_done = r + 1
        if args.curve and (r + 1) % args.curve == 0:
            sup_now = [st.score(a)[0] for a in archs[: args.children]]
            rho_now = float(spearmanr(sup_now, prx)[0])
            k = max(1, o["shared_steps"])
            curve.append({"round": r + 1, "shared_steps": st.shared_steps_done,
                          "train_loss": sum(st.losses[-k:]) / k, "spearman": rho_now,
                          "mean_supernet_accuracy": sum(sup_now) / len(sup_now),
                          "wall_s": time.perf_counter() - w0})
            print(f"  curve: {st.shared_steps_done} shared steps, loss "
                  f"{curve[-1]['train_loss']:.3f}, mean supernet accuracy "
                  f"{curve[-1]['mean_supernet_accuracy']:.3f}, Spearman {rho_now:.3f} "
                  f"({curve[-1]['wall_s']:.0f} wall-s)", flush=True)
        if (r + 1) % max(1, args.rounds // 5) == 0:
            k = max(1, o["shared_steps"])
            print(f"  round {r + 1}: train loss {sum(st.losses[-k:]) / k:.3f}, "
                  f"controller reward {st.rewards[-1] if st.rewards else float('nan'):.4f}, "
                  f"{len(st.supernet.shared)} shared modules, "
                  f"{_cpu() - c0:.0f} CPU-s", flush=True)
    t_train, t_train_wall = _cpu() - c0, time.perf_counter() - w0

    # -- supernet scoring ----------------------------------------------------------------
    eval_times = []
    w1 = time.perf_counter()
    for a, row in zip(archs, rows, strict=True):
        c = _cpu()
        acc, lat, _ = st.score(a)
        eval_times.append(_cpu() - c)
        row.update({"supernet_accuracy": acc, "latency_estimate_ms": lat,
                    "supernet_cpu_s": eval_times[-1]})
    t_eval_wall = (time.perf_counter() - w1) / len(archs)
    t_eval_total = sum(eval_times)
    t_eval = t_eval_total / len(archs)
    print(f"supernet: trained in {t_train:.1f} CPU-s ({st.shared_steps_done} shared, "
          f"{st.controller_steps_done} controller steps); scored {len(archs)} children on "
          f"{len(st.rank_y)} validation images in {t_eval * 1000:.0f} CPU-ms each (wall: "
          f"{t_train_wall:.1f} s, {t_eval_wall * 1000:.0f} ms; device {st.device})", flush=True)

    timed = [r["proxy_cpu_s"] for r in rows[: args.children] if not math.isnan(r["proxy_cpu_s"])]
    t_proxy = sum(timed) / len(timed) if timed else float("nan")
    if args.proxy_epochs:       # what the short proxy is a proxy for
        longer = ProxyAccuracy(epochs=args.proxy_epochs, seed=split_seed, **task)
        for i, row in enumerate(rows[: args.children]):
            row["long_accuracy"] = longer(space, space.decode(row["arch"]))
            print(f"  child {i + 1}/{args.children}: {args.proxy_epochs}-epoch standalone "
                  f"{row['long_accuracy']:.3f}", flush=True)

    if args.proxy_retest:       # the proxy's own seed-to-seed agreement
        again = ProxyAccuracy(seed=split_seed + 1, **task)
        for i, row in enumerate(rows[: args.children]):
            row["proxy_accuracy_seed1"] = again(space, space.decode(row["arch"]))
            print(f"  child {i + 1}/{args.children}: proxy, seed 1 "
                  f"{row['proxy_accuracy_seed1']:.3f}", flush=True)

    sup = [r["supernet_accuracy"] for r in rows[: args.children]]
    rho, p_rho = spearmanr(sup, prx)
    tau, _ = kendalltau(sup, prx)
    longer_stats: dict[str, Any] = {}
    retest: dict[str, float] = {}
    if args.proxy_epochs:
        lng = [r["long_accuracy"] for r in rows[: args.children]]
        r_l, p_l = spearmanr(sup, lng)
        r_pl, p_pl = spearmanr(prx, lng)
        longer_stats = {"proxy_epochs": args.proxy_epochs, "spearman_long": float(r_l),
                        "spearman_long_p": float(p_l), "spearman_proxy_long": float(r_pl),
                        "spearman_proxy_long_p": float(p_pl),
                        "long_accuracy_range": [min(lng), max(lng)]}
    if args.proxy_retest:
        rt = [r["proxy_accuracy_seed1"] for r in rows[: args.children]]
        r_rt, p_rt = spearmanr(prx, rt)
        r_srt, _ = spearmanr(sup, rt)
        retest = {"spearman_proxy_retest": float(r_rt), "spearman_proxy_retest_p": float(p_rt),
                  "spearman_supernet_proxy_seed1": float(r_srt)}
    n = len(archs)
    amortised = 60.0 * n / (t_train + t_eval_total)
    marginal = 60.0 / t_eval
    proxy_rate = 60.0 / t_proxy
    goal = t_proxy / 100.0
    n_goal = t_train / (goal - t_eval) if goal > t_eval else None
    summary = {
        "space": args.space, "space_options": list(args.space_opt), "seed": args.seed,
        "options": st.config(),
        "rounds": args.rounds, "children_compared": args.children, "children_scored": n,
        "validation_images": len(st.rank_y),
        "rounds_done": rounds_done, "shared_steps": st.shared_steps_done,
        "supernet_train_cpu_s": t_train, "supernet_eval_cpu_s_per_child": t_eval,
        "supernet_train_wall_s": t_train_wall, "supernet_eval_wall_s_per_child": t_eval_wall,
        "curve": curve,
        "proxy_cpu_s_per_child": t_proxy,
        "enas_children_per_cpu_min_amortised": amortised,
        "enas_children_per_cpu_min_marginal": marginal,
        "proxy_children_per_cpu_min": proxy_rate,
        "ratio_amortised": amortised / proxy_rate, "ratio_marginal": marginal / proxy_rate,
        "children_for_100x": n_goal,
        "spearman": float(rho), "spearman_p": float(p_rho), "kendall_tau": float(tau),
        "supernet_accuracy_range": [min(sup), max(sup)],
        "proxy_accuracy_range": [min(prx), max(prx)],
        "shared_modules": len(st.supernet.shared),
        "shared_parameters": sum(p.numel() for p in st.supernet.parameters()),
        "final_train_loss": (sum(st.losses[-20:]) / max(1, len(st.losses[-20:]))
                             if st.losses else None),
        "controller_reward_first_last": [st.rewards[0], st.rewards[-1]] if st.rewards else None,
        **longer_stats, **retest,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "children.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["arch", "supernet_accuracy", "proxy_accuracy",
                                          "latency_estimate_ms", "supernet_cpu_s",
                                          "proxy_cpu_s", "long_accuracy",
                                          "proxy_accuracy_seed1", "proxy_data"])
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    print(f"\nchildren per CPU-minute (one thread): proxy {proxy_rate:.1f}; ENAS marginal "
          f"{marginal:.0f} ({marginal / proxy_rate:.1f}x), amortised over {n} children "
          f"{amortised:.1f} ({amortised / proxy_rate:.1f}x); goal 100x")
    print("  100x amortised would need " + (f"{n_goal:.0f} children scored per supernet"
                                             if n_goal else "t_eval < t_proxy/100: unreachable"))
    print(f"Spearman(supernet, proxy) over {args.children} children: {rho:.3f} "
          f"(p = {p_rho:.3f}), Kendall tau {tau:.3f}; supernet accuracy "
          f"{min(sup):.3f}..{max(sup):.3f}, proxy {min(prx):.3f}..{max(prx):.3f}")
    if longer_stats:
        print(f"Spearman(supernet, {args.proxy_epochs}-epoch standalone): "
              f"{longer_stats['spearman_long']:.3f} (p = {longer_stats['spearman_long_p']:.3f}); "
              f"Spearman(2-epoch proxy, {args.proxy_epochs}-epoch): "
              f"{longer_stats['spearman_proxy_long']:.3f} "
              f"(p = {longer_stats['spearman_proxy_long_p']:.3f})")
    if args.proxy_retest:
        print(f"Spearman(proxy seed 0, proxy seed 1): {retest['spearman_proxy_retest']:.3f} "
              f"(p = {retest['spearman_proxy_retest_p']:.3f}), the proxy's own agreement; "
              f"Spearman(supernet, proxy seed 1): {retest['spearman_supernet_proxy_seed1']:.3f}")
    print(f"wrote {out / 'summary.json'} and {out / 'children.csv'}")


if __name__ == "__main__":
    main()

"""How honest is the ``mnas bench compare`` gate on this machine?

1. Measures one model many times for real: ``--sessions`` separate "bench runs" (each
   ``--rounds`` rounds of ``--runs`` timed inferences, as ``mnas bench run`` does), with
   ``--gap`` seconds between sessions so slow drift shows up too.
2. Prints the noise model those measurements give: spread within a round, between the
   rounds of one run, and between runs.
3. Simulates comparisons with the gate's own code (``BenchRecord.merge`` = ``baseline
   update``, ``compare_records`` = ``compare``):
   * *real pairs*: a baseline merged from K real sessions against another real session —
     identical code, so any ``regression`` is a false positive — and the same session with
     every sample slowed by ``--slowdown`` (default 10%), which must be detected;
   * *simulated*: fresh sessions built from the measured noise (a real session's
     offset, real round offsets, real within-round residuals, all resampled), for many
     more independent comparisons than the real sessions allow.
   Also shows the strict rule ("regression only when the whole interval is above
   1 + tolerance") on the same intervals, for contrast (see latency/regression.py).

Goals (issue 6): false-positive rate <= 1%, detection of a 10% slowdown >= 95%.

    .venv/bin/python benchmarks/bench_gate.py            # 16 runs of a small conv net
    .venv/bin/python benchmarks/bench_gate.py --arch mobilenetv2 --baseline-runs 5 10
    .venv/bin/python benchmarks/bench_gate.py --clock wall --no-reference   # plain suite

The defaults are the configuration the example suite recommends (docs/ci.md): the
measuring thread's CPU time and a pinned reference model (a copy of the model) timed
alternately with it, inference by inference (``--no-paired``: in its own block of each
round, as on a phone).
    .venv/bin/python benchmarks/bench_gate.py --save noise.json ; ... --load noise.json

Measuring takes about a minute for the small model; the simulation runs the gate's own
bootstrap for every comparison (2-10 minutes on a loaded 2-core host).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.bench_results import BenchRecord  # noqa: E402
from latency.measurement import CLOCKS, Measurement  # noqa: E402
from latency.regression import compare_records, normalize  # noqa: E402
from latency.suite import BENCH_SETTINGS, DEFAULT_ROUNDS  # noqa: E402


# ------------------------------------------------------------------ measuring
def make_model(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    import torch

    from latency.export import export_onnx

    torch.manual_seed(0)
    if args.model:
        return Path(args.model), Path(args.model).name
    if args.arch:
        from mnas.spaces import get_space

        space = get_space(args.space)
        r = space.deploy_resolution
        model = space.build(space.parse(args.arch))
        return export_onnx(model, work / "arch.onnx", (1, 3, r, r)), f"{args.space}:{args.arch}"
    return export_onnx(conv_net(), work / "cnn.onnx", (1, 3, 64, 64)), "conv net 32ch @ 64x64"


def conv_net(w: int = 32):
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(w, 10))


def measure_sessions(args: argparse.Namespace) -> dict:
    from devices import get_device
    from devices.base import can_pair

    dev = get_device(args.device)
    # the suite's defaults (adaptive: a noisy round gets up to max_runs samples)
    settings = replace(BENCH_SETTINGS, warmup=args.warmup, runs=args.runs,
                       max_runs=max(args.runs, args.max_runs), clock=args.clock)
    paired = args.reference and args.paired and can_pair(dev)
    with tempfile.TemporaryDirectory() as tmp:
        path, label = make_model(args, Path(tmp))
        ref = None
        if args.reference:   # a pinned copy of the model, as the example suite's reference
            ref = Path(tmp) / f"reference{path.suffix}"
            shutil.copyfile(path, ref)
        sessions, ref_sessions = [], []
        for s in range(args.sessions):
            rounds, ref_rounds = [], []
            for _ in range(args.rounds):
                if paired:   # timed alternately with the model, as `mnas bench run` does
                    m, pm = dev.measure_paired(path, ref, settings)
                    rounds.append(m)
                    ref_rounds.append(list(pm.samples_ms))
                    continue
                rounds.append(dev.measure(path, settings))
                if ref is not None:
                    ref_rounds.append(list(dev.measure(ref, settings).samples_ms))
            sessions.append([list(m.samples_ms) for m in rounds])
            ref_sessions.append(ref_rounds)
            meds = [float(np.median(r)) for r in sessions[-1]]
            print(f"  session {s + 1:2d}/{args.sessions}: round medians "
                  + " ".join(f"{v:.4f}" for v in meds) + " ms", flush=True)
            if s + 1 < args.sessions:
                time.sleep(args.gap)
    return {"model": label, "device": args.device, "clock": args.clock, "runs": args.runs,
            "rounds": args.rounds, "gap_s": args.gap, "sessions": sessions,
            "ref_sessions": ref_sessions if ref is not None else None, "paired": paired,
            "fingerprint": dev.fingerprint()}


# ------------------------------------------------------------------ noise model
def noise_model(sessions: list[list[list[float]]]) -> dict:
    logm = np.array([[np.log(np.median(r)) for r in s] for s in sessions])  # (S, R)
    sess = logm.mean(axis=1)
    r = logm.shape[1]
    within_round = logm - sess[:, None]
    sd_round = float(np.sqrt((within_round ** 2).sum() / (logm.shape[0] * (r - 1)))) if r > 1 \
        else 0.0
    # between-session SD of a session mean, minus the part that round noise explains
    sd_session = float(np.sqrt(max(np.var(sess, ddof=1) - sd_round ** 2 / r, 0.0)))
    resid = np.concatenate([np.asarray(x) / np.median(x) for s in sessions for x in s])
    rel_ci = float(np.median([_rel_ci(x) for s in sessions for x in s]))
    mad = float(1.4826 * np.median(np.abs(sess - np.median(sess))))
    return {"median_ms": float(np.exp(np.median(sess))), "sd_session": sd_session,
            "sd_round": sd_round, "residuals": resid, "rel_ci_round": rel_ci,
            "mad_session": mad, "session_offsets": sess - sess.mean(),
            "round_offsets": within_round.ravel() * np.sqrt(r / max(r - 1, 1)),
            "session_medians": [float(np.exp(v)) for v in sess],
            "round_sizes": [len(x) for s in sessions for x in s]}


def _rel_ci(x: list[float]) -> float:
    from latency.measurement import median_ci

    lo, hi = median_ci(np.asarray(x))
    return (hi - lo) / 2 / float(np.median(x))


def synth_session(nm: dict, rounds: int, rng: np.random.Generator,
                  noise: float = 1.0) -> list[np.ndarray]:
    """One simulated bench run, every component resampled from the real ones (so heavy
    tails stay): a real run's offset, real round offsets, real within-round residuals,
    real round sizes (the adaptive protocol varies them). ``noise`` scales the logs."""
    off = np.exp(noise * rng.choice(nm["session_offsets"]))
    return [nm["median_ms"] * off * np.exp(noise * rng.choice(nm["round_offsets"]))
            * rng.choice(nm["residuals"], rng.choice(nm["round_sizes"])) ** noise
            for _ in range(rounds)]


# ------------------------------------------------------------------ the gate's code
def record(rounds: list, scale: float = 1.0, paired: list | None = None) -> BenchRecord:
    def meas(x: list | np.ndarray) -> Measurement:
        return Measurement.from_samples(x, warmup=0, threads=1, runtime="onnxruntime",
                                        runtime_version="-", model_sha256="0" * 64,
                                        device="local:onnxruntime")

    return BenchRecord.from_rounds("m", {"tolerance": 0.05},
                                   [meas(np.asarray(r) * scale) for r in rounds], 0.02,
                                   None if paired is None else [meas(r) for r in paired])


def strict(lo: float, hi: float, tol: float) -> str:
    """The rule the gate does not use: regression only if the whole CI is above 1+tol."""
    return "regression" if lo > 1 + tol else "inconclusive" if hi > 1 + tol else "ok"


def verdicts(pairs: list[tuple], tol: float, slowdown: float, paired: bool = False) -> dict:
    """pairs: (baseline sessions, current session[, baseline reference sessions, current
    reference session]). Verdict counts, gate and strict rule; with reference sessions
    the comparison is relative to the reference, as for a suite entry with `reference`
    (``paired``: the reference samples were timed alternately with the model's)."""
    out = {k: {"regression": 0, "inconclusive": 0, "ok": 0, "improvement": 0}
           for k in ("same", "slow", "strict_same", "strict_slow")}
    for pair in pairs:
        base_sessions, cur = pair[0], pair[1]
        refs = len(pair) == 4
        if refs and paired:
            base = normalize(BenchRecord.merge([record(s, paired=r) for s, r in
                                                zip(base_sessions, pair[2], strict=True)]), None)
        else:
            base = BenchRecord.merge([record(s) for s in base_sessions])
            if refs:
                base = normalize(base, BenchRecord.merge([record(s) for s in pair[2]]))
        for key, scale in (("same", 1.0), ("slow", 1.0 + slowdown)):
            # the slowdown is the model's; the reference is unchanged
            if refs and paired:
                now = normalize(record(cur, scale, paired=pair[3]), None)
            else:
                now = record(cur, scale)
                if refs:
                    now = normalize(now, record(pair[3]))
            c = compare_records("m", base, now, tol)
            out[key][c.verdict] += 1
            out[f"strict_{key}"][strict(c.ci_low, c.ci_high, tol)] += 1
    return out


def real_pairs(sessions: list, k: int, n: int, rng: np.random.Generator,
               ref_sessions: list | None = None) -> list:
    s = len(sessions)
    if s < k + 1:
        return []
    pairs: list[tuple] = []
    for _ in range(n):
        idx = rng.choice(s, k + 1, replace=False)
        pair: tuple = ([sessions[i] for i in idx[:k]], sessions[idx[k]])
        if ref_sessions is not None:
            pair += ([ref_sessions[i] for i in idx[:k]], ref_sessions[idx[k]])
        pairs.append(pair)
    return pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="local:onnxruntime")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--model", help="an ONNX file (default: a small conv net)")
    g.add_argument("--arch", help="an arch of --space, e.g. mobilenetv2 (deploy size)")
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--sessions", type=int, default=16, help="real bench runs to take")
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds per run")
    ap.add_argument("--runs", type=int, default=BENCH_SETTINGS.runs,
                    help="minimum timed runs per round (suite default)")
    ap.add_argument("--max-runs", type=int, default=BENCH_SETTINGS.max_runs,
                    help="cap of the adaptive protocol per round (suite default)")
    ap.add_argument("--warmup", type=int, default=BENCH_SETTINGS.warmup)
    ap.add_argument("--clock", choices=CLOCKS, default=None,
                    help="timing clock of the measurements (a suite's `clock`): wall, or cpu "
                         "= the measuring thread's CPU time (local devices, threads=1; the "
                         "default there; wall elsewhere)")
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between sessions")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--slowdown", type=float, default=0.10)
    ap.add_argument("--baseline-runs", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--comparisons", type=int, default=120, help="per scenario, real pairs")
    ap.add_argument("--simulated", type=int, default=120, help="per scenario, simulated")
    ap.add_argument("--quieter", type=float, nargs="*", default=[0.5],
                    help="also simulate the noise scaled by these factors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure a pinned copy of the model in every round and show "
                         "the gate on ratios relative to it (a suite entry's `reference`; "
                         "default on)")
    ap.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                    help="time the reference alternately with the model, inference by "
                         "inference, where the device can (local; `mnas bench run` does); "
                         "--no-paired measures it in its own block of each round")
    ap.add_argument("--save", help="write the raw measurements to this JSON")
    ap.add_argument("--load", help="reuse raw measurements from --save instead of measuring")
    args = ap.parse_args()
    if args.clock is None:
        args.clock = "cpu" if args.device.startswith("local:") else "wall"

    if args.load:
        data = json.loads(Path(args.load).read_text())
        print(f"bench_gate: loaded {len(data['sessions'])} sessions from {args.load}")
    else:
        print(f"bench_gate: measuring {args.sessions} sessions x {args.rounds} rounds x "
              f"{args.runs}-{max(args.runs, args.max_runs)} runs on {args.device}, "
              f"{args.clock} clock (gap {args.gap:g} s)", flush=True)
        data = measure_sessions(args)
        if args.save:
            Path(args.save).write_text(json.dumps(data))
    sessions = data["sessions"]
    nm = noise_model(sessions)
    print(f"model: {data['model']}; median {nm['median_ms']:.4f} ms "
          f"({data.get('clock', 'wall')} clock)")
    print(f"noise (log SD): between runs {nm['sd_session']:.2%} (robust, from the MAD: "
          f"{nm['mad_session']:.2%}), between rounds of a run "
          f"{nm['sd_round']:.2%}; median's 95% CI within a round ±{nm['rel_ci_round']:.2%} "
          f"({np.mean(nm['round_sizes']):.0f} samples per round on average)")
    print("session medians (ms): " + " ".join(f"{v:.4f}" for v in nm["session_medians"]))

    rng = np.random.default_rng(args.seed)
    rounds = len(sessions[0])
    rows = []
    refs = data.get("ref_sessions")
    paired = bool(data.get("paired"))
    if refs:
        if paired:
            rel = np.log([np.median(record(s, paired=r).relative_samples())
                          for s, r in zip(sessions, refs, strict=True)])
        else:
            ref_meds = [float(np.median([v for r in s for v in r])) for s in refs]
            rel = np.log(nm["session_medians"]) - np.log(ref_meds)
        how = "timed alternately" if paired else "measured in the same rounds"
        print(f"relative to the reference ({how}): between runs {np.std(rel, ddof=1):.2%} "
              "(log SD)")
    for k in args.baseline_runs:
        pr = real_pairs(sessions, k, args.comparisons, rng)
        if pr:
            rows.append(("real pairs", k, len(pr), verdicts(pr, args.tolerance, args.slowdown)))
        if refs:
            pr = real_pairs(sessions, k, args.comparisons, rng, refs)
            if pr:
                rows.append(("vs ref", k, len(pr),
                             verdicts(pr, args.tolerance, args.slowdown, paired)))
        for f in [1.0, *args.quieter]:
            sim = [([synth_session(nm, rounds, rng, f) for _ in range(k)],
                    synth_session(nm, rounds, rng, f)) for _ in range(args.simulated)]
            src = "simulated" if f == 1.0 else f"sim x{f:g}"
            rows.append((src, k, len(sim), verdicts(sim, args.tolerance, args.slowdown)))

    print(f"\ngate: ratio of medians, 95% CI = two-level bootstrap U run-level t interval, "
          f"tolerance {args.tolerance:.0%}; slowdown injected: {args.slowdown:.0%}")
    hdr = (f"{'source':11} {'base runs':>9} {'n':>4} | {'FP rate':>7} {'inconcl.':>8} "
           f"{'CI fails*':>9} | {'detected':>8} {'inconcl.':>8} | strict: {'FP':>5} {'det.':>6}")
    print(hdr)
    print("-" * len(hdr))
    for src, k, n, v in rows:
        fp = v["same"]["regression"] / n
        inc = v["same"]["inconclusive"] / n
        det = v["slow"]["regression"] / n
        dinc = v["slow"]["inconclusive"] / n
        sfp, sdet = v["strict_same"]["regression"] / n, v["strict_slow"]["regression"] / n
        print(f"{src:11} {k:9d} {n:4d} | {fp:7.1%} {inc:8.1%} {fp + inc:9.1%} | {det:8.1%} "
              f"{dinc:8.1%} | strict: {sfp:5.1%} {sdet:6.1%}")
    print("* identical runs that fail CI under the default --inconclusive fail (exit 2 or 1)")
    if args.quieter:
        print("sim xF: the fitted noise model with every component scaled by F (a quieter "
              "runner than this one) - an extrapolation, not a measurement")
    best = [r for r in rows if r[0] == ("vs ref" if refs else "real pairs")] or rows
    src, k, n, v = max(best, key=lambda r: r[1])
    fp, det = v["same"]["regression"] / n, v["slow"]["regression"] / n
    print(f"\nfalse-positive rate {fp:.1%} (goal <= 1%: {'met' if fp <= 0.01 else 'NOT met'}), "
          f"detection of a {args.slowdown:.0%} slowdown {det:.1%} (goal >= 95%: "
          f"{'met' if det >= 0.95 else 'NOT met'}) — {src}, baseline from {k} runs, n={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

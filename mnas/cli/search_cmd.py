"""``mnas search``: the MnasNet loop end to end, in a resumable run folder."""

from __future__ import annotations

import argparse
import math
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from mnas import run as runmod
from mnas.cli import check_stop
from mnas.cli.options import parse_kv, plural, typed_options
from mnas.cli.search_device import (
    device_of,
    elsewhere,
    farm_spec,
    move_device,
    record_fingerprint,
)

DEFAULT_BUDGET = 12


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search architectures (MnasNet reward, measured latency)",
                       description="Sample children, train them briefly, measure their "
                       "latency, reward ACC×(LAT/T)^w, learn, and export the Pareto front.")
    g = p.add_argument_group("what to search")
    g.add_argument("--space", default=None, help="search space (default mnasnet)")
    g.add_argument("--space-opt", action="append", metavar="KEY=VALUE",
                   help="space option, repeatable (e.g. strides=search for nasrl)")
    g.add_argument("--strategy", default=None, help="strategy (default ppo)")
    g.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="strategy option, repeatable (e.g. --opt lr=0.001 --opt batch=10)")
    g.add_argument("--budget", type=int, default=None,
                   help=f"children to score (default {DEFAULT_BUDGET})")
    g.add_argument("--batch", type=int, default=None, help="children asked at once (default 1)")
    g.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    r = p.add_argument_group("reward")
    r.add_argument("--target-ms", default=None,
                   help="latency target T in ms, or 'auto' = the MobileNetV2 point measured "
                        "on the device (default auto)")
    r.add_argument("--targets", default=None,
                   help="several targets, comma-separated (children spread across them)")
    r.add_argument("--alpha", type=float, default=None, help="exponent when LAT <= T (-0.07)")
    r.add_argument("--beta", type=float, default=None, help="exponent when LAT > T (-0.07)")
    r.add_argument("--hard", action="store_true", help="hard constraint: alpha=0, beta=-1")
    r.add_argument("--reward-transform", default=None, choices=["identity", "cube"],
                   help="applied to accuracy first (NAS-RL cubes it)")
    a = p.add_argument_group("accuracy (proxy training)")
    a.add_argument("--accuracy", default=None,
                   help="accuracy evaluator: proxy (default) or table:PATH#COLUMN")
    a.add_argument("--data", default=None,
                   help="dataset: digits (default), imagefolder:PATH, cifar10:PATH, "
                        "cifar100:PATH, module:pkg.mod:Class")
    a.add_argument("--epochs", type=int, default=None,
                   help="proxy training epochs per child (default 2)")
    a.add_argument("--batch-limit", type=int, default=None, help="train batches per epoch")
    a.add_argument("--width-mult", type=float, default=None, help="proxy width multiplier")
    a.add_argument("--resolution", type=int, default=None, help="proxy input resolution")
    a.add_argument("--torch-device", default=None, metavar="DEV",
                   help="where the proxy trains children: cpu (default), cuda or cuda:N; "
                        "may change on --resume")
    a.add_argument("--workers", type=int, default=None, metavar="N",
                   help="train N children at once as Ray tasks (the ray extra); --batch "
                        "defaults to N; latency is still measured one child at a time; "
                        "may change on --resume")
    a.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="train children on this Ray cluster ('auto': the one this machine "
                        "joined) instead of a local one; may change on --resume")
    m = p.add_argument_group("latency")
    m.add_argument("--device", default=None,
                   help="device spec (default local:onnxruntime; a farm's "
                        "http(s)://HOST:PORT/NAME); on --resume only the same device "
                        "reached another way (the same fingerprint)")
    m.add_argument("--latency", default=None,
                   help="latency estimator: measured (default), measured:anchored (each child "
                        "timed alternately with the space's reference network and scaled "
                        "to its nominal latency: steadier on a shared host; local "
                        "devices), table:PATH#COLUMN, lut:PATH")
    m.add_argument("--threads", type=int, default=None, help="inference threads (default 1)")
    m.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 5)")
    m.add_argument("--runs", type=int, default=None, help="minimum timed runs (default 20)")
    m.add_argument("--max-runs", type=int, default=None, help="cap for adaptive repeats (100)")
    m.add_argument("--clock", default=None, choices=["wall", "cpu"],
                   help="timing clock: wall (default) or cpu (the measuring thread's CPU "
                        "time; robust on a shared host, needs --threads 1)")
    o = p.add_argument_group("run folder")
    o.add_argument("--out", default=None, help="run folder (default runs/<space>-<time>)")
    o.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: SQLite study.db in the run folder)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out")
    o.add_argument("--force", action="store_true", help="start over in a used --out")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--no-export", action="store_true", help="do not export front models")
    p.set_defaults(func=run)


#: exit status of a search stopped because its device could not be reached (resumable)
EXIT_STOPPED = 3


def _pick(v: Any, default: Any) -> Any:
    return default if v is None else v


#: the proxy's training flags: an accuracy that trains no child would ignore them
_PROXY_FLAGS = ("data", "epochs", "batch_limit", "width_mult", "resolution", "torch_device",
                "workers", "ray_address")
#: the timing flags: a latency that measures no child would ignore them
_MEASURE_FLAGS = ("threads", "warmup", "runs", "max_runs", "clock")


def _flags(keys: list[str]) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in keys)


def _them(items: list[str]) -> str:
    return "them" if len(items) > 1 else "it"


def _refuse_unused_proxy_flags(accuracy: str, given: list[str]) -> None:
    if given and accuracy.partition(":")[0] != "proxy":
        flags = _flags(given)
        hint = ("; a strategy's own training has its own option, e.g. --opt "
                "torch_device=cuda for enas's supernet" if "torch_device" in given else "")
        raise ValueError(f"--accuracy {accuracy} trains no child, so {flags} (the proxy's "
                         f"training) would be ignored: drop {_them(given)}{hint}")


def _refuse_unused_flags(args: argparse.Namespace, accuracy: str, latency: str) -> None:
    """A flag the chosen evaluators would silently ignore is named instead."""
    from mnas.evaluate import check_spec

    check_spec("accuracy", accuracy)    # a misspelt one is that, not "flags ignored"
    check_spec("latency", latency)
    _refuse_unused_proxy_flags(accuracy, [k for k in _PROXY_FLAGS
                                          if getattr(args, k) is not None])
    if args.device is not None and latency.partition(":")[0] == "table":
        raise ValueError(f"--latency {latency} reads every child's latency from the table, "
                         "so --device would be ignored: drop it")
    given = [k for k in _MEASURE_FLAGS if getattr(args, k) is not None]
    if given and latency.partition(":")[0] != "measured":
        raise ValueError(f"--latency {latency} times no child, so {_flags(given)} (how children "
                         f"are timed) would be ignored: drop {_them(given)}")


def _proxy_settings(args: argparse.Namespace, data: str | None, accuracy: str
                    ) -> dict[str, Any]:
    """config.json's ``proxy``: the flags given, and for a proxy run the defaults of
    what was not (so the file says how children were trained)."""
    given = {"data": absolute_data(_pick(data, "digits")), "epochs": args.epochs,
             "batch_limit": args.batch_limit, "width_mult": args.width_mult,
             "resolution": args.resolution, "torch_device": args.torch_device}
    if accuracy != "proxy":
        return given
    import inspect

    from mnas.evaluators.proxy import ProxyAccuracy

    params = inspect.signature(ProxyAccuracy).parameters
    return {k: params[k].default if v is None else v for k, v in given.items()}


def absolute_data(spec: str) -> str:
    """A data spec whose argument is a path, with that path absolute (``~`` expanded): a
    run's config names the same data whichever folder ``mnas train`` runs from."""
    scheme, sep, arg = spec.partition(":")
    if scheme in ("imagefolder", "cifar10", "cifar100") and arg:
        return f"{scheme}:{Path(arg).expanduser().absolute()}"
    return spec


def _batch(args: argparse.Namespace) -> int:
    """--batch, by default --workers: a batch is what trains at once."""
    batch = _pick(args.batch, args.workers or 1)
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    if args.workers and batch < args.workers:
        raise ValueError(f"--batch {batch} < --workers {args.workers}: at most {batch} "
                         "children train at once; give --batch >= --workers (or leave it out)")
    return batch


def _executor(args: argparse.Namespace, cfg: dict[str, Any]) -> Any:
    """None (each child trained in turn, here) or the executor --workers asks for."""
    if args.workers is None and args.ray_address is None:
        return None
    from search.executor import RayExecutor

    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers == 1 and not args.ray_address:
        return None
    device = str(cfg["proxy"].get("torch_device") or "cpu")
    if device.startswith("cuda:"):
        raise ValueError(f"--torch-device {device} with --workers: Ray gives each child its "
                         "own GPU; say --torch-device cuda")
    if cfg["batch"] < workers:
        print(f"mnas: note: this run's batch is {cfg['batch']}: at most {cfg['batch']} of "
              f"the {workers} workers train at once", file=sys.stderr)
    executor = RayExecutor(workers, args.ray_address, gpus=1.0 if device == "cuda" else 0.0)
    if args.ray_address:
        executor.connect()
    return executor


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of a new run, defaults filled in (written to config.json)."""
    from mnas.spaces import get_space
    from search.base import get_strategy

    if args.hard and (args.alpha is not None or args.beta is not None):
        raise ValueError("--hard sets alpha=0 and beta=-1; do not combine it with --alpha/--beta")
    space_name = _pick(args.space, "mnasnet")
    from mnas.spaces import SPACES

    get_space(space_name)  # validates the name with the list of valid spaces
    space_opts = typed_options(SPACES[space_name], parse_kv(args.space_opt, "space"), "space",
                               skip=("self",))
    space = get_space(space_name, **space_opts)
    strategy_name = _pick(args.strategy, "ppo")
    seed = _pick(args.seed, 0)
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    from search.base import strategy_factory

    get_strategy(strategy_name, space, seed=seed)  # validates name and space support
    strat_opts = typed_options(strategy_factory(strategy_name),
                               parse_kv(args.opt, "strategy"), "strategy")
    strategy = get_strategy(strategy_name, space, seed=seed, **strat_opts)
    strategy.preflight()   # files a new run reads once (a resumed one has them in its checkpoint)
    targets: list[str] = []
    if args.targets is not None:
        if args.target_ms is not None:
            raise ValueError("give either --target-ms or --targets, not both")
        targets = [t.strip() for t in args.targets.split(",")]
        if not any(targets) or not all(targets):
            raise ValueError(f"--targets {args.targets!r} is not a comma-separated list of "
                             "positive latencies in ms, e.g. 5,10,20")
    else:
        targets = [str(_pick(args.target_ms, "auto"))]
    for t in targets:
        if t != "auto":
            try:
                if not (math.isfinite(float(t)) and float(t) > 0):
                    raise ValueError
            except ValueError:
                raise ValueError(f"target {t!r} is not a positive number of ms or 'auto'") from None
    for flag, v in (("--alpha", args.alpha), ("--beta", args.beta)):
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{flag} must be a finite number, got {v}")
    if args.runs is not None and args.max_runs is not None and args.max_runs < args.runs:
        raise ValueError(f"--max-runs {args.max_runs} < --runs {args.runs}: the cap on "
                         "timed runs cannot be below their minimum")
    for flag, v, least in (("--runs", args.runs, 3), ("--max-runs", args.max_runs, 3),
                           ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)):
        if v is not None and v < least:
            raise ValueError(f"{flag} must be >= {least}, got {v}")
    if "auto" in targets and len(targets) > 1:
        raise ValueError("'auto' can only be used as the single target")
    latency = _pick(args.latency, "measured")
    accuracy = _pick(args.accuracy, "proxy")
    _refuse_unused_flags(args, accuracy, latency)
    data = args.data
    if accuracy.startswith("proxy:"):   # proxy:DATA is --data DATA said another way
        if data is not None and data != accuracy[6:]:
            raise ValueError(f"--accuracy {accuracy} and --data {data} name different data; "
                             "give one of them")
        accuracy, data = "proxy", accuracy[6:]
    budget = _pick(args.budget, DEFAULT_BUDGET)
    if budget < 1:
        raise ValueError(f"--budget must be >= 1, got {budget}")
    return {
        "space": space_name, "space_options": space_opts,
        "strategy": strategy_name, "strategy_options": strat_opts,
        "strategy_config": strategy.config(),
        "seed": seed, "budget": budget, "batch": _batch(args),
        "targets": targets, "targets_ms": None,
        "alpha": 0.0 if args.hard else _pick(args.alpha, -0.07),
        "beta": -1.0 if args.hard else _pick(args.beta, -0.07),
        "reward_transform": _pick(args.reward_transform, "identity"),
        "accuracy": accuracy,
        "proxy": _proxy_settings(args, data, accuracy),
        "device": device_of(args, latency),
        "latency": latency,
        "threads": _pick(args.threads, 1), "warmup": _pick(args.warmup, 5),
        "runs": _pick(args.runs, 20), "max_runs": _pick(args.max_runs, 100),
        "clock": _pick(args.clock, "wall"),
        "storage": args.storage,
    }


#: flags a resumed run may take: where it is, how it reports, and a new budget
_RESUME_FLAGS = {"out", "resume", "no_progress", "no_export", "budget", "resources",
                 "torch_device", "workers", "ray_address", "device", "func", "command"}


def _refuse_changes_on_resume(args: argparse.Namespace) -> None:
    """--resume continues the saved configuration; a setting given beside it would be
    silently ignored, so name it instead."""
    if args.force:
        raise ValueError("--resume continues the run in --out and --force starts it over: "
                         "give one of them")
    given = sorted(k for k, v in vars(args).items()
                   if k not in _RESUME_FLAGS and v not in (None, False, []))
    if given:
        raise ValueError(f"--resume continues the run with its saved config.json; it cannot "
                         f"change {_flags(given)} (only --budget, --torch-device, --workers, "
                         "--ray-address, and --device for the same device reached another "
                         "way): start a new run with another --out, or --force to start over")


def run(args: argparse.Namespace) -> int:
    from mnas.spaces import get_space
    from search.base import get_strategy
    from search.ledger import Ledger
    from search.loop import ChildScorer, SearchLoop

    if args.resume and args.out is None:
        raise ValueError("--resume needs --out RUN_DIR")
    out = Path(args.out) if args.out else Path("runs") / (
        f"{args.space or 'mnasnet'}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        _refuse_changes_on_resume(args)
    if args.torch_device is not None:   # before anything is written
        from mnas.train.device import check_device

        check_device(args.torch_device, "--torch-device")
    cfg = runmod.load_config(out) if args.resume else build_config(args)
    if args.resume:
        runmod.check_resumable(out, cfg)
    runmod.prepare_folder(out, resume=args.resume, force=args.force, create=False)
    if args.resume and args.budget is not None:
        cfg["budget"] = args.budget
    # recorded: a resume without the flag keeps a --no-export run's choice
    cfg["export"] = cfg.get("export", True) and not args.no_export
    if args.resume and args.torch_device is not None:   # same recipe, other hardware
        _refuse_unused_proxy_flags(cfg["accuracy"], ["torch_device"])
        cfg["proxy"]["torch_device"] = args.torch_device
    moved_from = move_device(cfg, args.device) if args.resume and args.device else None
    executor = _executor(args, cfg)
    space = get_space(cfg["space"], **cfg["space_options"])
    latency = runmod.make_latency(cfg, out)
    record_fingerprint(cfg, latency, moved_from)
    accuracy = runmod.make_accuracy(cfg)
    if executor is not None:    # its data goes to every worker
        executor.check_shareable(accuracy, f"the accuracy evaluator ({accuracy!r})")
    for evaluator in (accuracy, latency):   # e.g. a table of another space's archs
        if hasattr(evaluator, "check"):
            evaluator.check(space)
    # a shared storage holds many runs' studies: a new run's name is its own, so two
    # runs whose folders share a name never write into one study
    cfg.setdefault("study_name", out.resolve().name + (
        f"-{secrets.token_hex(4)}" if cfg["storage"] else ""))
    if cfg["targets_ms"] is None:
        cfg["targets_ms"] = _resolve_targets(cfg, space, latency)
    # a storage elsewhere is opened before the run folder is made (a bad URL leaves none)
    ledger = Ledger(cfg["storage"], study_name=cfg["study_name"]) if cfg["storage"] else None
    # every setting has been checked: only now may --force clear an old run, and only
    # while no other process searches it (held until the command returns)
    args.resources.enter_context(runmod.lock_run(out))
    runmod.prepare_folder(out, resume=args.resume, force=args.force)
    if not args.resume:     # before study.db: a kill between them leaves a resumable run
        runmod.save_config(out, cfg)
    strategy = get_strategy(cfg["strategy"], space, seed=cfg["seed"], **cfg["strategy_options"])
    ledger = ledger or Ledger(out / runmod.STUDY, study_name=cfg["study_name"])
    if args.resume and args.budget is not None and args.budget < ledger.finished_count():
        # recorded, it would leave a run that has more children than its budget
        raise ValueError(f"--budget {args.budget} is below the {ledger.finished_count()} "
                         "children this run already has; give a larger one, or leave "
                         "--budget out to write its reports again")
    scorer = ChildScorer(space, accuracy, latency, runmod.rewards_from(cfg))
    # reads a resumed run's checkpoint: one refused stops here, the run folder as it was
    loop = SearchLoop(space, strategy, scorer, ledger=ledger, budget=cfg["budget"],
                      batch=cfg["batch"], checkpoint=out / runmod.CHECKPOINT,
                      executor=executor, overlap=elsewhere(cfg, farm_spec(latency)))
    runmod.save_config(out, cfg)
    print(f"mnas: {cfg['strategy']} on {cfg['space']}, device {cfg['device']}, "
          f"T = {', '.join(f'{t:.2f}' for t in cfg['targets_ms'])} ms, "
          f"budget {cfg['budget']}"
          + (f", {executor.workers} workers (Ray)" if executor is not None else "")
          + f" -> {out}", file=sys.stderr)
    caveat = type(strategy).caveats.get(cfg["space"])
    if caveat:
        print(f"mnas: note: {caveat}", file=sys.stderr)
    # a strategy that trains on data of its own (enas's supernet)
    opts = getattr(strategy, "options", None)
    own_data = opts.get("data") if isinstance(opts, dict) else None
    if isinstance(own_data, str) and cfg["accuracy"].partition(":")[0] == "table":
        print(f"mnas: note: {cfg['strategy']} trains on {own_data} while the children's "
              f"accuracy comes from {cfg['accuracy']}; --opt data=SPEC gives it the "
              "table's task", file=sys.stderr)
    from devices.base import DeviceUnreachable, first_line

    done, left = ledger.finished_count(), loop.unfinished()
    if done >= cfg["budget"]:
        verb = "is" if left == 1 else "are"
        what = (f"; the {plural(left, 'child')} asked before it stopped {verb} scored, nothing "
                "new is searched" if left else ": nothing to search")
        print(f"mnas: note: this run already has {done} children (budget {cfg['budget']})"
              f"{what}; its reports are written again (a larger --budget goes on)",
              file=sys.stderr)
    learns = strategy.first_learning()
    if learns and done < cfg["budget"] <= learns[0]:
        n, option = learns
        option = option if "=" in option else f"{option}=N"
        print(f"mnas: note: {cfg['strategy']} learns from its children only after the first "
              f"{n}; --budget {cfg['budget']} ends before that, so this run samples without "
              f"learning (a larger --budget, or a smaller --opt {option}, lets it learn)",
              file=sys.stderr)
    bar = _Progress(max(cfg["budget"], done + left), done,
                    disable=args.no_progress or done >= cfg["budget"])
    # check_stop: a Ctrl-C or SIGTERM whose exception Python dropped (see there)
    loop.callbacks += [bar.update, lambda trial: check_stop()]
    try:
        try:
            trials = loop.run()
        finally:
            bar.close()
            if executor is not None:
                executor.close()
    except (KeyboardInterrupt, DeviceUnreachable) as e:
        if isinstance(e, DeviceUnreachable):
            print(f"mnas: error: {first_line(e)}; the search stopped rather than fail its "
                  "remaining children", file=sys.stderr)
        print(f"mnas: {ledger.finished_count()} of {cfg['budget']} children are saved; "
              f"`mnas search --out {shlex.quote(str(out))} --resume` goes on",
              file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            raise
        return EXIT_STOPPED
    from mnas.report import device_change_note, print_front

    changed = device_change_note(trials, cfg.get("device_fingerprint"))
    if changed:
        print(f"mnas: note: {changed}", file=sys.stderr)
    try:
        doc = runmod.write_run_reports(out, cfg, trials, space, export=cfg["export"],
                                       latency=latency)
        if hasattr(strategy, "report"):  # e.g. PNAS's surrogate Spearman per stage
            import json

            report = strategy.report()
            (out / "strategy_report.json").write_text(json.dumps(report, indent=2,
                                                                 default=str))
            print(f"strategy report: {json.dumps(report, default=str)}")
    except KeyboardInterrupt:
        print(f"mnas: interrupted while writing the reports; all {len(trials)} children are "
              f"saved, and `mnas search --out {shlex.quote(str(out))} --resume` writes them "
              "again", file=sys.stderr)
        raise
    print_front(doc)
    if not cfg["export"]:
        print(f"mnas: front models not exported (--no-export); `mnas front "
              f"{shlex.quote(str(out))}` exports them", file=sys.stderr)
    return 0


def _resolve_targets(cfg: dict[str, Any], space: Any, latency: Any) -> list[float]:
    if cfg["targets"] != ["auto"]:
        return [float(t) for t in cfg["targets"]]
    name, arch = runmod.reference_arch(space)
    m = latency(space, arch)
    print(f"mnas: target auto = {name} on {cfg['device']}: {m.median_ms:.2f} ms",
          file=sys.stderr)
    return [float(m.median_ms)]


class _Progress:
    """Children done / budget, best reward, front size, ETA (tqdm on stderr)."""

    def __init__(self, total: int, initial: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="children", unit="child",
                        disable=disable, file=sys.stderr, dynamic_ncols=True)
        self.best = float("-inf")
        self.points: list[tuple[float, float]] = []
        self.failed = 0

    def update(self, trial: Any) -> None:
        from mnas.pareto import pareto_front

        if trial.ok:
            self.best = max(self.best, trial.reward)
            self.points.append((trial.accuracy, trial.latency_ms))
        else:
            self.failed += 1
        self.bar.set_postfix(best=f"{self.best:.4f}", front=len(pareto_front(self.points)),
                             failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

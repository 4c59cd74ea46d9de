"""``enas``: Efficient Neural Architecture Search via parameter sharing (Pham et al., 2018),
as a strategy of the MnasNet loop.

The strategy owns a weight-shared supernet (:mod:`search.supernet`) over the space, the
data it trains on (``make_datamodule(data, resolution, batch_size, val_fraction,
data_seed)``; the same split the proxy evaluator uses with the same settings) and an
LSTM controller (:class:`search.controller.Controller`, 100 hidden units, weights
U(−0.1, 0.1), as in the paper). Every ``ask(n)``:

1. **shared-weight training** — ``shared_steps`` minibatches (plus ``warmup_steps`` on
   the first ask); each trains one child sampled from the controller, through the
   shared weights only it uses (SGD, Nesterov momentum, gradient-norm clip);
2. **controller training** — ``controller_steps`` REINFORCE updates; each samples
   ``controller_batch`` children and scores them on one validation minibatch of
   ``val_batch`` examples with the shared weights. Reward ``ACC × (LAT/T)^w`` (MnasNet's,
   ``w = alpha`` if ``LAT ≤ T`` else ``beta``), ``LAT`` from a fast estimate
   (:class:`search.supernet.latency.FastLatency`: the lookup table at ``lut`` if given,
   else the labelled MAC proxy). Loss ``−mean((R − b)·log p) − entropy_weight·H`` with
   Adam (``controller_lr``, ENAS's 3.5e-4); the baseline ``b`` is an exponential moving
   average of rewards (``baseline_decay``, ENAS's 0.99), taken before the batch it scores
   (the first batch uses its own mean);
3. **proposal** — samples ``candidates`` children (at least ``n``), scores each distinct
   one on the fixed ranking set (``rank_examples`` validation examples, default 64; 0 =
   the whole validation split) × the latency factor, and returns the top ``n``,
   preferring children not returned before. Their meta carries ``supernet_accuracy``,
   ``latency_estimate_ms``, ``latency_estimate`` (which estimate), ``supernet_reward`` and
   the rank; the loop then trains and measures them like any other strategy's children.

``T`` is ``target_ms``, or (0, the default) the estimate of the space's reference point
(MobileNetV2 for ``mnasnet``, NASNet-A for ``nasnet``, the best CIFAR-100 cell for
``nb201``) by the active estimate. Children are scored with BatchNorm on batch statistics
(:meth:`Supernet.batch_stats`).

``tell`` only records the real results (:attr:`history`, :meth:`fidelity`): the controller
learns from supernet rewards alone (the few measured ones would be a second reward scale).

Determinism: the controller samples from a NumPy generator, minibatches come from
private ``torch.Generator`` streams, and dropout draws from a private copy of torch's
RNG state (seeded with ``torch.manual_seed(seed)``; the process's global RNG is left as
it was). ``state_dict`` holds all of it with the supernet, both optimisers and the
baseline, so a resumed strategy asks exactly what the uninterrupted one would.
``threads`` (default 1) sets torch's threads during ``ask``. ``torch_device`` (default
``cpu``; ``cuda``, ``cuda:1``) holds the supernet and its minibatches, the controller
stays on the CPU; checkpoints hold CPU tensors, so they load on any machine. On CUDA a
run is not bit-for-bit repeatable (cuDNN's kernels; dropout draws from the device's
generator). ``optimizer`` (``sgd`` | ``adam``), ``private_bn`` (comma list of
``op,kernel,se,skip``) and ``zero_gamma`` are shared-weight training variants recorded
in ``docs/strategies.md`` (off by default; the last two on ``mnasnet`` only).

**Train once, search many:** ``supernet_from`` (an ``enas`` run folder or its
``strategy.ckpt``) starts from that run's trained supernet and its optimiser state, with
no warm-up: the supernet does not depend on the device or target, so searches for other
devices reuse it (same space, data and supernet options, checked; the controller starts
afresh). ``shared_steps=0`` then only ranks with it. A new run takes the file before it
writes anything; a resumed one does not need it (:mod:`search.supernet.reuse`).

Cost (2-core host, one thread, ``mnasnet``, digits 32×32, width 0.5): a shared step ≈
0.1–0.15 CPU-s; scoring a child ≈ 7 CPU-ms + 0.28 per ranking image (the default 64 cost a
noisier accuracy, ±0.05 s.e. at 0.8; ``rank_examples=0``: the whole split); an ``ask`` ≈ 8
CPU-s (+12 s of warm-up on the first).

**Where it works: ``nb201``** (every cell sums its edges, so children share a feature
basis): at the defaults (1,100 shared steps) a Spearman with the 2-epoch proxy of
**0.73** / **0.83** (20 / 30 children), **132–134×** the proxy's rate marginally,
3.6–3.8× amortised over 120 children (``benchmarks/enas_speed.py --space nb201``).

**Known limitation — on ``mnasnet`` and ``nasnet`` the shared weights do not rank
children** against standalone training, after 1,100 shared steps here, 2,550–4,300 on a
GPU or (``mnasnet``) 20,000, where every child scores 0.84–0.98 and the Spearman is
0.07 / −0.01. Every variant tried is in ``docs/strategies.md``."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnas.reward import Reward
from mnas.train.device import check_device as _check_device
from mnas.trial import Trial
from search.base import Candidate, Strategy, register_strategy
from search.controller import Controller
from search.supernet import key_seed, make_supernet
from search.supernet.data import Stream as _Stream
from search.supernet.data import check_float as _check_float
from search.supernet.data import check_int as _check_int
from search.supernet.data import cpu_copy as _cpu_copy
from search.supernet.data import datasets as _datasets
from search.supernet.data import fetch as _fetch
from search.supernet.latency import DEFAULT_MS_PER_MMAC, FastLatency
from search.supernet.reuse import load_momenta, read_trained

log = logging.getLogger(__name__)

#: options a supernet taken from another run must share (they shape it or its data)
_SUPERNET = ("space", "data", "resolution", "width_mult", "val_fraction", "data_seed",
             "optimizer", "private_bn", "zero_gamma")
_STRUCTURAL = (*_SUPERNET, "hidden")   # shape the saved state: a checkpoint loads into these
#: largest batch scored at once (batch statistics are per chunk)
SCORE_CHUNK = 512


@register_strategy
class Enas(Strategy):
    """ENAS: shared-weight supernet + LSTM controller trained with REINFORCE (see module)."""

    name = "enas"
    spaces = ("mnasnet", "nasnet", "nb201")
    caveats = {s: f"on {s} the shared weights were measured not to rank children (no "
                  f"significant Spearman with standalone training; docs/strategies.md): in "
                  f"effect enas ranks them by the latency estimate alone"
               for s in ("mnasnet", "nasnet")}

    def __init__(self, space: Any, seed: int = 0, data: str = "digits", resolution: int = 32,
                 width_mult: float = 0.5, batch_size: int = 64, val_fraction: float = 0.2,
                 data_seed: int = 0, warmup_steps: int = 100, shared_steps: int = 50,
                 controller_steps: int = 5, controller_batch: int = 8, val_batch: int = 128,
                 candidates: int = 16, rank_examples: int = 64, lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 4e-5, grad_clip: float = 5.0,
                 hidden: int = 100, controller_lr: float = 3.5e-4,
                 entropy_weight: float = 1e-4, baseline_decay: float = 0.99,
                 target_ms: float = 0.0, alpha: float = -0.07, beta: float = -0.07,
                 lut: str = "", ms_per_mmac: float = DEFAULT_MS_PER_MMAC,
                 threads: int = 1, optimizer: str = "sgd", private_bn: str = "",
                 zero_gamma: bool = False, torch_device: str = "cpu",
                 supernet_from: str = "") -> None:
        super().__init__(space, seed)
        from mnas.train.data import make_datamodule

        self.options: dict[str, Any] = {
            "data": str(data),
            "resolution": _check_int("resolution", resolution, 1),
            "width_mult": _check_float("width_mult", width_mult, 0.0, low_open=True),
            "batch_size": _check_int("batch_size", batch_size, 2),
            "val_fraction": _check_float("val_fraction", val_fraction, 0.0, 1.0, low_open=True),
            "data_seed": _check_int("data_seed", data_seed, 0),
            "warmup_steps": _check_int("warmup_steps", warmup_steps, 0),
            "shared_steps": _check_int("shared_steps", shared_steps, 0),
            "controller_steps": _check_int("controller_steps", controller_steps, 0),
            "controller_batch": _check_int("controller_batch", controller_batch, 1, 10_000),
            "val_batch": _check_int("val_batch", val_batch, 2),
            "candidates": _check_int("candidates", candidates, 1, 100_000),
            "rank_examples": _check_int("rank_examples", rank_examples, 0),
            "lr": _check_float("lr", lr, 0.0, low_open=True),
            "momentum": _check_float("momentum", momentum, 0.0, 1.0),
            "weight_decay": _check_float("weight_decay", weight_decay, 0.0),
            "grad_clip": _check_float("grad_clip", grad_clip, 0.0),
            "hidden": _check_int("hidden", hidden, 1),
            "controller_lr": _check_float("controller_lr", controller_lr, 0.0, low_open=True),
            "entropy_weight": _check_float("entropy_weight", entropy_weight, 0.0),
            "baseline_decay": _check_float("baseline_decay", baseline_decay, 0.0, 1.0),
            "target_ms": _check_float("target_ms (0 = the reference point's estimate)",
                                      target_ms, 0.0),
            "alpha": _check_float("alpha", alpha),
            "beta": _check_float("beta", beta),
            "lut": str(lut or ""),
            "ms_per_mmac": _check_float("ms_per_mmac", ms_per_mmac, 0.0, low_open=True),
            "threads": _check_int("threads (0 = leave torch's setting)", threads, 0),
            "optimizer": str(optimizer),
            "private_bn": str(private_bn or ""),
            "zero_gamma": bool(zero_gamma),
            "torch_device": str(torch_device),
            "supernet_from": str(supernet_from or ""),
        }
        self.device = _check_device(torch_device)
        self.source = self.options["supernet_from"]     # taken at preflight or first ask
        self.warm_started = False
        if self.options["optimizer"] not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        o = self.options
        if space.name != "mnasnet" and (o["private_bn"] or o["zero_gamma"]):
            raise ValueError(f"private_bn and zero_gamma are mnasnet-only, not {space.name}")
        self.latency = FastLatency(space, o["lut"] or None, o["ms_per_mmac"])
        self.target_ms = o["target_ms"] or self.latency.reference_ms()
        self.reward = Reward(self.target_ms, o["alpha"], o["beta"])

        # data: read once; minibatches come from private streams
        dm = make_datamodule(o["data"], resolution=o["resolution"], batch_size=o["batch_size"],
                             val_fraction=o["val_fraction"], seed=o["data_seed"])
        if getattr(dm, "num_classes", None) is None or getattr(dm, "train_set", 1) is None:
            from mnas.evaluators.proxy import quiet_lightning

            with quiet_lightning():
                dm.prepare_data()
                dm.setup("fit")
        self.num_classes = int(dm.num_classes)
        self.train_set, self.val_set = _datasets(dm)
        if len(self.train_set) < 2 or len(self.val_set) < 1:
            raise ValueError(f"data {o['data']!r} needs >= 2 training and >= 1 validation "
                             f"examples, has {len(self.train_set)} and {len(self.val_set)}")
        self.train_stream = _Stream(len(self.train_set), o["batch_size"], key_seed(seed, "train"))
        self.val_stream = _Stream(len(self.val_set), o["val_batch"], key_seed(seed, "val"))
        n_rank = o["rank_examples"] or len(self.val_set)
        order = torch.randperm(len(self.val_set), generator=torch.Generator().manual_seed(
            o["data_seed"]))[: min(n_rank, len(self.val_set))]
        self.rank_x, self.rank_y = self._fetch(self.val_set, order.sort().values)
        in_channels = int(self.rank_x.shape[1])

        # the supernet and its optimiser (param groups grow with the supernet)
        extra: dict[str, Any] = {}
        if space.name == "mnasnet":
            extra = {"private_bn": tuple(f for f in o["private_bn"].split(",") if f),
                     "zero_gamma": o["zero_gamma"]}
        self.supernet = make_supernet(space, self.num_classes, o["width_mult"], in_channels,
                                      seed=seed, **extra).place(self.device)
        groups = self._groups(list(self.supernet.parameters()))
        if o["optimizer"] == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=o["lr"])
        else:
            self.optimizer = torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"],
                                             nesterov=o["momentum"] > 0)
        self.supernet.new_params_hook = self._add_params

        # the controller
        self.decisions = tuple(space.decisions(0))
        self.controller = Controller(o["hidden"], 1, 0.1, seed)
        self.controller_optimizer = torch.optim.Adam(self.controller.parameters(),
                                                     lr=o["controller_lr"])
        self.controller.new_params_hook = lambda ps: self.controller_optimizer.add_param_group(
            {"params": ps})
        self.controller.ensure(self.decisions)
        self.gen = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.torch_rng = torch.get_rng_state()

        self.baseline: float | None = None
        self.asks = 0
        self.shared_steps_done = 0
        self.controller_steps_done = 0
        self.skipped_steps = 0
        self.rewards: list[float] = []     # mean supernet reward of each controller step
        self.losses: list[float] = []      # training loss of each shared step
        self.asked: dict[str, int] = {}    # arch string -> times returned
        self.history: list[dict[str, Any]] = []

    # -- plumbing --------------------------------------------------------------------
    def _groups(self, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        """Two groups: weight decay on weights, not on BatchNorm/bias vectors."""
        return [{"params": [p for p in params if p.ndim > 1],
                 "weight_decay": self.options["weight_decay"]},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]

    def _add_params(self, params: list[torch.nn.Parameter]) -> None:
        """Announced by the supernet for every module it creates: appended to the two
        groups (``add_param_group`` re-checks every parameter for duplicates, quadratic
        in a table of thousands of modules). Creation order is replayed on resume, so
        the optimiser's state lines up."""
        decay = [p for p in params if p.ndim > 1]
        plain = [p for p in params if p.ndim <= 1]
        self.optimizer.param_groups[0]["params"].extend(decay)
        self.optimizer.param_groups[1]["params"].extend(plain)

    @contextlib.contextmanager
    def _private(self) -> Iterator[None]:
        """Our thread count and our copy of torch's RNG (dropout), restored after."""
        saved = torch.get_num_threads()
        if self.options["threads"]:
            torch.set_num_threads(self.options["threads"])
        try:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self.torch_rng)
                try:
                    yield
                finally:
                    self.torch_rng = torch.get_rng_state()
        finally:
            torch.set_num_threads(saved)

    def _fetch(self, ds: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _fetch(ds, idx)
        return x.to(self.device), y.to(self.device)

    def _sample(self) -> tuple[tuple[int, ...], Any]:
        choices, _, _ = self.controller.sample(self.decisions, self.gen)
        return choices, self.space.from_choices(choices)

    # -- the inner loop --------------------------------------------------------------
    def shared_step(self) -> float:
        """Train the shared weights of one sampled child on one training minibatch."""
        _, arch = self._sample()
        x, y = self._fetch(self.train_set, self.train_stream.next())
        loss = F.cross_entropy(self.supernet(x, arch), y)
        params = self.supernet.path_parameters(arch)
        self.shared_steps_done += 1
        if not torch.isfinite(loss):
            self.skipped_steps += 1
            log.warning("enas: non-finite loss on %s; step skipped", arch.encode())
            return float("nan")
        loss.backward()
        if self.options["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, self.options["grad_clip"])
        self.optimizer.step()
        for p in params:          # only this child's weights ever hold gradients
            p.grad = None
        value = float(loss.detach())
        self.losses.append(value)
        return value

    @torch.no_grad()
    def supernet_accuracy(self, arch: Any, x: torch.Tensor | None = None,
                          y: torch.Tensor | None = None) -> float:
        """Accuracy of ``arch`` with the shared weights on ``x, y`` (default: the ranking
        set), BatchNorm on batch statistics."""
        if x is None or y is None:
            x, y = self.rank_x, self.rank_y
        correct = 0
        with self.supernet.batch_stats(arch):
            for lo in range(0, len(y), SCORE_CHUNK):
                logits = self.supernet(x[lo: lo + SCORE_CHUNK], arch)
                correct += int((logits.argmax(1) == y[lo: lo + SCORE_CHUNK]).sum())
        return correct / max(1, len(y))

    def score(self, arch: Any) -> tuple[float, float, float]:
        """``(supernet accuracy on the ranking set, latency estimate ms, reward)`` of
        ``arch`` — what :meth:`ask` ranks candidates by (RNGs and threads kept private)."""
        with self._private():
            acc = self.supernet_accuracy(arch)
        lat = self.latency(arch)
        return acc, lat, self.reward(acc, lat)

    def controller_step(self) -> float:
        """One REINFORCE update from ``controller_batch`` children scored on one
        validation minibatch; returns their mean reward."""
        x, y = self._fetch(self.val_set, self.val_stream.next())
        batch, rewards = [], []
        for _ in range(self.options["controller_batch"]):
            choices, arch = self._sample()
            acc = self.supernet_accuracy(arch, x, y)
            batch.append(choices)
            rewards.append(self.reward(acc, self.latency(arch)))
        r = np.asarray(rewards)
        b = float(r.mean()) if self.baseline is None else self.baseline
        logp, ent = self.controller.evaluate(self.decisions, batch)
        adv = torch.as_tensor(r - b, dtype=logp.dtype)
        loss = -(logp * adv).mean() - self.options["entropy_weight"] * ent.mean()
        self.controller_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.controller_optimizer.step()
        self.controller.changed()
        decay = self.options["baseline_decay"]
        for v in rewards:
            b = decay * b + (1.0 - decay) * v
        self.baseline = b
        self.controller_steps_done += 1
        self.rewards.append(float(r.mean()))
        return float(r.mean())

    def train(self, shared_steps: int, controller_steps: int) -> None:
        """Run inner-loop work outside ``ask`` (benchmarks, warm starts)."""
        with self._private():
            for _ in range(shared_steps):
                self.shared_step()
            for _ in range(controller_steps):
                self.controller_step()

    def _warm_start(self) -> None:
        """Take the trained supernet (weights, optimiser state) of another ``enas`` run:
        its accuracies do not depend on the device or the target, so one supernet serves
        searches for many. The controller starts afresh, since its rewards do."""
        net, opt, steps = read_trained(self.source, self.name, self.config(), _SUPERNET)
        try:
            self.supernet.load_checkpoint(net)
            load_momenta(self.optimizer, opt)
        except (KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"supernet_from {self.options['supernet_from']!r}: its supernet "
                             f"does not fit this space ({str(e).splitlines()[0]})") from None
        self.shared_steps_done, self.warm_started = steps, True

    def preflight(self) -> None:
        """A new run takes ``supernet_from`` before it writes anything (refused: one line)."""
        if self.source and not self.warm_started:
            self._warm_start()

    # -- ask / tell ----------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if n == 0:
            return []
        o = self.options
        if self.source and not self.warm_started:
            self._warm_start()
        with self._private():
            warmup = self.asks == 0 and not self.warm_started
            steps = o["shared_steps"] + (o["warmup_steps"] if warmup else 0)
            for _ in range(steps):
                self.shared_step()
            for _ in range(o["controller_steps"]):
                self.controller_step()
            out = self._propose(n)
        self.asks += 1
        self.children_seen += n
        return out

    def _propose(self, n: int) -> list[Candidate]:
        pool: dict[str, tuple[tuple[int, ...], Any]] = {}
        for _ in range(max(n, self.options["candidates"])):
            choices, arch = self._sample()
            pool.setdefault(arch.encode(), (choices, arch))
        scored = []
        for text, (choices, arch) in pool.items():
            acc = self.supernet_accuracy(arch)
            lat = self.latency(arch)
            scored.append((self.reward(acc, lat), acc, lat, text, choices))
        order = sorted(range(len(scored)), key=lambda i: -scored[i][0])  # stable on ties
        picked = ([i for i in order if scored[i][3] not in self.asked]
                  + [i for i in order if scored[i][3] in self.asked])
        while len(picked) < n:       # fewer distinct children than asked for
            picked += order
        out = []
        for i in picked[:n]:
            r, acc, lat, text, choices = scored[i]
            self.asked[text] = self.asked.get(text, 0) + 1
            out.append(self.candidate(
                choices, supernet_accuracy=acc, supernet_reward=r, latency_estimate_ms=lat,
                latency_estimate=self.latency.label, inner_target_ms=self.target_ms,
                supernet_rank=order.index(i), pool=len(scored),
                shared_steps=self.shared_steps_done,
                controller_steps=self.controller_steps_done))
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        """Record the real results next to the supernet's (see :meth:`fidelity`); they
        train nothing."""
        for t in trials:
            self.history.append({
                "number": t.number, "arch": t.arch, "state": t.state,
                "accuracy": t.accuracy, "latency_ms": t.latency_ms, "reward": t.reward,
                "supernet_accuracy": t.meta.get("supernet_accuracy"),
                "latency_estimate_ms": t.meta.get("latency_estimate_ms")})

    def fidelity(self) -> dict[str, float | int | None]:
        """Spearman correlations, over the told complete trials, of supernet accuracy vs
        real accuracy and of the latency estimate vs real latency (None below 3 trials)."""
        from scipy.stats import spearmanr

        out: dict[str, float | int | None] = {}
        for name, a, b in (("accuracy_spearman", "supernet_accuracy", "accuracy"),
                           ("latency_spearman", "latency_estimate_ms", "latency_ms")):
            rows = [(h[a], h[b]) for h in self.history
                    if h["state"] == "complete" and h[a] is not None and h[b] is not None]
            ok = len(rows) >= 3 and len({r[0] for r in rows}) > 1 and len({r[1] for r in rows}) > 1
            out[name] = float(spearmanr(*zip(*rows, strict=True))[0]) if ok else None
            out[name.replace("spearman", "n")] = len(rows)
        return out

    # -- configuration and checkpoints --------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.options, "space": self.space.name,
                "inner_target_ms": self.target_ms, "latency_estimate": self.latency.label}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "config": self.config(),
                "supernet": self.supernet.checkpoint(),
                "optimizer": _cpu_copy(self.optimizer.state_dict()),
                "controller": self.controller.checkpoint(),
                "controller_optimizer": copy.deepcopy(self.controller_optimizer.state_dict()),
                "gen": copy.deepcopy(self.gen.bit_generator.state),
                "torch_rng": self.torch_rng.clone(),
                "train_stream": self.train_stream.state(),
                "val_stream": self.val_stream.state(),
                "baseline": self.baseline,
                "counters": (self.asks, self.shared_steps_done, self.controller_steps_done,
                             self.skipped_steps),
                "rewards": list(self.rewards), "losses": list(self.losses),
                "asked": dict(self.asked), "history": copy.deepcopy(self.history),
                "warm_started": self.warm_started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        mine = self.config()
        for k in _STRUCTURAL:
            if saved.get(k) != mine[k]:
                raise ValueError(f"checkpoint has {k}={saved.get(k)!r}, this strategy "
                                 f"{k}={mine[k]!r}: build it with the same options")
        super().load_state_dict(state)
        self.supernet.load_checkpoint(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_checkpoint(state["controller"])
        self.controller.changed()
        self.controller_optimizer.load_state_dict(state["controller_optimizer"])
        self.gen.bit_generator.state = copy.deepcopy(state["gen"])
        self.torch_rng = state["torch_rng"].clone()
        self.train_stream.load(state["train_stream"])
        self.val_stream.load(state["val_stream"])
        self.baseline = state["baseline"]
        (self.asks, self.shared_steps_done, self.controller_steps_done,
         self.skipped_steps) = state["counters"]
        self.rewards, self.losses = list(state["rewards"]), list(state["losses"])
        self.asked = dict(state["asked"])
        self.history = copy.deepcopy(state["history"])
        self.warm_started = bool(state.get("warm_started", False))

"""``pnas``: Progressive Neural Architecture Search (Liu et al., 2018).

Works on every space with the :class:`~mnas.spaces.base.Progressive` capability: the
``pnas`` cell space (cells grow by blocks, 1 → B) and ``nb201`` (cells grow by node,
1 → 3: a cell grown to b nodes is the NB201 cell whose later nodes pass node b through,
so it is in the table; stage 1 is all 5 one-node cells, then each parent × 25 choices of
node 2's edges, then × 125 of node 3's). Below, "block" is the space's growth step.

Sequential model-based optimisation over cells of growing size:

1. **Stage 1** scores 1-block cells: all 136 distinct ones (8 ops × 2 inputs per half,
   up to the symmetry of add) when ``initial`` is 0, else a random ``initial`` of them.
2. When every child of a stage is told, the surrogate (``predictor="mlp"``:
   :class:`search.surrogate.MLPEnsemble` over ``space.vector``; ``"lstm"``:
   :class:`search.surrogate_lstm.LSTMEnsemble`, the paper's other predictor, over the
   cell's blocks as a sequence) is refit on **all** scored cells, and the latency model too.
3. The top ``beam`` (K) cells of the stage by reward are each expanded by one block —
   every distinct expansion, or a random ``max_expand`` of each parent's — and the
   expansions are ranked by **predicted reward** = predicted accuracy × (predicted
   latency / T)^w, w = ``alpha`` if the predicted latency ≤ T else ``beta`` (MnasNet's
   reward). The top K form the next stage. Repeat until cells have B blocks.
4. After stage B the search goes on in rounds of K at B blocks, so any budget is usable:
   each round ranks the expansions of the best K (B−1)-block cells and the one-token
   neighbours of the best K B-block cells, all unevaluated, and queues the top K.

**Latency predictor**: ridge regression (:class:`search.surrogate.RidgeLatency`) of
latency on the encoding's size-free count columns (``space.summary_columns``: op counts,
what each op reads, the number of blocks or nodes), fit to every latency told so far. A network's latency is to first order a constant plus
per-op costs (each cell op repeats in every cell; ops on the cell inputs stride in
reductions), which this linear model captures and extrapolates to cells one block
larger. A candidate made from a measured cell (an expansion, a neighbour) is predicted
as *that cell's measured latency + model(candidate) − model(cell)*, so the level stays
near the truth. Before two cell sizes are measured an expansion's increment is known only
up to a constant, shifted so the cheapest block costs nothing (``_predict_latency``).
Growing cells also widen the next cell's input (all blocks are concatenated), a
per-block cost the model learns from stage 3 on. ``latency_model="none"`` ranks by
predicted accuracy only (the paper's setting). **T**: ``target_ms`` if > 0, else the target of the first trial told
(when the loop spreads children over several targets, PNAS ranks with that one T).
``rank="targets"`` ranks for every told target instead and takes each target's best in
turn (parents, stage children and reserve alike), so a beam of K serves each target
with about K/len(targets) cells — MnasNet's several-T search inside PNAS's beam.

**Refits.** The ensemble is refit after a stage that brought a new cell size (always
afresh: the paper's schedule up to B), and in the rounds at full size once the data has
grown by the factor ``refit_growth`` (default 1.25; 1 = after every round). A refit at
full size is **warm** (``warm=True``, default): it goes on from the last fit's weights
for the new rows' share of the epochs, ``ceil(epochs · (1 − n_last / n))`` steps, with
fresh resamples (:meth:`MLPEnsemble.fit`'s ``warm_steps``). The latency model is refit
every stage; it costs nothing. Cold refits after every round made a 1,000-child nb201
search 40× Optuna's NSGA-II's time (``docs/strategies.md``).

**Asks and tells.** ``ask(n)`` hands out the current stage's queue; a stage ends when its
queue is handed out *and* all of it is told (in any order, failed trials included). Asks
beyond the queue before then (a batch asked before its tells) get the next-ranked cells
of the same stage (meta ``origin="overflow"``), or random unevaluated cells of the
current size (``origin="random"``); they never hold the stage back, and they join the
data when told. Failed trials count as told and are left out of every fit. A stage whose
children all failed is repeated with fresh cells of the same size.

**Reporting.** When a stage ends, the Spearman correlation between the rewards (and
accuracies, and latencies) predicted *before* its children were scored and the real ones
is appended to ``stage_spearman`` and logged; ``report()`` returns it. These children
are the top K of the ranking, a narrow range: expect far less than on random cells
(``benchmarks/pnas_surrogate.py`` measures both). Candidate meta carries ``stage``,
``blocks``, ``origin`` and ``pred_acc``, ``pred_std``, ``pred_lat_ms``, ``pred_reward``.

Defaults are sized for this project's budgets (≈100 children reach B = 5: 32 + 4 × 16);
the paper trains all 136 one-block cells and uses K = 256. On nb201 they beat NSGA-II
at 50 / 100 / 200 children on the benchmark's column (``docs/strategies.md``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnas.spaces.base import Encodable, Progressive
from mnas.trial import Trial
from search.base import Candidate, Strategy, register_strategy
from search.strategies._pnas_pool import Pool, best_per_target, fmt_stat, pos_int
from search.surrogate import MLPEnsemble, RidgeLatency, spearman
from search.surrogate_lstm import LSTMEnsemble, make_predictor

log = logging.getLogger(__name__)

LATENCY_MODELS = ("linear", "none")
RANKINGS = ("reward", "targets")
#: how many ranked-but-unqueued cells a stage keeps for overflow asks (bounds the state)
RESERVE_PER_BEAM = 4


@register_strategy
class ProgressiveNAS(Strategy):
    """PNAS: stages of growing cells ranked by a surrogate ensemble; beam ``beam``."""

    name = "pnas"
    requires = (Encodable, Progressive)

    def __init__(self, space: Any, seed: int = 0, initial: int = 32, beam: int = 16,
                 max_expand: int = 0, members: int = 5, hidden: int = 32, epochs: int = 200,
                 latency_model: str = "linear", target_ms: float = 0.0,
                 alpha: float = -0.07, beta: float = -0.07, rank: str = "reward",
                 refit_growth: float = 1.25, warm: bool = True, predictor: str = "mlp") -> None:
        super().__init__(space, seed=seed)
        self.initial = pos_int("initial", initial, 0)
        self.beam = pos_int("beam", beam, 1)
        self.max_expand = pos_int("max_expand", max_expand, 0)
        if latency_model not in LATENCY_MODELS:
            raise ValueError(f"unknown latency_model {latency_model!r}; "
                             f"valid: {', '.join(LATENCY_MODELS)}")
        self.latency_model = latency_model
        if not (math.isfinite(float(target_ms)) and float(target_ms) >= 0):
            raise ValueError(f"target_ms must be >= 0 (0 = the first told trial's), got {target_ms}")
        self.target_opt = float(target_ms)
        self.alpha, self.beta = float(alpha), float(beta)
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"alpha and beta must be finite numbers, got {alpha} and {beta}")
        if rank not in RANKINGS:
            raise ValueError(f"unknown rank {rank!r}; valid: {', '.join(RANKINGS)}")
        self.rank = rank
        if not (math.isfinite(float(refit_growth)) and float(refit_growth) >= 1.0):
            raise ValueError(f"refit_growth must be >= 1 (1 = refit every stage), "
                             f"got {refit_growth}")
        self.refit_growth = float(refit_growth)
        self.warm = bool(warm)
        self.fit_size = self.fit_blocks = 0  # scored cells and cell size at the last fit
        self.targets_seen: list[float] = []  # every target told, sorted
        self.predictor = predictor
        self.surrogate: MLPEnsemble | LSTMEnsemble = make_predictor(
            predictor, space, members=members, hidden=hidden, epochs=epochs, seed=seed)
        self.latency = RidgeLatency()
        self.B = space.growth_stages
        self.target: float | None = self.target_opt or None
        self.stage = 1                       # stage number (repeats and rounds count too)
        self.blocks = 1                      # cell size of the current stage
        self.queue: list[dict[str, Any]] = []    # this stage's children still to hand out
        self.reserve: list[dict[str, Any]] = []  # next-ranked cells for overflow asks
        self.waiting: set[str] = set()       # queued children asked, not yet told
        self.pending: dict[str, dict[str, Any]] = {}  # every asked child not yet told
        self.asked: set[str] = set()
        self.data: dict[str, tuple[float, float]] = {}  # arch -> (accuracy, latency_ms)
        self.results: list[dict[str, Any]] = []  # this stage's told children
        self.stage_spearman: list[dict[str, Any]] = []
        self._vectors: dict[str, np.ndarray] = {}
        self._sizes: dict[str, int] = {}
        self._nbrs: dict[str, list[str]] = {}  # the same best cells recur round after round
        cells = list(space.smallest_cells())
        self.rng.shuffle(cells)
        size = len(cells) if self.initial == 0 else min(self.initial, len(cells))
        entries = [{"arch": a.encode()} for a in cells]
        self.queue, self.reserve = entries[:size], entries[size:]
        self.first_stage = size

    # -- helpers ---------------------------------------------------------------------
    def _vector(self, key: str) -> np.ndarray:
        v = self._vectors.get(key)
        if v is None:
            v = self._vectors[key] = self.space.vector(self.space.decode(key))
        return v

    def _size(self, key: str) -> int:
        b = self._sizes.get(key)
        if b is None:
            b = self._sizes[key] = self.space.cell_size(self.space.decode(key))
        return b

    def _reward(self, acc: float, lat: float | None, target: float | None = None) -> float:
        """:meth:`_rewards` of one cell."""
        return float(self._rewards(np.array([acc], dtype=float),
                                   None if lat is None else np.array([lat], dtype=float),
                                   target)[0])

    # -- proposing ---------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        if isinstance(n, bool) or int(n) < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        out = []
        for _ in range(int(n)):
            if self.queue:
                entry, origin = self.queue.pop(0), ("initial" if self.stage == 1 else "pnas")
                self.waiting.add(entry["arch"])
            elif self.reserve:
                entry, origin = self.reserve.pop(0), "overflow"
            else:
                entry, origin = {"arch": self._random_cell(self.blocks)}, "random"
            key = entry["arch"]
            meta = {"origin": origin, "stage": self.stage, "blocks": self.blocks,
                    **{k: v for k, v in entry.items() if k != "arch"}}
            self.pending[key] = {"stage": self.stage, **meta}
            self.asked.add(key)
            self.children_seen += 1
            out.append(self.candidate(self.space.to_choices(self.space.decode(key)), **meta))
        return out

    def _random_cell(self, b: int) -> str:
        """A random canonical b-block cell not asked before (one asked before only if 200
        draws find none)."""
        key = ""
        for _ in range(200):
            key = self.space.random_cell(self.rng, b).encode()
            if key not in self.asked:
                break
        return key

    # -- learning ----------------------------------------------------------------------
    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            key = t.arch
            info = self.pending.pop(key, None)
            ok = (t.ok and t.accuracy is not None and t.latency_ms is not None
                  and math.isfinite(t.accuracy) and math.isfinite(t.latency_ms)
                  and t.latency_ms > 0)
            if self.target is None and t.target_ms:
                self.target = float(t.target_ms)
            if t.target_ms and float(t.target_ms) not in self.targets_seen:
                self.targets_seen = sorted([*self.targets_seen, float(t.target_ms)])
            if ok:
                try:
                    self._vector(key)
                except (ValueError, TypeError):  # not a cell of this space: nothing to learn
                    ok = False
            if ok:
                self.data[key] = (float(t.accuracy), float(t.latency_ms))
            if info is None or info["stage"] != self.stage:
                continue
            self.waiting.discard(key)
            self.results.append({
                "arch": key, "ok": ok,
                "acc": float(t.accuracy) if ok else None,
                "lat": float(t.latency_ms) if ok else None,
                "reward": float(t.reward) if ok and t.reward is not None else None,
                "target": float(t.target_ms) if t.target_ms else None,
                "pred_acc": info.get("pred_acc"), "pred_lat_ms": info.get("pred_lat_ms")})
        while not self.queue and not self.waiting:
            self._next_stage()

    def _close_stage(self) -> None:
        rows = [r for r in self.results if r["ok"] and r["pred_acc"] is not None]
        real = [r["reward"] if r["reward"] is not None else self._reward(r["acc"], r["lat"])
                for r in rows]
        pred = [self._reward(r["pred_acc"], r["pred_lat_ms"], r["target"]) for r in rows]
        rho = spearman(pred, real) if len(rows) >= 2 else float("nan")
        rho_acc = (spearman([r["pred_acc"] for r in rows], [r["acc"] for r in rows])
                   if len(rows) >= 2 else float("nan"))
        lat_rows = [r for r in rows if r["pred_lat_ms"] is not None]
        rho_lat = (spearman([r["pred_lat_ms"] for r in lat_rows], [r["lat"] for r in lat_rows])
                   if len(lat_rows) >= 2 else float("nan"))
        ok = [r for r in self.results if r["ok"]]
        report = {"stage": self.stage, "blocks": self.blocks, "children": len(self.results),
                  "complete": len(ok), "predicted": len(rows),
                  "spearman_reward": None if math.isnan(rho) else rho,
                  "spearman_acc": None if math.isnan(rho_acc) else rho_acc,
                  "spearman_lat": None if math.isnan(rho_lat) else rho_lat,
                  # the trials' own rewards (their targets), as the loop scored them
                  "best_reward": max((r["reward"] if r["reward"] is not None
                                      else self._reward(r["acc"], r["lat"]) for r in ok),
                                     default=None)}
        self.stage_spearman.append(report)
        log.info("pnas stage %d (%d-block cells): %d told, %d complete; surrogate Spearman "
                 "on its new children: reward %s, accuracy %s, latency %s", self.stage,
                 self.blocks, report["children"], report["complete"],
                 fmt_stat(report["spearman_reward"]), fmt_stat(report["spearman_acc"]),
                 fmt_stat(report["spearman_lat"]))

    def _next_stage(self) -> None:
        self._close_stage()
        ok = [r for r in self.results if r["ok"]]
        acc = np.array([r["acc"] for r in ok], dtype=float)
        lat = np.array([r["lat"] for r in ok], dtype=float)
        parents = [ok[i]["arch"] for i, _ in self._best(
            len(ok), lambda t: self._rewards(acc, lat, t), self.beam)]
        self._fit()
        self.stage += 1
        self.results = []
        if not parents:  # nothing of the stage completed: repeat it with fresh cells
            log.info("pnas stage %d: no child completed; repeating %d-block cells",
                     self.stage - 1, self.blocks)
            pool = self._fresh_pool(self.blocks)
        elif self.blocks < self.B:
            self.blocks += 1
            pool = self._expansions(parents)
        else:
            pool = self._continuation()
        self._queue_ranked(pool)

    def _rank_targets(self) -> list[float | None]:
        """The targets ranking serves: every told target (``rank="targets"``, unless
        ``target_ms`` fixes one), else the one T."""
        if self.rank == "targets" and not self.target_opt and self.targets_seen:
            return list(self.targets_seen)
        return [self.target]

    def _rewards(self, acc: np.ndarray, lat: np.ndarray | None, target: float | None
                 ) -> np.ndarray:
        """:meth:`_reward` of arrays."""
        t = target if target else self.target
        if self.latency_model == "none" or t is None or lat is None:
            return acc
        ok = lat > 0
        safe = np.where(ok, lat, t)
        return np.where(ok, acc * (safe / t) ** np.where(safe <= t, self.alpha, self.beta), acc)

    def _best(self, n_items: int, score: Any, k: int) -> list[tuple[int, float | None]]:
        """The best ``k`` of ``n_items`` by ``score(T)`` for the targets ranking serves
        (:func:`best_per_target`)."""
        return best_per_target(self._rank_targets(), n_items, score, k)

    def _fit(self) -> None:
        if len(self.data) < 2:
            return
        keys = list(self.data)
        X = np.stack([self._vector(k) for k in keys])
        acc = np.array([self.data[k][0] for k in keys])
        lat = np.array([self.data[k][1] for k in keys])
        # refit when a stage brought a cell size the last fit had not seen, else (rounds
        # at full size) once the data has grown by refit_growth: fits dominate the time
        due = (not self.surrogate.fitted or self.fit_blocks < self.blocks
               or len(keys) >= self.refit_growth * self.fit_size)
        if np.ptp(acc) > 0 and due:
            # at full size the cells' encoding is unchanged: go on from the last fit for
            # the new data's share of the epochs (warm), instead of all of them afresh
            warm = (self.warm and self.surrogate.fitted and self.fit_blocks == self.blocks
                    and self.fit_size > 0)
            steps = math.ceil(self.surrogate.epochs * (1 - self.fit_size / len(keys))) if warm else 0
            self.surrogate.fit(X, acc, warm_steps=max(steps, 1) if warm else 0)
            self.fit_size, self.fit_blocks = len(keys), self.blocks
        if self.latency_model == "linear":
            self.latency.fit(X[:, self.space.summary_columns], lat)

    def _expansions(self, parents: Sequence[str], pool: Pool | None = None) -> Pool:
        """Unasked one-block expansions of ``parents`` (all, or ``max_expand`` each)."""
        pool = pool if pool is not None else Pool()
        for p in parents:
            arch = self.space.canonical(self.space.decode(p))
            p = arch.encode()
            if self.space.cell_size(arch) >= self.B:
                continue
            keys, rows = self.space.grow(arch)
            idx = list(range(len(keys)))
            if self.max_expand and self.max_expand < len(idx):
                idx = sorted(self.rng.sample(idx, self.max_expand))
            pool.add_rows([i for i in idx if keys[i] not in self.asked], keys, rows, p)
        return pool

    def _continuation(self) -> Pool:
        """At B blocks: expansions of the best (B−1)-block cells and neighbours of the
        best B-block cells, unevaluated."""
        def best(size: int) -> list[str]:
            keys = [k for k in self.data if self._size(k) == size]
            acc = np.array([self.data[k][0] for k in keys], dtype=float)
            lat = np.array([self.data[k][1] for k in keys], dtype=float)
            return [keys[i] for i, _ in self._best(
                len(keys), lambda t: self._rewards(acc, lat, t), self.beam)]

        pool = self._expansions(best(self.B - 1)) if self.B > 1 else Pool()
        for parent in best(self.B):
            if parent not in self._nbrs:
                self._nbrs[parent] = self.space.neighbours(self.space.decode(parent))
            for key in self._nbrs[parent]:
                if key not in self.asked:
                    pool.add(key, self._vector(key), parent)
        return pool if pool.keys else self._fresh_pool(self.B)

    def _fresh_pool(self, b: int) -> Pool:
        """The unqueued reserve of this size, else random unasked cells."""
        pool = Pool()
        for e in self.reserve:
            if self._size(e["arch"]) == b:
                pool.add(e["arch"], self._vector(e["arch"]), None)
        while len(pool.keys) < self.beam:
            key = self._random_cell(b)
            if not pool.add(key, self._vector(key), None):
                break
        return pool

    def _predict_latency(self, pool: Pool, X: np.ndarray) -> np.ndarray | None:
        """The latency model, anchored on each candidate's measured parent: ``measured
        parent + model(child) − model(parent)``.

        Until cells of two sizes are measured the model cannot split the network's fixed
        cost from the ops' (every cell of one size has the same number of ops), so a new
        block's modelled cost is only known up to a constant and can come out negative.
        A cell never gets faster by growing a block: when the expansions' increments go
        below zero they are shifted so the cheapest is zero (identity and pooling blocks
        are nearly free), which keeps their order and their anchors."""
        if not self.latency.fitted:
            return None
        cols = self.space.summary_columns
        pred = self.latency.predict(X[:, cols], floor=False)
        parents = sorted({p for p in pool.parents if p is not None and p in self.data})
        if parents:
            own = self.latency.predict(np.stack([self._vector(p)[cols] for p in parents]),
                                       floor=False)
            f_parent = dict(zip(parents, own, strict=True))
            anchored = np.array([p in f_parent for p in pool.parents])
            inc = np.array([pred[i] - f_parent[p] if ok else 0.0
                            for i, (p, ok) in enumerate(zip(pool.parents, anchored,
                                                            strict=True))])
            grown = anchored & np.array(pool.grown)
            if grown.any() and inc[grown].min() < 0:
                inc[grown] -= inc[grown].min()
            base = np.array([self.data[p][1] if ok else 0.0
                             for p, ok in zip(pool.parents, anchored, strict=True)])
            pred = np.where(anchored, base + inc, pred)
        return np.maximum(pred, self.latency.floor)

    def _queue_ranked(self, pool: Pool) -> None:
        """Rank the pool by predicted reward; the top ``beam`` are the stage's children."""
        if not pool.keys:  # cannot happen while the space has an unasked cell; stay valid
            key = self._random_cell(self.blocks)
            pool.add(key, self._vector(key), None)
        X = pool.matrix()
        keep = self.beam * (1 + RESERVE_PER_BEAM)  # the queue and the reserve
        if self.surrogate.fitted:
            mu, sd = self.surrogate.predict(X)
            lat = self._predict_latency(pool, X)
            rewards: dict[float | None, np.ndarray] = {}

            def score(t: float | None) -> np.ndarray:
                if t not in rewards:
                    rewards[t] = self._rewards(mu, lat, t)
                return rewards[t]

            order = self._best(len(pool.keys), score, keep)
            multi = len(self._rank_targets()) > 1
            entries: list[dict[str, Any]] = []
            for i, t in order:
                e = {"arch": pool.keys[i], "pred_acc": float(mu[i]), "pred_std": float(sd[i]),
                     "pred_lat_ms": None if lat is None else float(lat[i]),
                     "pred_reward": float(score(t)[i])}
                if multi:
                    e["rank_target_ms"] = t
                entries.append(e)
        else:  # nothing to learn from yet: a random order
            entries = [{"arch": k} for k in pool.keys]
            self.rng.shuffle(entries)
        for rank, e in enumerate(entries):
            e["rank"] = rank
        self.queue = entries[: self.beam]
        self.reserve = entries[self.beam: keep]
        log.info("pnas stage %d: %d %d-block candidates ranked, %d queued", self.stage,
                 len(pool.keys), self.blocks, len(self.queue))

    # -- reporting and checkpoints -------------------------------------------------------------
    def first_learning(self) -> tuple[int, str] | None:  # the first fit follows stage 1
        return self.first_stage, "initial"

    def report(self) -> dict[str, Any]:
        """Where the search is and the surrogate's Spearman on each finished stage."""
        return {"stage": self.stage, "blocks": self.blocks, "scored": len(self.data),
                "stage_spearman": [dict(r) for r in self.stage_spearman]}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            target=self.target, targets_seen=list(self.targets_seen), fit_size=self.fit_size,
            fit_blocks=self.fit_blocks,
            stage=self.stage, blocks=self.blocks,
            queue=[dict(e) for e in self.queue], reserve=[dict(e) for e in self.reserve],
            waiting=sorted(self.waiting), pending={k: dict(v) for k, v in self.pending.items()},
            asked=sorted(self.asked), data=list(self.data.items()),
            results=[dict(r) for r in self.results],
            stage_spearman=[dict(r) for r in self.stage_spearman],
            surrogate=self.surrogate.state_dict(), latency=self.latency.state_dict(),
            predictor=self.predictor)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("predictor", "mlp") != self.predictor:
            raise ValueError(f"checkpoint has predictor={state.get('predictor', 'mlp')!r}, "
                             f"this strategy {self.predictor!r}: build it with the same options")
        super().load_state_dict(state)
        self.target = state["target"]
        self.targets_seen = list(state.get("targets_seen", []))
        self.fit_size = state.get("fit_size", 0)
        self.fit_blocks = state.get("fit_blocks", 0)
        self.stage, self.blocks = state["stage"], state["blocks"]
        self.queue = [dict(e) for e in state["queue"]]
        self.reserve = [dict(e) for e in state["reserve"]]
        self.waiting = set(state["waiting"])
        self.pending = {k: dict(v) for k, v in state["pending"].items()}
        self.asked = set(state["asked"])
        self.data = {k: tuple(v) for k, v in state["data"]}  # type: ignore[misc]
        self.results = [dict(r) for r in state["results"]]
        self.stage_spearman = [dict(r) for r in state["stage_spearman"]]
        self.surrogate.load_state_dict(state["surrogate"])
        self.latency.load_state_dict(state["latency"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "initial": self.initial, "beam": self.beam,
                "max_expand": self.max_expand, "members": self.surrogate.members,
                "hidden": self.surrogate.hidden, "epochs": self.surrogate.epochs,
                "latency_model": self.latency_model, "target_ms": self.target_opt,
                "alpha": self.alpha, "beta": self.beta, "rank": self.rank,
                "refit_growth": self.refit_growth, "warm": self.warm,
                "predictor": self.predictor}


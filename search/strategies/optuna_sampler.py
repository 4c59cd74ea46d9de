"""``optuna:<sampler>``: any Optuna sampler proposes children against both objectives.

Each decision of the space becomes a categorical parameter (its choice index), and an
in-memory Optuna study with directions (maximise accuracy, minimise latency) runs
ask/tell inside the strategy: ``ask`` opens study trials, ``tell`` closes them with
``[accuracy, latency_ms]`` — or as FAIL for a failed child. The loop's scalar reward is
not used: these samplers search the accuracy/latency front directly.

Samplers by short name or class name (``optuna:nsga2`` = ``optuna:NSGAIISampler``):
nsga2, nsga3, tpe, gp, random, qmc, bruteforce. ``sampler_options`` go to the sampler's
constructor (e.g. ``{"population_size": 20}`` for NSGA-II); ``seed`` is always passed.
Two defaults depart from Optuna's (``sampler_options`` override them): ``qmc`` uses
``scramble=True`` so that different seeds give different points, and ``tpe`` uses
``multivariate=True`` (one joint Parzen estimator over all decisions instead of one per
decision). Measured on the nb201 table (``benchmarks/strategies.py``, raspi4 column,
seeds 0–9, hypervolume ratio at 50/100/200 children): independent 0.9529 / 0.9764 /
0.9821, multivariate 0.9589 / 0.9787 / 0.9881; and a 1,000-child search costs a third
of the CPU time (Optuna's TPE re-reads and splits every past trial on each sample, and
the independent sampler does it once per decision).
CmaEsSampler is single-objective only and GridSampler / PartialFixedSampler need a
hand-made configuration, so they are refused with a clear message. ``gp`` works but is
slow on CPU in the two-objective setting (seconds per child once its start-up trials
are done), so it is not among the :data:`OptunaStrategy.variants` that
``strategy_names()`` lists (and the conformance suite runs).

Resume: ``state_dict`` pickles the in-memory storage (all trials, including ones asked
but not told, and the study's system attributes that NSGA-II keeps its generations in)
together with the sampler object (its RNG state and caches). Loading restores both, so
the next asks are bit-identical to an uninterrupted run for every listed sampler. The
snapshot is tied to the installed Optuna version (it is a pickle of Optuna objects).

A trial told without a matching ask (e.g. from an earlier run) is added to the study
as a finished trial, so the sampler learns from it too.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

from mnas.trial import Trial
from search import safe_pickle
from search.base import Candidate, Strategy, register_strategy

#: short name → optuna.samplers class name
SHORT_NAMES: dict[str, str] = {
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "bruteforce": "BruteForceSampler",
    "cmaes": "CmaEsSampler",      # refused below, with the reason
    "grid": "GridSampler",
}
#: samplers that exist but cannot drive this two-objective search as configured here
REFUSED: dict[str, str] = {
    "CmaEsSampler": "supports single-objective studies only",
    "GridSampler": "needs an explicit search-space grid",
    "PartialFixedSampler": "wraps another sampler with fixed parameters",
    "BaseSampler": "is abstract",
    "BaseGASampler": "is abstract",
}
#: our defaults where Optuna's would make the seed meaningless (unscrambled Sobol points
#: are the same for every seed) or measured worse and slower here (independent TPE);
#: ``sampler_options`` override them
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"QMCSampler": {"scramble": True},
                                              "TPESampler": {"multivariate": True}}
DIRECTIONS = ("maximize", "minimize")


def _valid_names() -> str:
    usable = {k: v for k, v in SHORT_NAMES.items() if v not in REFUSED}
    return ", ".join([*usable, *usable.values()])


def sampler_class(name: str) -> type:
    """The ``optuna.samplers`` class for a short or class name; ValueError listing the
    valid names otherwise."""
    import optuna

    cls_name = SHORT_NAMES.get(str(name).lower(), str(name))
    if cls_name in REFUSED:
        raise ValueError(f"optuna sampler {name!r} {REFUSED[cls_name]}; valid: {_valid_names()}")
    cls = getattr(optuna.samplers, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ValueError(f"unknown optuna sampler {name!r}; valid: {_valid_names()}")
    return cls


@register_strategy
class OptunaStrategy(Strategy):
    """An Optuna sampler over the space's decisions, two objectives, in-memory study."""

    name = "optuna"
    variant_option = "sampler"
    variants = ("nsga2", "nsga3", "qmc", "random", "tpe")

    def __init__(self, space: Any, seed: int = 0, sampler: str = "nsga2",
                 sampler_options: dict[str, Any] | None = None) -> None:
        super().__init__(space, seed=seed)
        import optuna

        self._optuna = optuna
        self.sampler_name = sampler
        if not isinstance(sampler_options, dict | None):
            raise ValueError(f"sampler_options must be a dict of the sampler's keyword "
                             f"arguments, got {sampler_options!r}")
        self.sampler_options = dict(sampler_options or {})
        cls = sampler_class(sampler)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per told trial
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                options = {**DEFAULT_OPTIONS.get(cls.__name__, {}), **self.sampler_options}
                self.sampler = cls(seed=seed, **options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"optuna sampler {cls.__name__} rejects options "
                             f"{self.sampler_options}: {e}") from None
        self.study = optuna.create_study(directions=list(DIRECTIONS), sampler=self.sampler,
                                         study_name="mnas-strategy")
        #: optuna trial number → choices, for trials asked and not yet told
        self.pending: dict[int, tuple[int, ...]] = {}
        self._param_cache: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}

    def preflight(self) -> None:
        """Options of the wrong type (``"3"`` for 3) fail inside Optuna only when it first
        samples: try two samples on a throwaway study with a fresh sampler first."""
        if not self.sampler_options:
            return
        cls = type(self.sampler)
        options = {**DEFAULT_OPTIONS.get(cls.__name__, {}), **self.sampler_options}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = self._optuna.create_study(directions=list(DIRECTIONS),
                                                  sampler=cls(seed=self.seed, **options))
                for _ in range(2):
                    trial = study.ask()
                    for name, dist in self._params(0):
                        trial.suggest_categorical(name, dist.choices)
                    study.tell(trial, [0.5, 1.0])
        except Exception as e:  # noqa: BLE001 - whatever the sampler raises is the user's answer
            raise ValueError(f"optuna sampler {cls.__name__} fails with options "
                             f"{self.sampler_options}: {type(e).__name__}: {e}") from None

    # -- decisions as parameters -----------------------------------------------------
    def _params(self, children_seen: int) -> list[tuple[str, Any]]:
        ds = self.space.decisions(children_seen)
        if ds not in self._param_cache:  # a growing space has one entry per depth
            names = [d.name for d in ds]
            unique = len(set(names)) == len(names)
            dist = self._optuna.distributions.CategoricalDistribution
            self._param_cache[ds] = [(d.name if unique else f"{i}:{d.name}",
                                      dist(list(range(d.size)))) for i, d in enumerate(ds)]
        return self._param_cache[ds]

    def ask(self, n: int = 1) -> list[Candidate]:
        if isinstance(n, bool) or int(n) < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        out = []
        for _ in range(int(n)):
            trial = self.study.ask()
            choices = tuple(int(trial.suggest_categorical(name, dist.choices))
                            for name, dist in self._params(self.children_seen))
            self.pending[trial.number] = choices
            self.children_seen += 1
            out.append(self.candidate(choices, optuna_trial=trial.number))
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        TS = self._optuna.trial.TrialState
        for t in trials:
            choices = tuple(int(c) for c in t.choices)
            values = None
            if (t.ok and t.accuracy is not None and t.latency_ms is not None
                    and math.isfinite(t.accuracy) and math.isfinite(t.latency_ms)):
                values = [float(t.accuracy), float(t.latency_ms)]
            number = self._match(t, choices)
            if number is None:
                self._add_foreign(choices, values)
                continue
            del self.pending[number]
            if values is None:
                self.study.tell(number, state=TS.FAIL)
            else:
                self.study.tell(number, values)

    def _match(self, t: Trial, choices: tuple[int, ...]) -> int | None:
        number = (t.meta or {}).get("optuna_trial")
        if isinstance(number, int) and self.pending.get(number) == choices:
            return number
        # the oldest pending ask with these choices (meta may not survive every path)
        return next((k for k, c in self.pending.items() if c == choices), None)

    def _add_foreign(self, choices: tuple[int, ...], values: list[float] | None) -> None:
        params = self._params(max(self.children_seen - 1, 0))
        if len(params) != len(choices):
            return  # shaped for another depth of a growing space: nothing to learn from
        ft = self._optuna.trial.create_trial(
            params={name: c for (name, _), c in zip(params, choices, strict=True)},
            distributions=dict(params),
            values=values,
            state=self._optuna.trial.TrialState.COMPLETE if values is not None
            else self._optuna.trial.TrialState.FAIL)
        self.study.add_trial(ft)

    # -- checkpoint ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["optuna"] = pickle.dumps((self.study._storage, self.sampler, self.study.study_name,
                                        dict(self.pending)))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # checkpoint bytes: Optuna's objects are rebuilt, no other code runs
        storage, sampler, study_name, pending = safe_pickle.loads(state["optuna"])
        self.sampler = sampler
        self.study = self._optuna.load_study(study_name=study_name, storage=storage,
                                             sampler=sampler)
        self.pending = pending

    def first_learning(self) -> tuple[int, str] | None:
        # Optuna keeps these private; a sampler without either is not told here
        for attr in ("_n_startup_trials", "_population_size"):
            n = getattr(self.sampler, attr, None)
            if isinstance(n, int):
                return n, f"sampler_options={{\"{attr[1:]}\": N}}"
        return None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "sampler": self.sampler_name,
                "sampler_options": self.sampler_options}

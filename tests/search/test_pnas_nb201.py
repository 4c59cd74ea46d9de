"""PNAS on nb201 (the real table): cells grow node by node (stages of the 5 one-node
cells, then the beam's top-K expansions), the surrogate ranks before scoring, per-target
ranking shares the beam between targets, refitting on a schedule, and the full-size
rounds go on to any budget."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from mnas.evaluate import make_accuracy, make_latency
from mnas.reward import Reward
from mnas.spaces import get_space
from mnas.trial import Trial
from search.base import get_strategy

TABLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"
SPACE = get_space("nb201")
ACC = make_accuracy(f"table:{TABLE}#cifar100_acc")
LAT = make_latency(f"table:{TABLE}#raspi4_ms")
TARGETS = (5.0, 10.0, 20.0)
FAST = {"members": 2, "epochs": 60}


def run(st, budget: int, batch: int = 1) -> list[Trial]:
    trials: list[Trial] = []
    while len(trials) < budget:
        told = []
        for c in st.ask(min(batch, budget - len(trials))):
            n = len(trials) + len(told)
            arch = SPACE.decode(c.arch)
            r = Reward(TARGETS[n % 3])
            acc, lat = ACC(SPACE, arch), LAT(SPACE, arch).median_ms
            told.append(Trial(number=n, arch=c.arch, choices=c.choices, target_ms=r.target_ms,
                              accuracy=acc, latency_ms=lat, reward=r(acc, lat), meta=c.meta))
        trials += told
        st.tell(told)
    return trials


def test_stages_grow_node_by_node_on_the_table():
    st = get_strategy("pnas", SPACE, seed=0, beam=6, **FAST)
    trials = run(st, 5 + 6 * 4)
    sizes = [SPACE.cell_size(SPACE.decode(t.arch)) for t in trials]
    assert sizes[:5] == [1] * 5 and sizes[5:11] == [2] * 6 and sizes[11:17] == [3] * 6
    assert [t.meta["blocks"] for t in trials] == [1] * 5 + [2] * 6 + [3] * 18
    assert len({t.arch for t in trials}) == len(trials)
    # 2-node children extend a stage-1 parent among the beam (all 5 here)
    ones = {t.arch.split("+")[0] for t in trials[:5]}
    assert all(t.arch.split("+")[0] in ones for t in trials[5:11])
    assert all("pred_acc" in t.meta and "pred_lat_ms" in t.meta for t in trials[5:])
    rep = st.report()
    assert [r["blocks"] for r in rep["stage_spearman"]] == [1, 2, 3, 3, 3]
    assert all(r["spearman_acc"] is None or -1 <= r["spearman_acc"] <= 1
               for r in rep["stage_spearman"])


def test_per_target_ranking_shares_the_beam_and_resumes():
    st = get_strategy("pnas", SPACE, seed=1, beam=6, rank="targets", alpha=0.0, beta=-1.0,
                      **FAST)
    trials = run(st, 5 + 6)
    assert st.targets_seen == list(TARGETS)
    # the beam is shared round-robin: two children ranked for each target
    assert sorted(t.meta["rank_target_ms"] for t in trials[5:]) == sorted(TARGETS * 2)
    # a child ranked for 5 ms is predicted faster than its stage-mates ranked for 20 ms
    fast = [t.meta["pred_lat_ms"] for t in trials[5:] if t.meta["rank_target_ms"] == 5.0]
    slow = [t.meta["pred_lat_ms"] for t in trials[5:] if t.meta["rank_target_ms"] == 20.0]
    assert min(slow) > max(fast)
    clone = get_strategy("pnas", SPACE, seed=1, beam=6, rank="targets", alpha=0.0, beta=-1.0,
                         **FAST)
    clone.load_state_dict(pickle.loads(pickle.dumps(st.state_dict())))
    assert [c.arch for c in clone.ask(6)] == [c.arch for c in st.ask(6)]


def test_refit_growth_skips_fits_at_full_size_only_and_those_go_on_warm():
    every = get_strategy("pnas", SPACE, seed=2, beam=4, refit_growth=1.0, **FAST)
    sparse = get_strategy("pnas", SPACE, seed=2, beam=4, refit_growth=2.0, **FAST)
    cold = get_strategy("pnas", SPACE, seed=2, beam=4, refit_growth=1.0, warm=False, **FAST)
    fits, warm = {}, {}
    for name, st in (("every", every), ("sparse", sparse), ("cold", cold)):
        sizes, steps = [], []
        original = st.surrogate.fit

        def fit(X, y, warm_steps=0, original=original, sizes=sizes, steps=steps):
            sizes.append(len(X))
            steps.append(warm_steps)
            return original(X, y, warm_steps=warm_steps)

        st.surrogate.fit = fit
        run(st, 5 + 4 * 8)
        fits[name], warm[name] = sizes, steps
    assert fits["every"] == fits["cold"] == list(range(5, 38, 4))  # every stage, the last too
    # each new cell size refits (13: the first 3-node cells); then once the data doubled
    assert fits["sparse"] == [5, 9, 13, 29]
    assert sparse.config()["refit_growth"] == 2.0
    # a new cell size fits afresh; at full size a refit goes on from the last fit for the
    # new rows' share of the epochs
    epochs = FAST["epochs"]
    sizes = fits["every"]
    assert warm["every"] == [0, 0, 0] + [math.ceil(epochs * (1 - a / b))
                                         for a, b in zip(sizes[2:-1], sizes[3:], strict=True)]
    assert warm["sparse"] == [0, 0, 0, math.ceil(epochs * (1 - 13 / 29))]
    assert warm["cold"] == [0] * len(sizes) and cold.config()["warm"] is False


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown rank 'pareto'; valid: reward, targets"):
        get_strategy("pnas", SPACE, rank="pareto")
    with pytest.raises(ValueError, match="refit_growth must be >= 1"):
        get_strategy("pnas", SPACE, refit_growth=0.5)

"""PNAS: the surrogate learns, the strategy progresses 1 → B blocks, beats random on a
structured synthetic reward, tolerates failures and resumes exactly with growing cells."""

from __future__ import annotations

import pickle
import random
import statistics

import numpy as np
import pytest

from mnas.decisions import validate_choices
from mnas.reward import Reward
from mnas.spaces import get_space
from mnas.spaces.pnas import PnasSpace
from mnas.trial import Trial
from search.base import get_strategy
from search.surrogate import MLPEnsemble, RidgeLatency, spearman
from tests.search import test_conformance as conformance

SPACE = get_space("pnas")
REWARD = Reward(20.0)
FAST = {"members": 3, "epochs": 100}
# a structured synthetic task: each op has a quality and a cost; reading h_i helps a bit
QUALITY = {op: i / 7 for i, op in enumerate(SPACE.OPS)}
COST = {op: 0.5 + (i % 4) for i, op in enumerate(SPACE.OPS)}


def synthetic(arch) -> tuple[float, float]:
    quality = sum(QUALITY[b.op1] + QUALITY[b.op2] for b in arch.blocks)
    acc = 0.1 + 0.8 * quality / (2 * SPACE.blocks) + 0.01 * sum(b.in1 == 0 for b in arch.blocks)
    lat = 2.0 + sum(COST[b.op1] + COST[b.op2] for b in arch.blocks)
    return acc, lat


def score(number, cand, fail=False) -> Trial:
    t = Trial(number=number, arch=cand.arch, choices=cand.choices, target_ms=REWARD.target_ms,
              meta=dict(cand.meta))
    if fail:
        t.state, t.reason = "failed", "synthetic failure"
        return t
    t.accuracy, t.latency_ms = synthetic(SPACE.decode(cand.arch))
    t.reward = REWARD(t.accuracy, t.latency_ms)
    return t


def run(strategy, budget, batch=4):
    trials: list[Trial] = []
    while len(trials) < budget:
        cands = strategy.ask(min(batch, budget - len(trials)))
        told = [score(len(trials) + i, c) for i, c in enumerate(cands)]
        trials += told
        strategy.tell(told)
    return trials


def random_cells(rng, b, n):
    return [SPACE.from_choices([rng.randrange(d.size) for d in SPACE.decisions_for_blocks(b)])
            for _ in range(n)]


# -- surrogate ---------------------------------------------------------------------------
def test_spearman_matches_a_hand_computed_value_with_ties():
    # ranks x: 1, 2.5, 2.5, 4; y: 2, 1, 3, 4 -> Pearson of the ranks
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([2, 1, 3, 4])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman([0.1, 0.5, 0.5, 0.9], [20, 10, 30, 40]) == pytest.approx(expected)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1], [1, 2])) and np.isnan(spearman([1], [2]))


def test_ensemble_learns_structure_and_generalizes_one_block_larger():
    rng = random.Random(0)
    train = random_cells(rng, 1, 30) + random_cells(rng, 2, 20)
    test = random_cells(rng, 3, 200)
    X = np.stack([SPACE.vector(a) for a in train])
    y = [synthetic(a)[0] for a in train]
    model = MLPEnsemble(seed=0, **FAST).fit(X, y)
    mu, sd = model.predict(np.stack([SPACE.vector(a) for a in test]))
    rho = spearman(mu, [synthetic(a)[0] for a in test])
    print(f"surrogate Spearman on 200 unseen 3-block cells (fit on 1-2 blocks): {rho:.3f}")
    assert rho > 0.5
    assert mu.shape == sd.shape == (200,) and (sd > 0).all()
    # deterministic under the seed, exact through state_dict
    again = MLPEnsemble(seed=0, **FAST).fit(X, y).predict(X)[0]
    np.testing.assert_array_equal(again, model.predict(X)[0])
    clone = MLPEnsemble(seed=123, **FAST)
    clone.load_state_dict(pickle.loads(pickle.dumps(model.state_dict())))
    np.testing.assert_array_equal(clone.predict(X)[0], model.predict(X)[0])
    other = MLPEnsemble(seed=1, **FAST).fit(X, y).predict(X)[0]
    assert not np.array_equal(other, model.predict(X)[0])


def test_warm_refit_starts_from_the_fitted_function_and_learns_the_new_rows():
    rng = random.Random(1)
    old = random_cells(rng, 2, 40)
    new = random_cells(rng, 2, 10)
    X_old = np.stack([SPACE.vector(a) for a in old])
    X = np.stack([SPACE.vector(a) for a in old + new])
    y_old = np.array([synthetic(a)[0] for a in old])
    # the new rows move the targets' mean and spread, so the targets are rescaled
    y = np.concatenate([y_old, [synthetic(a)[0] + 0.3 for a in new]])
    model = MLPEnsemble(seed=0, **FAST).fit(X_old, y_old)
    before = model.predict(X)[0]
    still = MLPEnsemble(seed=0, **FAST).fit(X_old, y_old)
    still.lr = 1e-12                   # one step that moves nothing: the rescaling is exact
    np.testing.assert_allclose(still.fit(X, y, warm_steps=1).predict(X)[0], before,
                               atol=1e-9)
    warm = model.fit(X, y, warm_steps=40)
    err_new = np.abs(warm.predict(X[40:])[0] - y[40:]).mean()
    assert err_new < 0.5 * np.abs(before[40:] - y[40:]).mean()
    # more columns than the fitted ensemble: a fresh fit, as if warm_steps were 0
    wide = np.hstack([X, np.ones((len(X), 1))])
    fresh = MLPEnsemble(seed=0, **FAST).fit(X_old, y_old)
    fresh.rng = np.random.default_rng(7)
    ref = MLPEnsemble(seed=0, **FAST).fit(X_old, y_old)
    ref.rng = np.random.default_rng(7)
    np.testing.assert_array_equal(fresh.fit(wide, y, warm_steps=5).predict(wide)[0],
                                  ref.fit(wide, y).predict(wide)[0])


def test_surrogate_and_latency_model_reject_bad_input():
    with pytest.raises(ValueError, match="predict before fit"):
        MLPEnsemble().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        MLPEnsemble().fit(np.zeros((3, 4)), [1, 2])
    with pytest.raises(ValueError, match="members must be >= 1"):
        MLPEnsemble(members=0)
    with pytest.raises(ValueError, match="latencies must be > 0"):
        RidgeLatency().fit(np.eye(2), [1.0, 0.0])


def test_ridge_latency_recovers_an_additive_cost_model():
    rng = random.Random(1)
    cells = [a for b in (1, 2, 3) for a in random_cells(rng, b, 25)]
    cols = SPACE.summary_columns
    X = np.stack([SPACE.vector(a)[cols] for a in cells])
    lat = [synthetic(a)[1] for a in cells]
    model = RidgeLatency().fit(X, lat)
    test = random_cells(rng, 4, 100)  # one block larger than anything it saw
    pred = model.predict(np.stack([SPACE.vector(a)[cols] for a in test]))
    real = np.array([synthetic(a)[1] for a in test])
    rho, err = spearman(pred, real), float(np.median(np.abs(pred - real) / real))
    print(f"latency model on 4-block cells: Spearman {rho:.3f}, median error {err:.1%}")
    assert rho > 0.9 and err < 0.05
    clone = RidgeLatency()
    clone.load_state_dict(pickle.loads(pickle.dumps(model.state_dict())))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


# -- strategy ---------------------------------------------------------------------------
def test_stages_grow_one_block_at_a_time_and_report_spearman():
    st = get_strategy("pnas", SPACE, seed=0, initial=8, beam=4, **FAST)
    trials = run(st, 8 + 4 * 4 + 4)
    blocks = [t.meta["blocks"] for t in trials]
    assert blocks == [1] * 8 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [5] * 4
    assert [len(SPACE.decode(t.arch).blocks) for t in trials] == blocks
    assert [t.meta["stage"] for t in trials] == [1] * 8 + sum(([s] * 4 for s in range(2, 7)), [])
    assert len({t.arch for t in trials}) == len(trials)  # nothing proposed twice
    # from stage 2 on, every child was ranked by the surrogate before it was scored
    assert all("pred_acc" in t.meta and "pred_lat_ms" in t.meta for t in trials[8:])
    assert all(t.meta["origin"] == "pnas" and t.meta["rank"] < 4 for t in trials[8:])
    # expansions extend a stage's parents: each 2-block child starts with a 1-block cell
    stage1 = {t.arch: t.latency_ms for t in trials[:8]}
    parents = [t.arch[: t.arch.index("]") + 1] for t in trials[8:12]]
    assert all(p in stage1 for p in parents)
    # latency anchored on the measured parent, and never below it (a block is not free
    # to remove): stage 2 is predicted from 1-block cells only
    assert all(t.meta["pred_lat_ms"] >= stage1[p] - 1e-9
               for t, p in zip(trials[8:12], parents, strict=True))
    rep = st.report()
    assert [r["blocks"] for r in rep["stage_spearman"]] == [1, 2, 3, 4, 5, 5]
    assert rep["stage_spearman"][0]["spearman_reward"] is None  # nothing predicted yet
    # None only where the stage's real accuracies tie (undefined ranks)
    rhos = [r["spearman_acc"] for r in rep["stage_spearman"][1:]]
    assert rhos[0] is not None and all(r is None or -1 <= r <= 1 for r in rhos)
    for r, n in zip(rep["stage_spearman"][1:], range(8, 28, 4), strict=True):
        accs = {t.accuracy for t in trials[n:n + 4]}
        assert (r["spearman_acc"] is None) == (len(accs) == 1)
    assert rep["blocks"] == 5 and rep["scored"] == len(trials)


def test_latency_predictions_rank_each_stages_children():
    # the synthetic latency is additive in op costs; from 1-block cells alone the model
    # cannot know a block's base cost, but anchored increments still rank the children
    st = get_strategy("pnas", SPACE, seed=0, initial=24, beam=8, **FAST)
    run(st, 24 + 8 + 8)
    lat = [r["spearman_lat"] for r in st.stage_spearman]
    print("latency Spearman per stage:", lat)
    assert lat[0] is None and lat[1] > 0.8 and lat[2] > 0.7


def test_finds_a_clearly_better_cell_than_random_search():
    budget = 60
    pnas = [max(t.reward for t in run(get_strategy(
        "pnas", SPACE, seed=s, initial=12, beam=8, **FAST), budget)) for s in range(3)]
    rand = [max(t.reward for t in run(get_strategy("random", SPACE, seed=s), budget))
            for s in range(10)]
    print(f"best reward in {budget} children: pnas {pnas}, random median "
          f"{statistics.median(rand):.3f} max {max(rand):.3f}")
    assert statistics.mean(pnas) > statistics.mean(rand) + 0.05
    assert min(pnas) > statistics.median(rand)


def test_asks_beyond_the_queue_and_failed_trials():
    st = get_strategy("pnas", SPACE, seed=3, initial=4, beam=2, **FAST)
    first = st.ask(7)  # more than stage 1's queue, before any tell
    assert [c.meta["origin"] for c in first] == ["initial"] * 4 + ["overflow"] * 3
    assert all(len(SPACE.decode(c.arch).blocks) == 1 for c in first)
    st.tell([score(i, c) for i, c in enumerate(first[:4])])  # the queue: stage ends
    assert st.stage == 2 and st.blocks == 2
    st.tell([score(4 + i, c) for i, c in enumerate(first[4:])])  # late overflow: data only
    assert st.stage == 2 and len(st.data) == 7
    # a stage whose children all fail is repeated with fresh cells of the same size
    kids = st.ask(2)
    st.tell([score(10 + i, c, fail=True) for i, c in enumerate(kids)])
    assert st.stage == 3 and st.blocks == 2 and len(st.data) == 7
    assert st.stage_spearman[-1]["complete"] == 0
    again = st.ask(2)
    assert all(len(SPACE.decode(c.arch).blocks) == 2 for c in again)
    assert not {c.arch for c in again} & {c.arch for c in kids}
    st.tell([score(20 + i, c) for i, c in enumerate(again)])
    assert st.blocks == 3


def test_options_and_space_are_checked():
    with pytest.raises(TypeError, match="needs a space with Progressive; 'nasnet' has none"):
        get_strategy("pnas", get_space("nasnet"))
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        get_strategy("pnas", SPACE, beam=0)
    with pytest.raises(ValueError, match="unknown latency_model 'lut'; valid: linear, none"):
        get_strategy("pnas", SPACE, latency_model="lut")


def check_growing_candidate(space, cand, seen_before, seen_after):
    """The conformance check for cells shorter than ``decisions()``: each candidate must
    fit the decisions of its own size."""
    arch = space.from_choices(cand.choices)
    assert arch.encode() == cand.arch and space.decode(cand.arch) == arch
    validate_choices(space.decisions_for_blocks(len(arch.blocks)), cand.choices)


@pytest.mark.parametrize("predictor", ["mlp", "lstm"])
def test_conformance_drive_with_growing_cells(monkeypatch, predictor):
    """The conformance suite's own async ask/tell schedule (failures, shuffled partial
    tells, pickled resume) on a 3-block space, where stage cells are shorter than
    ``decisions()``, with either accuracy predictor."""
    monkeypatch.setattr(conformance, "check_candidate", check_growing_candidate)
    space = PnasSpace(blocks=3)
    opts = {**conformance.FAST_OPTIONS["pnas"], "predictor": predictor}

    def make():
        return get_strategy("pnas", space, seed=conformance.SEED, **opts)

    scorer = conformance.Scorer("pnas")
    mid = conformance.ROUNDS // 2
    a = make()
    run_a = conformance.drive(a, space, scorer, checkpoint_at=mid)
    assert a.stage >= 3 and max(len(c) for b in run_a["log"] for c in b) > 7  # it grew
    assert a.config()["predictor"] == predictor and a.surrogate.fitted
    run_b = conformance.drive(make(), space, scorer)
    assert run_a["log"] == run_b["log"]
    state, outstanding, number = pickle.loads(run_a["state"])
    c = make()
    c.load_state_dict(state)
    resumed = conformance.drive(c, space, scorer, mid + 1, outstanding, number)
    assert resumed["log"] == run_a["log"][mid + 1:]
    assert c.report() == a.report()

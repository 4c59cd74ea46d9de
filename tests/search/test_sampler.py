"""The batched NumPy sampler (search.sampler): many children at once, each with the
log-probability and entropy the torch evaluator gives it, from the evaluated
distribution, and n = 1 drawing exactly what one-at-a-time sampling draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from tests.search.test_controller import LISTS, NASNET_LIKE, all_choices, controller


@pytest.mark.parametrize("name", sorted(LISTS))
@pytest.mark.parametrize("layers", [1, 2])
def test_batch_rows_match_evaluate(name, layers):
    ds = LISTS[name]
    ctl = controller(ds, hidden=6, layers=layers, init_range=1.0, seed=3)
    choices, logps, ent = ctl.sample_batch(ds, np.random.default_rng(0), 40)
    assert choices.shape == logps.shape == (40, len(ds)) and ent.shape == (40,)
    with torch.no_grad():
        per, en = ctl.evaluate(ds, choices.tolist(), per_step=True)
    assert np.allclose(per.double().numpy(), logps, atol=1e-5)
    assert np.allclose(en.double().numpy(), ent, atol=1e-5)
    assert len({tuple(c) for c in choices.tolist()}) > 1     # rows are drawn independently


def test_one_at_a_time_equals_batch_of_one():
    ds = LISTS["mixed"]
    ctl = controller(ds, hidden=6, layers=2, init_range=1.0, seed=1)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(10):
        choices, lp, en = ctl.sample(ds, g1, per_step=True)
        c, lps, ens = ctl.sample_batch(ds, g2, 1)
        assert choices == tuple(c[0].tolist())
        assert np.array_equal(lp, lps[0]) and en == ens[0]
    assert g1.random() == g2.random()        # the same number of draws


def test_batch_draws_from_the_evaluated_distribution():
    ds = NASNET_LIKE + (LISTS["mixed"][2],)      # pointers, categoricals and a subset
    ctl = controller(ds, hidden=6, layers=1, init_range=1.0, seed=7)
    combos = all_choices(ds)
    with torch.no_grad():
        p = ctl.evaluate(ds, combos)[0].double().exp().numpy()
    choices, _, _ = ctl.sample_batch(ds, np.random.default_rng(2), 8000)
    index = {c: i for i, c in enumerate(combos)}
    counts = np.bincount([index[tuple(c)] for c in choices.tolist()], minlength=len(combos))
    assert chisquare(counts, p / p.sum() * 8000).pvalue > 1e-3


def test_empty_and_bad_n():
    ds = LISTS["one"]
    ctl = controller(ds, hidden=4, layers=1, init_range=0.5, seed=0)
    c, lp, en = ctl.sample_batch(ds, np.random.default_rng(0), 0)
    assert c.shape == (0, 1) and lp.shape == (0, 1) and en.shape == (0,)
    with pytest.raises(ValueError, match="n must be >= 0"):
        ctl.sample_batch(ds, np.random.default_rng(0), -1)

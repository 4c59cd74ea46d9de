"""The LSTM ensemble predictor (PNAS's other predictor): reads a cell's blocks as a
sequence, generalises one block larger, is exact through its state and warm refits, and
is what the ``pnas`` strategy builds for ``predictor="lstm"``."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from mnas.spaces import get_space
from search.base import get_strategy
from search.surrogate import spearman
from search.surrogate_lstm import LSTMEnsemble
from tests.search.test_pnas import SPACE, random_cells, synthetic

FAST = {"members": 3, "epochs": 100, "lr": 1e-2}


def _lstm(space=SPACE, **kw) -> LSTMEnsemble:
    return LSTMEnsemble(space.token_width, space.summary_columns.start, **{**FAST, **kw})


def _data(seed: int, sizes: dict[int, int]) -> tuple[list, np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    cells = [c for b, n in sizes.items() for c in random_cells(rng, b, n)]
    return (cells, np.stack([SPACE.vector(a) for a in cells]),
            np.array([synthetic(a)[0] for a in cells]))


def test_a_cell_is_one_token_per_block():
    cells, X, _ = _data(0, {1: 2, 2: 2, 3: 2})
    seq, lengths = _lstm()._sequences(X)
    assert seq.shape == (6, SPACE.blocks, SPACE.token_width)
    assert lengths.tolist() == [len(a.blocks) for a in cells] == [1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="not a multiple of token_width"):
        LSTMEnsemble(7, 30)
    with pytest.raises(ValueError, match="predict before fit"):
        _lstm().predict(X)


def test_learns_structure_and_generalises_one_block_larger():
    _, X, y = _data(0, {1: 30, 2: 20})
    test, Xt, yt = _data(1, {3: 200})
    model = _lstm(seed=0).fit(X, y)
    mu, sd = model.predict(Xt)
    rho = spearman(mu, yt)
    print(f"LSTM Spearman on 200 unseen 3-block cells (fit on 1-2 blocks): {rho:.3f}")
    assert rho > 0.5
    assert mu.shape == sd.shape == (200,) and (sd > 0).all()
    # it reads the blocks only: the size-free summary columns change nothing
    noisy = Xt.copy()
    noisy[:, SPACE.summary_columns] = np.random.default_rng(0).normal(
        size=noisy[:, SPACE.summary_columns].shape)
    np.testing.assert_array_equal(model.predict(noisy)[0], mu)
    # deterministic under the seed, exact through state_dict, different for another seed
    np.testing.assert_array_equal(_lstm(seed=0).fit(X, y).predict(Xt)[0], mu)
    clone = _lstm(seed=5)
    clone.load_state_dict(pickle.loads(pickle.dumps(model.state_dict())))
    np.testing.assert_array_equal(clone.predict(Xt)[0], mu)
    assert not np.array_equal(_lstm(seed=1).fit(X, y).predict(Xt)[0], mu)


def test_warm_refit_starts_from_the_fitted_function():
    _, X_old, y_old = _data(2, {2: 40})
    _, X_new, y_new = _data(3, {2: 10})
    X, y = np.vstack([X_old, X_new]), np.concatenate([y_old, y_new + 0.3])
    model = _lstm(seed=0).fit(X_old, y_old)
    before = model.predict(X)[0]
    model.lr = 1e-12            # one step that moves nothing: the target rescaling is exact
    np.testing.assert_allclose(model.fit(X, y, warm_steps=1).predict(X)[0], before, atol=1e-5)
    model.lr = FAST["lr"]
    warm = model.fit(X, y, warm_steps=60)
    assert np.abs(warm.predict(X_new)[0] - y[40:]).mean() < \
        0.5 * np.abs(before[40:] - y[40:]).mean()


def test_pnas_option_builds_the_lstm_and_checkpoints_name_their_predictor():
    """(The ask/tell/resume drive with ``predictor="lstm"`` is in test_pnas.)"""
    space = get_space("pnas", blocks=3)
    lstm = get_strategy("pnas", space, seed=0, predictor="lstm")
    assert isinstance(lstm.surrogate, LSTMEnsemble)
    assert lstm.surrogate.token_width == space.token_width
    assert lstm.surrogate.tokens_end == space.summary_columns.start
    state = pickle.loads(pickle.dumps(lstm.state_dict()))
    mlp = get_strategy("pnas", space, seed=0)
    with pytest.raises(ValueError, match="checkpoint has predictor='lstm'"):
        mlp.load_state_dict(state)
    with pytest.raises(ValueError, match="unknown predictor 'rnn'; valid: mlp, lstm"):
        get_strategy("pnas", space, predictor="rnn")

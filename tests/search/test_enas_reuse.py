"""``enas`` ``supernet_from``: a search takes another run's trained supernet (train once,
search many devices), checked against its options, read without running its code."""

from __future__ import annotations

import pickle
import random

import pytest
import torch

from search.base import get_strategy
from search.strategies.enas import Enas
from tests.search.test_enas import TINY, _space


def _trained(tmp_path, **opts):
    """An nb201 enas run's strategy.ckpt after two asks (the loop's file format)."""
    space = _space("nb201")
    src = Enas(space, seed=0, **{**TINY, **opts})
    src.ask(2)
    src.ask(1)
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "strategy.ckpt").write_bytes(pickle.dumps(
        {"version": 1, "strategy": src.state_dict(), "batch_seq": 2, "pending": []}))
    return src, run


def test_takes_the_trained_supernet_and_skips_the_warm_up(tmp_path):
    src, run = _trained(tmp_path)
    space = _space("nb201")
    # another device's search: other seed and target; no shared training of its own
    st = Enas(space, seed=5, **{**TINY, "warmup_steps": 7, "shared_steps": 0,
                                "target_ms": 3.0, "supernet_from": str(run)})
    assert not st.warm_started
    cands = st.ask(2)
    assert st.warm_started and st.shared_steps_done == src.shared_steps_done  # no warm-up
    assert cands[0].meta["shared_steps"] == src.shared_steps_done
    mine, theirs = st.supernet.state_dict(), src.supernet.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the same weights score a child the same (the ranking carries over)
    arch = space.sample(random.Random(1))
    assert st.supernet_accuracy(arch) == src.supernet_accuracy(arch)
    # resumed later, it does not take the file again: its own state is the truth
    state = pickle.loads(pickle.dumps(st.state_dict()))
    expected = [c.arch for c in st.ask(2)]
    again = Enas(space, seed=5, **{**TINY, "warmup_steps": 7, "shared_steps": 0,
                                   "target_ms": 3.0, "supernet_from": str(run)})
    again.load_state_dict(state)
    (run / "strategy.ckpt").write_bytes(b"not read again")
    assert [c.arch for c in again.ask(2)] == expected and again.warm_started
    # nor need it exist: the source run may be deleted before this one resumes
    (run / "strategy.ckpt").unlink()
    run.rmdir()
    gone = Enas(space, seed=5, **{**TINY, "warmup_steps": 7, "shared_steps": 0,
                                  "target_ms": 3.0, "supernet_from": str(run)})
    gone.load_state_dict(state)
    gone.preflight()                    # warm-started already: nothing to read
    assert [c.arch for c in gone.ask(2)] == expected


def test_preflight_takes_it_before_the_first_ask(tmp_path):
    """A new run takes the supernet at preflight (the CLI's check before it writes
    anything); the first ask then runs exactly as if it had taken it there."""
    _, run = _trained(tmp_path)
    opts = {**TINY, "shared_steps": 1, "target_ms": 3.0, "supernet_from": str(run)}
    early, late = Enas(_space("nb201"), seed=5, **opts), Enas(_space("nb201"), seed=5, **opts)
    early.preflight()
    assert early.warm_started and not late.warm_started
    assert [c.arch for c in early.ask(3)] == [c.arch for c in late.ask(3)]
    assert all(torch.equal(a, b) for a, b in zip(early.supernet.state_dict().values(),
                                                 late.supernet.state_dict().values(),
                                                 strict=True))


def test_with_shared_steps_it_keeps_training_from_there(tmp_path):
    src, run = _trained(tmp_path)
    st = Enas(_space("nb201"), seed=5, **{**TINY, "lr": 0.01, "weight_decay": 0.0,
                                          "supernet_from": str(run / "strategy.ckpt")})
    st.ask(1)
    assert st.shared_steps_done == src.shared_steps_done + TINY["shared_steps"]
    # the source's momenta, this search's settings
    assert st.optimizer.state and all(g["lr"] == 0.01 and g["weight_decay"] == 0.0
                                      for g in st.optimizer.param_groups)


@pytest.mark.parametrize("opts, needle", [
    ({"resolution": 16}, "was trained with resolution=8, this search has resolution=16"),
    ({"optimizer": "adam"}, "was trained with optimizer='sgd'"),
    ({"data_seed": 3}, "data_seed=0"),
])
def test_a_supernet_trained_otherwise_is_refused(tmp_path, opts, needle):
    _, run = _trained(tmp_path)
    st = Enas(_space("nb201"), seed=0, **{**TINY, **opts, "supernet_from": str(run)})
    with pytest.raises(ValueError, match=needle):
        st.ask(1)


def test_bad_sources_are_one_clear_error(tmp_path):
    space = _space("nb201")
    missing = Enas(space, seed=0, **{**TINY, "supernet_from": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="no such checkpoint"):
        missing.preflight()
    with pytest.raises(ValueError, match="no such checkpoint"):
        missing.ask(1)
    other = tmp_path / "random.ckpt"
    rnd = get_strategy("random", space, seed=0)
    other.write_bytes(pickle.dumps({"version": 1, "strategy": {
        **rnd.state_dict(), "config": rnd.config()}}))
    with pytest.raises(ValueError, match="a 'random' checkpoint holds no supernet"):
        Enas(space, seed=0, **{**TINY, "supernet_from": str(other)}).ask(1)
    planted = tmp_path / "planted.ckpt"
    planted.write_bytes(pickle.dumps({"strategy": print}))
    with pytest.raises(ValueError, match="refusing to load global builtins.print"):
        Enas(space, seed=0, **{**TINY, "supernet_from": str(planted)}).ask(1)
    _, run = _trained(tmp_path)          # a supernet of another space
    with pytest.raises(ValueError, match="was trained with space='nb201'"):
        Enas(_space("mnasnet"), seed=0, **{**TINY, "supernet_from": str(run)}).ask(1)

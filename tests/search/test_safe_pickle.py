"""``search.safe_pickle``: a run folder's strategy checkpoint is rebuilt, and nothing a
planted file names runs (the conformance suite resumes every strategy through it)."""

from __future__ import annotations

import collections
import datetime
import io
import os
import pickle
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search import safe_pickle


class _Call:
    """Pickles as a call of ``func(*args)``: what a planted checkpoint does."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_checkpoint_values_round_trip():
    gen = np.random.default_rng(3)
    value = {
        "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "param": torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
        "array": np.linspace(0, 1, 5), "scalar": np.float64(2.5), "int": np.int64(7),
        "rng": random.Random(5), "gen": gen, "bitgen": gen.bit_generator.state,
        "legacy": np.random.RandomState(1),
        "ordered": collections.OrderedDict(a=1), "set": {1, 2}, "fs": frozenset({3}),
        "when": datetime.datetime(2026, 11, 27, 8, 0), "state": optuna.trial.TrialState.FAIL,
        "dist": optuna.distributions.CategoricalDistribution(["a", "b"]),
        "nested": [(1, 2.0, "x", b"y", None, True)], "dtype": torch.float16,
        "np_dtype": np.dtype("float32"), "size": torch.Size([2, 3]),
    }
    back = safe_pickle.loads(pickle.dumps(value))
    assert torch.equal(back["tensor"], value["tensor"])
    assert isinstance(back["param"], torch.nn.Parameter) and torch.equal(back["param"],
                                                                        value["param"])
    assert np.array_equal(back["array"], value["array"]) and back["scalar"] == 2.5
    assert back["rng"].random() == random.Random(5).random()
    assert back["gen"].random() == np.random.default_rng(3).random()
    assert back["legacy"].rand() == np.random.RandomState(1).rand()
    for k in ("int", "bitgen", "ordered", "set", "fs", "when", "state", "dist", "nested",
              "dtype", "np_dtype", "size"):
        assert back[k] == value[k], k


@pytest.mark.parametrize("payload, why", [
    (_Call(os.system, "touch {marker}"), "refusing to load global posix.system"),
    (_Call(eval, "open({marker!r}, 'w')"), "refusing to load global builtins.eval"),
    (_Call(open, "{marker}", "w"), "refusing to load global io.open"),
    # a function of an allowed package may be held as a value, never called
    (_Call(optuna.storages.RDBStorage, "sqlite:///{marker}"), "refusing to call optuna"),
    (_Call(optuna.delete_study, "x", "sqlite:///{marker}"), "refusing to call optuna"),
])
def test_planted_calls_are_refused_before_they_run(tmp_path, payload, why):
    marker = tmp_path / "planted-code-ran"
    payload.args = tuple(a.format(marker=marker) if isinstance(a, str) else a
                         for a in payload.args)
    data = pickle.dumps({"strategy": {"x": [1, payload]}})
    with pytest.raises(pickle.UnpicklingError, match=why):
        safe_pickle.loads(data)
    assert not marker.exists()
    assert not list(tmp_path.iterdir())


def test_a_class_of_our_packages_is_rebuilt_not_constructed(tmp_path):
    from search.ledger import Ledger

    db = tmp_path / "made.db"
    with pytest.raises(pickle.UnpicklingError, match="refusing to call search.ledger.Ledger"):
        safe_pickle.loads(pickle.dumps(_Call(Ledger, str(db))))
    assert not db.exists()


def test_tensor_bytes_go_through_the_weights_only_loader(tmp_path):
    """A pickled tensor's storage is a nested torch.load; a planted one is refused."""
    marker = tmp_path / "planted-code-ran"
    buf = io.BytesIO()
    torch.save(_Call(open, str(marker), "w"), buf)

    class Planted:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buf.getvalue(),))

    with pytest.raises(pickle.UnpicklingError):
        safe_pickle.loads(pickle.dumps({"w": Planted()}))
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [
    ("search.loop", "pickle"),            # a module a module of ours imports
    ("search.loop", "os.replace"),        # a dotted path through it
    ("mnas.cli.train_cmd", "json"),
    ("search.strategies.optuna_sampler", "pickle.loads"),
])
def test_only_what_our_packages_define_can_be_named(module, name):
    with pytest.raises(pickle.UnpicklingError, match=f"refusing to load global {module}"):
        safe_pickle.loads(b"\x80\x04c" + f"{module}\n{name}\n".encode() + b".")


def test_attributes_are_set_on_instances_only():
    """BUILD on a class would rewrite it (a method swapped for a function): refused."""
    from search.ledger import Ledger

    data = b"\x80\x02csearch.ledger\nLedger\n}(U\x04openK\x01ub."
    with pytest.raises(pickle.UnpicklingError, match="refusing to set attributes"):
        safe_pickle.loads(data)
    assert callable(Ledger.open)


def test_old_protocols_and_filling_objects_are_refused():
    from search.ledger import Ledger

    with pytest.raises(pickle.UnpicklingError, match="INST/OBJ"):
        safe_pickle.loads(b"(isearch.ledger\nLedger\nS'x'\nb.")
    # APPEND into an allocated object would call its own append method
    data = (b"\x80\x04csearch.ledger\nLedger\n)\x81" + b"K\x01a.")
    with pytest.raises(pickle.UnpicklingError, match="refusing to fill a Ledger"):
        safe_pickle.loads(data)
    assert Ledger  # the class itself was importable: only its use was refused


def test_a_planted_checkpoint_stops_resume_with_one_line(tmp_path, monkeypatch, capsys):
    """``mnas search --resume`` on a run folder whose strategy.ckpt runs code."""
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    table = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"
    out = tmp_path / "run"
    flags = ["--space", "nb201", "--strategy", "random", "--accuracy",
             f"table:{table}#cifar100_acc", "--latency", f"table:{table}#raspi4_ms",
             "--target-ms", "10", "--no-progress", "--no-export"]
    assert main(["search", "--out", str(out), "--budget", "3", *flags]) == 0
    capsys.readouterr()
    marker = tmp_path / "planted-code-ran"
    (out / "strategy.ckpt").write_bytes(pickle.dumps(
        {"version": 1, "strategy": _Call(os.system, f"touch {marker}")}))
    before = (out / "study.db").read_bytes(), (out / "config.json").read_bytes()
    rc = main(["search", "--out", str(out), "--resume", "--budget", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "strategy.ckpt" in err and "none of its code ran" in err and "posix.system" in err
    assert not marker.exists()
    assert ((out / "study.db").read_bytes(), (out / "config.json").read_bytes()) == before


@pytest.mark.parametrize("junk", [b"garbage", b"", b"\x80\x05\x95", b"\xff" * 40])
def test_a_junk_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, junk):
    from mnas.cli import main

    table = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), "--budget", "2", "--space", "nb201",
                 "--strategy", "random", "--accuracy", f"table:{table}#cifar100_acc",
                 "--latency", f"table:{table}#raspi4_ms", "--target-ms", "10",
                 "--no-progress", "--no-export"]) == 0
    capsys.readouterr()
    (out / "strategy.ckpt").write_bytes(junk)
    rc = main(["search", "--out", str(out), "--resume", "--budget", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "strategy.ckpt" in err and "Traceback" not in err

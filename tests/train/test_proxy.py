"""The ``proxy`` accuracy evaluator end to end on digits (tiny CNN stub and one real
MnasNet child)."""

from __future__ import annotations

import pytest
import torch

from mnas.evaluate import ACCURACY, make_accuracy
from mnas.evaluators.proxy import ProxyAccuracy
from tests.torch_devices import DEVICES
from tests.train.stubs import TinyArch, TinySpace

FAST = {"resolution": 16, "width_mult": 1.0, "epochs": 1}


@pytest.fixture(scope="module")
def evaluator():
    return ProxyAccuracy(**FAST)


def test_trains_tiny_cnn_well_above_chance(evaluator):
    space = TinySpace()
    acc = evaluator(space, TinyArch(8))
    assert 0.6 < acc <= 1.0  # chance is 0.1
    assert space.calls == [{"num_classes": 10, "width_mult": 1.0, "in_channels": 3}]


def test_same_arch_and_seed_same_accuracy(evaluator):
    space = TinySpace()
    a = evaluator(space, TinyArch(4))
    b = evaluator(space, TinyArch(8))
    c = evaluator(space, TinyArch(4))   # after another child: data order/init re-seeded
    assert a == c
    assert ProxyAccuracy(**FAST)(space, TinyArch(4)) == a  # a fresh evaluator agrees
    assert b != a
    for m1, m2 in zip(space.built[0].parameters(), space.built[2].parameters(), strict=True):
        assert torch.equal(m1, m2)  # identical trained weights, not just accuracy


def test_data_is_read_once_per_evaluator(evaluator, monkeypatch):
    dm = evaluator.datamodule
    train_set = dm.train_set

    def fail(self):
        raise AssertionError("data reloaded")
    monkeypatch.setattr(type(dm), "load", fail)
    evaluator(TinySpace(), TinyArch(4))
    assert dm.train_set is train_set


def test_batch_limit_limits_steps():
    space = TinySpace()
    ProxyAccuracy(batch_limit=3, **FAST)(space, TinyArch(4, "progress"))
    assert len(space.built[0].progress) == 3


def test_nan_child_fails_with_runtime_error(evaluator):
    with pytest.raises(RuntimeError, match="loss became NaN at step 0"):
        evaluator(TinySpace(), TinyArch(4, "nan"))


def test_ctrl_c_in_training_is_an_interruption_not_an_exit(evaluator):
    """Lightning turns Ctrl-C into sys.exit(1) with SIGINT left ignored; the proxy hands
    it on as KeyboardInterrupt (a search stops and says so) with the handler back."""
    import signal

    with pytest.raises(KeyboardInterrupt):
        evaluator(TinySpace(), TinyArch(4, "interrupt"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert 0.6 < evaluator(TinySpace(), TinyArch(8)) <= 1.0     # still usable after


def test_threads_restored(evaluator):
    torch.set_num_threads(2)
    try:
        evaluator(TinySpace(), TinyArch(4))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"batch_limit": 0}, {"width_mult": 0},
                                {"lr": -1.0}, {"threads": 0}, {"seed": "x"},
                                {"data": "mnist"}, {"val_fraction": 1.5}])
def test_bad_options(kw):
    with pytest.raises(ValueError):
        ProxyAccuracy(**kw)


def test_registered_factory_takes_context():
    assert "proxy" in ACCURACY
    ev = make_accuracy("proxy", epochs=1, resolution=16, width_mult=1.0, batch_limit=None,
                       seed=3, strategy="ppo", budget=10, lr=None)
    assert isinstance(ev, ProxyAccuracy)
    assert (ev.epochs, ev.resolution, ev.width_mult, ev.seed, ev.batch_limit) == (1, 16, 1.0, 3,
                                                                                  None)
    assert ev.lr == ProxyAccuracy.__init__.__defaults__[6]  # None → the default
    assert make_accuracy("proxy:digits", resolution=8).data == "digits"
    with pytest.raises(ValueError, match="conflicts"):
        make_accuracy("proxy:digits", data="cifar10:/x")
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        make_accuracy("proxy:mnist")


def test_defaults_train_mobilenetv2_well_above_chance():
    """The search's default proxy on a real child (≈ 3 CPU-seconds): without BatchNorm
    recalibration this sat at chance (0.10); measured 0.86."""
    from mnas.spaces import get_space

    space = get_space("mnasnet")
    acc = ProxyAccuracy()(space, space.parse("mobilenetv2"))
    assert 0.5 < acc <= 1.0


def test_global_determinism_flag_restored(evaluator):
    saved = torch.are_deterministic_algorithms_enabled()
    try:
        for flag in (False, True):
            torch.use_deterministic_algorithms(flag)
            evaluator(TinySpace(), TinyArch(4))
            assert torch.are_deterministic_algorithms_enabled() is flag
    finally:
        torch.use_deterministic_algorithms(saved)


def test_module_spec_datamodule_drives_build(user_module):
    space = TinySpace()
    ev = ProxyAccuracy(data=f"module:{user_module}:Good", epochs=1)
    acc = ev(space, TinyArch(4))
    assert 0.0 <= acc <= 1.0
    assert space.calls == [{"num_classes": 4, "width_mult": 0.5, "in_channels": 1}]


@pytest.mark.parametrize("device", DEVICES)
def test_children_train_on_the_torch_device(device):
    space = TinySpace()
    ev = ProxyAccuracy(**FAST, torch_device=device)
    acc = ev(space, TinyArch(8))
    assert 0.6 < acc <= 1.0
    assert space.built[0].devices == {device}      # training and validation ran there
    again = ev(space, TinyArch(8))
    if device == "cpu":
        assert again == acc
    else:   # up to the summation order of kernels without a deterministic CUDA form
        assert abs(again - acc) <= 0.02


def test_torch_device_is_checked_against_this_machine():
    for bad, why in (("tpu:0", "not a torch device"), ("cuda:99", "not available"),
                     ("warp", "not a torch device")):
        with pytest.raises(ValueError, match=f"torch_device '{bad}' is {why}.*valid here: cpu"):
            ProxyAccuracy(torch_device=bad)
    assert make_accuracy("proxy", torch_device="cpu", resolution=8).torch_device.type == "cpu"


def test_lightning_interrupts_gives_back_the_sigint_handler_it_found():
    """Lightning leaves SIGINT ignored before its sys.exit; the handler from before fit
    (the CLI's, which records the signal) comes back, not Python's default."""
    import signal

    from mnas.evaluators.proxy import lightning_interrupts

    def mine(signum, frame):
        raise KeyboardInterrupt

    saved = signal.signal(signal.SIGINT, mine)
    try:
        with pytest.raises(KeyboardInterrupt), lightning_interrupts():
            signal.signal(signal.SIGINT, signal.SIG_IGN)    # what Lightning does
            raise SystemExit(1)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, saved)

"""ENAS: weight sharing in both supernets, child == standalone build, the MAC proxy and
the lookup-table option, the controller learning, options, meta/tell, private RNG.

Everything runs at toy sizes (8×8 digits, width 0.25) so the file stays in seconds;
resume and determinism are covered by the conformance suite."""

from __future__ import annotations

import copy
import pickle
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latency.lut import LatencyTable, MnasnetUnits
from mnas.counting import count_macs
from mnas.spaces import get_space
from mnas.trial import Trial
from search.base import get_strategy
from search.strategies.enas import Enas, _fetch
from search.supernet import make_supernet
from search.supernet.latency import MACS_LABEL, FastLatency
from search.supernet.mnasnet import MnasnetMacs, unit_macs
from search.supernet.nasnet import NasnetMacs
from search.supernet.nb201 import Nb201Macs
from tests.cifar_files import write_cifar100
from tests.torch_devices import DEVICES

TINY = {"resolution": 8, "width_mult": 0.25, "batch_size": 16, "warmup_steps": 0,
        "shared_steps": 2, "controller_steps": 1, "controller_batch": 2, "val_batch": 16,
        "candidates": 3, "rank_examples": 32}
SPACES = {"mnasnet": {"dropout": 0.0}, "nasnet": {"drop_path": 0.0}, "nb201": {"N": 2}}


def _space(name: str):
    return get_space(name, **SPACES[name])


def _archs(space, n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)] + list(space.named().values())


def _sgd_step(net, arch, x, y, lr: float = 0.5) -> None:
    net.train()
    loss = F.cross_entropy(net(x, arch), y)
    params = net.path_parameters(arch)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


def _variant(space, arch, index: int, rng: random.Random):
    """``arch`` with decision ``index`` changed to another value."""
    c = list(space.to_choices(arch))
    d = space.decisions()[index]
    c[index] = (c[index] + 1 + rng.randrange(d.size - 1)) % d.size
    return space.from_choices(c)


# -- weight sharing ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnasnet", "nasnet", "nb201"])
def test_same_op_at_same_position_is_one_tensor_and_training_one_child_moves_the_other(name):
    torch.manual_seed(0)
    space = _space(name)
    net = make_supernet(space, 10, 0.25, seed=1)
    rng = random.Random(3)
    a = space.sample(rng)
    last = len(space.decisions()) - 1     # mnasnet: block 7's layers; nasnet: a combine
    b = _variant(space, a, last - 1, rng)  # same ops everywhere but one decision
    ma, mb = net.child_modules(a), net.child_modules(b)
    shared = [k for k in ma if k in mb and ma[k] is mb[k] and any(True for _ in ma[k].parameters())]
    assert len(shared) >= 3
    k = shared[len(shared) // 2]
    pa, pb = next(ma[k].parameters()), next(mb[k].parameters())
    assert pa is pb and pa.data_ptr() == pb.data_ptr()
    # a child that does not run a module leaves it untouched; one that does moves it
    other = next(m for key, m in net.shared.items() if all(m is not v for v in ma.values())
                 and any(True for _ in m.parameters())) if len(net.shared) > len(ma) else None
    before_other = None if other is None else [p.detach().clone() for p in other.parameters()]
    x = torch.randn(8, 3, 8, 8)
    y = torch.randint(0, 10, (8,))
    net.eval()
    out_b = net(x, b).detach()
    _sgd_step(net, a, x, y)
    net.eval()
    assert not torch.allclose(net(x, b), out_b), "training child a left child b unchanged"
    if other is not None:
        assert all(torch.equal(p, q) for p, q in zip(other.parameters(), before_other,
                                                     strict=True))


@pytest.mark.parametrize("name", ["mnasnet", "nasnet", "nb201"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_child_in_the_supernet_is_the_standalone_build_with_copied_weights(name, channels_last):
    """Same ops on the same (sliced) weights: equal up to float rounding. The standalone
    model runs in the supernet's memory format, so both use the same kernels (in train
    mode a batch of 6 at 1×1 spatial size magnifies any rounding through BatchNorm)."""
    torch.manual_seed(0)
    space = _space(name)
    net = make_supernet(space, 10, 0.25, seed=2, channels_last=channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(6, 3, 8, 8)
    y = torch.randint(0, 10, (6,))
    archs = _archs(space, 3, seed=4)
    for a in archs:                      # non-trivial weights and BN statistics
        _sgd_step(net, a, x, y, lr=0.02)   # entangled weights: every child moves them
    for a in archs:
        net.train()
        with torch.no_grad():
            train_out = net(x, a)        # batch statistics (and updates running ones)
        model = net.to_standalone(a).to(memory_format=fmt)
        with torch.no_grad():
            net.eval()
            # eval: running statistics, identical ops on identical (sliced) weights
            assert torch.allclose(model.eval()(x), net(x, a), atol=1e-5, rtol=1e-5)
            assert torch.allclose(model.train()(x), train_out, atol=1e-4, rtol=1e-4)


def test_private_batchnorm_child_is_its_standalone_build_and_every_path_parameter_is_used():
    """Private BatchNorm sets (per position and op/skip) replace the family module's own
    BN in the forward, in ``path_parameters`` and in ``to_standalone``; a residual
    branch's set starts with a zero last gamma."""
    torch.manual_seed(0)
    space = _space("mnasnet")
    net = make_supernet(space, 10, 0.25, seed=2, channels_last=False,
                        private_bn=("op", "skip"), zero_gamma=True)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    archs = _archs(space, 3, seed=4)
    for a in archs:
        _sgd_step(net, a, x, y, lr=0.02)   # autograd.grad fails on an unused parameter
    keys = [k for k in net.shared if "|bn|" in k]
    assert keys and any(k.endswith("_identity") for k in keys)
    fresh = make_supernet(space, 10, 0.25, seed=2, private_bn=("skip", "op"), zero_gamma=True)
    fresh(x, archs[-1])
    for k in (k for k in fresh.shared if k.endswith(("_identity", "_pool"))):
        last = fresh.shared[k][max(fresh.shared[k], key=int)]
        assert torch.count_nonzero(last.weight) == 0
    for a in archs:
        model = net.to_standalone(a)
        with torch.no_grad():
            net.eval()
            assert torch.allclose(model.eval()(x), net(x, a), atol=1e-5, rtol=1e-5)
        shared_bn = {id(p) for m in net.child_modules(a).values()
                     for p in m.parameters()} - {id(p) for p in net.path_parameters(a)}
        assert shared_bn              # the family modules' own BN is not this child's
    with pytest.raises(ValueError, match="private_bn"):
        make_supernet(space, 10, 0.25, private_bn=("width",))


def test_batch_stats_scoring_updates_nothing_and_restores_modes():
    space = _space("mnasnet")
    net = make_supernet(space, 10, 0.25, seed=0)
    a = space.named()["mobilenetv2"]
    x = torch.randn(16, 3, 8, 8)
    net(x, a)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad(), net.batch_stats(a):
        scored = net(x, a)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training and all(m.training for m in net.modules())
    net.train()
    with torch.no_grad():
        assert torch.allclose(net(x, a), scored, atol=1e-5)   # no dropout here: equal


def test_mnasnet_supernet_slices_widths_kernels_se_and_expansion_of_one_module():
    space = _space("mnasnet")
    net = make_supernet(space, 10, 0.5, seed=0)
    a = space.named()["mobilenetv2"]
    c = list(space.to_choices(a))
    names = [d.name for d in space.decisions()]
    variant = list(c)
    variant[names.index("b4_filters")] = 2            # 80 filters instead of 64
    variant[names.index("b4_kernel")] = 1             # 5x5 instead of 3x3
    variant[names.index("b4_se")] = 1                 # SE on
    variant[names.index("b4_op")] = 2                 # mbconv3 instead of mbconv6
    ma, mv = net.child_modules(a), net.child_modules(space.from_choices(variant))
    for k in ("blocks.3.0.body.0", "blocks.3.0.body.1", "blocks.4.0.body.0"):
        assert ma[k] is mv[k], k
    assert ma["blocks.3.0.body.2"] is mv["blocks.3.0.body.3"]   # the projection (SE between)
    assert set(net.shared) == {"head", *(k for k in net.shared if k.startswith("b"))}
    assert "b4l0|ir" in net.shared and len([k for k in net.shared if k.startswith("b4l0")]) == 1
    other = list(c)
    other[names.index("b4_op")] = 0                   # a regular conv: its own module
    net.child_modules(space.from_choices(other))
    assert "b4l0|cn" in net.shared
    # dsconv is an MBConv without the expansion: the ir module's depthwise conv and
    # projection on the first `in` channels, no module of its own
    ds = list(c)
    ds[names.index("b4_op")] = 1
    md = net.child_modules(space.from_choices(ds))
    ir = net.shared["b4l0|ir"]
    assert md["blocks.3.0.body.0"] is ir[1] and md["blocks.3.0.body.1"] is ir[3]
    assert not any(k.endswith("|ds") for k in net.shared)
    # a 3x3 child runs the centre of the stored 5x5 kernel
    assert net.shared["b4l0|ir"][1][0].weight.shape[-1] == 5
    model = net.to_standalone(a)
    w5 = net.shared["b4l0|ir"][1][0].weight
    w3 = model.get_submodule("blocks.3.0.body.1")[0].weight
    assert torch.equal(w3, w5[: w3.shape[0], :, 1:4, 1:4])


def test_nasnet_supernet_runs_every_input_width_on_one_sliced_module():
    """add vs concat changes only input widths: both children run the same tensors (the
    narrower one their leading input channels), each equals its standalone build, and
    training the narrower child leaves the channels it does not read untouched."""
    torch.manual_seed(0)
    space = _space("nasnet")
    net = make_supernet(space, 10, 0.25, seed=0)
    cell = ("[sep3x3~0+sep5x5~1,{0}][sep3x3~2+conv1x7_7x1~2,add][dil3x3~0+avg3x3~3,add]"
            "[id~1+max3x3~2,add][conv3x3~4+sep7x7~5,{0}]")
    narrow, wide = (space.decode(f"normal:{cell.format(c)}|reduce:{cell.format(c)}")
                    for c in ("add", "concat"))
    mn, mw = net.child_modules(narrow), net.child_modules(wide)
    assert all(mn[k] is mw[k] for k in mn.keys() & mw.keys())
    # block 3's pool reads block 0: at its own width it needs no weights, at 2c a
    # projection; h_{i-1} is preprocessed only where its width is not the cell's
    assert sorted(set(mw) - set(mn)) == [f"cells.{k}.{p}" for k, p in
                                         [(0, "paths.7.op"), (1, "paths.7.op"),
                                          (2, "paths.7.op"), (3, "paths.7.op"),
                                          (4, "paths.7.op"), (4, "pre_prev"),
                                          (5, "paths.7.op"), (6, "paths.7.op"),
                                          (7, "paths.7.op"), (7, "pre_prev")]]
    assert sorted(set(mn) - set(mw)) == ["cells.2.pre_prev", "cells.5.pre_prev"]
    assert all(re.fullmatch(r"c\d+(b\d[xy]~\d+\|\w+|\|pre_(cur|prev|fr))|classifier", k)
               for k in net.shared), list(net.shared)
    x = torch.randn(6, 3, 8, 8)
    y = torch.randint(0, 10, (6,))
    for a in (narrow, wide):
        _sgd_step(net, a, x, y, lr=0.02)
    models = {}
    for a in (narrow, wide):
        models[a.encode()] = net.to_standalone(a).to(memory_format=torch.channels_last)
        net.eval()
        with torch.no_grad():
            assert torch.allclose(models[a.encode()].eval()(x), net(x, a), atol=1e-5,
                                  rtol=1e-5)
    # the same shared tensors at different input widths: sep3x3 reading block 0, the next
    # cell's preprocessing and the classifier
    for name in ("cells.0.paths.2.op.2", "cells.1.pre_cur.1", "classifier"):
        wn = models[narrow.encode()].get_submodule(name).weight
        ww = models[wide.encode()].get_submodule(name).weight
        assert wn.shape[1] < ww.shape[1], name
        assert torch.equal(wn, ww[:, : wn.shape[1]]), name
    head = net.shared["classifier"].weight
    before = head.detach().clone()
    used = models[narrow.encode()].classifier.weight.shape[1]
    _sgd_step(net, narrow, x, y)
    assert not torch.equal(head[:, :used], before[:, :used])
    assert torch.equal(head[:, used:], before[:, used:])


# -- latency estimates -----------------------------------------------------------------------
def test_mac_proxy_counts_what_count_macs_counts():
    mn = _space("mnasnet")
    macs = MnasnetMacs(mn)
    units = MnasnetUnits(224)
    rng = random.Random(0)
    for u in rng.sample(units.enumerate(), 25) + [units.stem(), units.head(320)]:
        assert unit_macs(u, 1000) == count_macs(units.module(u), u.input_shape()), u.key
    for a in _archs(mn, 2):
        assert macs(a) == count_macs(mn.build(a), (1, 3, 224, 224))
    nn_space = _space("nasnet")
    nmacs = NasnetMacs(nn_space)
    for a in _archs(nn_space, 2):
        assert nmacs(a) == count_macs(nn_space.build(a), (1, 3, 32, 32))
    nb = get_space("nb201")
    bmacs = Nb201Macs(nb)
    for a in _archs(nb, 3):
        assert bmacs(a) == count_macs(nb.build(a), (1, 3, 32, 32))
    # the default target is the estimate of the point `--target-ms auto` measures
    assert FastLatency(nb).reference_ms() == pytest.approx(
        bmacs(nb.named()["best_cifar100"]) / 1e6 * 0.25)
    est = FastLatency(mn)
    assert est.label == MACS_LABEL
    ref = mn.named()["mobilenetv2"]
    assert est.reference_ms() == pytest.approx(macs(ref) / 1e6 * 0.25)
    assert 70 < est.reference_ms() < 80      # 300.8M MACs at MnasNet-A1's 0.25 ms/M


def _table(path, seed: int = 0) -> LatencyTable:
    units = MnasnetUnits(224)
    rng = np.random.default_rng(seed)
    t = LatencyTable(space="mnasnet", resolution=224, num_classes=1000,
                     device="local:onnxruntime", fingerprint={"x": 1}, clock="wall",
                     settings={}, entries={u.key: float(rng.uniform(0.01, 2.0))
                                           for u in units.enumerate()})
    t.save(path)
    return t


def test_lut_option_scores_candidates_with_the_table(tmp_path):
    path = tmp_path / "lut.json"
    table = _table(path)
    space = get_space("mnasnet")
    st = get_strategy("enas", space, seed=0, lut=str(path), **TINY)
    assert st.target_ms == pytest.approx(table.predict(space.named()["mobilenetv2"]))
    cands = st.ask(2)
    for c in cands:
        assert c.meta["latency_estimate"] == f"lut:{path}"
        assert c.meta["latency_estimate_ms"] == pytest.approx(table.predict(
            space.decode(c.arch)))
    with pytest.raises(ValueError, match="mnasnet"):
        get_strategy("enas", get_space("nasnet"), lut=str(path), **TINY)
    with pytest.raises(FileNotFoundError):
        get_strategy("enas", space, lut=str(tmp_path / "missing.json"), **TINY)


# -- the strategy -------------------------------------------------------------------------------
def test_controller_learns_what_the_reward_favours():
    """With a strong latency penalty (w = −1) the reward is dominated by the latency
    estimate, so a few REINFORCE steps must move the controller to faster children
    than uniform sampling gives — and its mean reward must rise."""
    space = get_space("mnasnet")
    st = get_strategy("enas", space, seed=1, controller_lr=0.03, alpha=-1.0, beta=-1.0,
                      entropy_weight=0.0, baseline_decay=0.8,
                      **{**TINY, "controller_batch": 8})
    st.train(shared_steps=5, controller_steps=40)
    first, last = np.mean(st.rewards[:8]), np.mean(st.rewards[-8:])
    assert last > 1.2 * first, (first, last)
    rng = np.random.default_rng(0)
    ds = space.decisions()
    learned = [st.latency(space.from_choices(st.controller.sample(ds, rng)[0]))
               for _ in range(64)]
    uniform = [st.latency(space.from_choices([int(rng.integers(d.size)) for d in ds]))
               for _ in range(64)]
    assert np.mean(learned) < 0.8 * np.mean(uniform)


def test_ask_meta_tell_history_and_fidelity():
    space = get_space("mnasnet")
    st = get_strategy("enas", space, seed=0, **TINY)
    state = torch.get_rng_state()
    cands = st.ask(3)
    assert torch.equal(torch.get_rng_state(), state), "ask moved the global torch RNG"
    assert len(cands) == 3 and st.children_seen == 3
    for c in cands:
        m = c.meta
        assert 0.0 <= m["supernet_accuracy"] <= 1.0
        assert m["latency_estimate"] == MACS_LABEL and m["latency_estimate_ms"] > 0
        assert m["supernet_reward"] == pytest.approx(
            st.reward(m["supernet_accuracy"], m["latency_estimate_ms"]))
        assert m["inner_target_ms"] == pytest.approx(st.latency.reference_ms())
    ranks = [c.meta["supernet_rank"] for c in cands]
    assert ranks == sorted(ranks)        # best supernet reward first (all fresh here)
    assert st.shared_steps_done == 2 and st.controller_steps_done == 1
    trials = []
    for i, c in enumerate(cands):
        t = Trial(number=i, arch=c.arch, choices=c.choices, meta=dict(c.meta))
        t.accuracy, t.latency_ms, t.reward = 0.5 + 0.1 * i, 10.0 + i, 0.5
        trials.append(t)
    trials.append(Trial(number=9, arch=cands[0].arch, choices=cands[0].choices,
                        state="failed", reason="x"))
    st.tell(trials)
    assert len(st.history) == 4
    fid = st.fidelity()
    assert fid["accuracy_n"] == 3 and fid["latency_n"] == 3
    assert fid["latency_spearman"] is None or -1.0 <= fid["latency_spearman"] <= 1.0
    assert st.ask(0) == [] and st.children_seen == 3


def test_prefers_children_it_has_not_returned_before():
    space = get_space("mnasnet")
    st = get_strategy("enas", space, seed=0, **{**TINY, "candidates": 6})
    seen = [c.arch for _ in range(3) for c in st.ask(2)]
    assert len(set(seen)) == len(seen)


def test_options_are_validated_and_listed_and_spaces_checked():
    space = get_space("mnasnet")
    for bad in ({"batch_size": 1}, {"lr": 0.0}, {"baseline_decay": 1.0}, {"target_ms": -1.0},
                {"candidates": 0}, {"data": "nope"}, {"optimizer": "rmsprop"},
                {"private_bn": "op,depth"}):
        with pytest.raises(ValueError):
            get_strategy("enas", space, **{**TINY, **bad})
    with pytest.raises(TypeError, match="mnasnet"):
        get_strategy("enas", get_space("nasrl"), **TINY)
    st = Enas(space, seed=0, **TINY)
    with pytest.raises(ValueError):
        st.ask(-1)
    import inspect
    params = [p for p in inspect.signature(Enas).parameters if p not in ("space",)]
    assert set(params) <= set(st.config())
    # a checkpoint only loads into a strategy with the same structure
    blob = pickle.dumps(st.state_dict())
    other = Enas(space, seed=0, **{**TINY, "width_mult": 0.5})
    with pytest.raises(ValueError, match="width_mult"):
        other.load_state_dict(pickle.loads(blob))


def test_trains_on_cifar100_with_its_100_fine_classes(tmp_path):
    """The nb201 table's accuracies are CIFAR-100's: ``data=cifar100:PATH`` gives the
    supernet that task (100 logits) and the loop's ask/tell runs on it."""
    root = write_cifar100(tmp_path / "cifar-100-python")
    space = _space("nb201")
    st = Enas(space, seed=0, data=f"cifar100:{tmp_path}", **TINY)
    assert st.num_classes == 100
    arch = space.sample(random.Random(0))
    x = torch.zeros(2, 3, TINY["resolution"], TINY["resolution"])
    assert st.supernet(x, arch).shape == (2, 100)
    cands = st.ask(2)
    assert len(cands) == 2 and st.shared_steps_done > 0
    with pytest.raises(FileNotFoundError, match="CIFAR-100 batch missing"):
        Enas(space, seed=0, data=f"cifar100:{root / 'meta'}", **TINY)




def _tensors(obj, out: list) -> list:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensors(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _tensors(v, out)
    return out


def test_device_option_is_checked_against_this_machine():
    space = _space("nb201")
    for bad, why in (("tpu:0", "not a torch device"), ("cuda:99", "not available"),
                     ("warp", "not a torch device")):
        with pytest.raises(ValueError, match=f"torch_device '{bad}' is {why}.*valid here: cpu"):
            Enas(space, seed=0, **{**TINY, "torch_device": bad})


@pytest.mark.parametrize("device", DEVICES)
def test_supernet_runs_on_the_device_and_its_checkpoint_loads_on_the_cpu(device):
    space = _space("nb201")
    st = Enas(space, seed=0, **{**TINY, "torch_device": device})
    assert st.supernet.device == torch.device(device)   # modules created later go there too
    st.ask(2)
    params = list(st.supernet.parameters())
    assert params and all(p.device.type == device for p in params)
    assert st.optimizer.state and all(t.device.type == device for t in
                                      _tensors(list(st.optimizer.state.values()), []))
    state = pickle.loads(pickle.dumps(st.state_dict()))
    assert all(t.device.type == "cpu" for t in _tensors(state, []))
    # a checkpoint from any device resumes on the CPU: the same weights, and it goes on
    cpu = Enas(space, seed=0, **TINY)
    cpu.load_state_dict(state)
    for (k, a), (_, b) in zip(st.supernet.state_dict().items(),
                              cpu.supernet.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b), k
    resumed = [c.arch.encode() for c in cpu.ask(2)]
    assert len(resumed) == 2
    if device == "cpu":   # same device: it asks exactly what the original asks next
        assert resumed == [c.arch.encode() for c in st.ask(2)]


def test_shared_step_trains_exactly_the_sampled_child():
    space = get_space("mnasnet")
    st = get_strategy("enas", space, seed=0, **TINY)
    st.train(shared_steps=4, controller_steps=0)      # a table with several children
    ds = space.decisions()
    child = space.from_choices(st.controller.sample(ds, copy.deepcopy(st.gen))[0])
    used = {id(s) for m in st.supernet.child_modules(child).values() for s in m.modules()}
    before = {k: [p.detach().clone() for p in m.parameters()]
              for k, m in st.supernet.shared.named_modules() if k.count(".") == 1}
    st.train(shared_steps=1, controller_steps=0)
    mods = dict(st.supernet.shared.named_modules())
    for k, old in before.items():
        m = mods[k]
        if not any(True for _ in m.parameters()):
            continue      # the body's own steps (conv+BN, SE) are what a child uses
        same = all(torch.equal(p, q) for p, q in zip(m.parameters(), old, strict=True))
        assert same != (id(m) in used), k
    # and repeated steps on one child fit it
    a = space.named()["mobilenetv2"]
    x, y = _fetch(st.train_set, torch.arange(64))
    with torch.no_grad():
        start = F.cross_entropy(st.supernet(x, a), y).item()
    for _ in range(30):
        loss = F.cross_entropy(st.supernet(x, a), y)
        params = st.supernet.path_parameters(a)
        loss.backward()
        st.optimizer.step()
        for p in params:
            p.grad = None
    with torch.no_grad():
        assert F.cross_entropy(st.supernet(x, a), y).item() < 0.8 * start

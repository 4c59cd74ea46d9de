"""The ``mnasnet`` space: decisions, canonical strings, named points, building, export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mnas.blocks import PoolShortcut, SqueezeExcite
from mnas.counting import count_macs, count_params
from mnas.decisions import Categorical
from mnas.spaces import Encodable, Mutable, get_space, space_names
from mnas.spaces.mnasnet import SKELETON, BlockSpec, MnasArch, MnasNetSpace

SPACE = get_space("mnasnet")
MBV2 = SPACE.named()["mobilenetv2"]


def choice_vectors() -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(*(st.integers(0, d.size - 1) for d in SPACE.decisions()))


def test_registered_as_default_space_with_42_categorical_decisions() -> None:
    assert "mnasnet" in space_names()
    assert isinstance(SPACE, MnasNetSpace)
    ds = SPACE.decisions()
    assert len(ds) == 42
    assert all(isinstance(d, Categorical) for d in ds)
    assert len({d.name for d in ds}) == 42
    # sizes per block: op 4, kernel 2, SE 2, skip 3, filters 3, layers 3
    assert [d.size for d in ds[:6]] == [4, 2, 2, 3, 3, 3]
    filters = [d.options for d in ds if d.name.endswith("_filters")]
    assert filters[1] == (18, 24, 30) and filters[6] == (240, 320, 400)
    layers = [d.options for d in ds if d.name.endswith("_layers")]
    assert layers[0] == (0, 1, 2) and layers[3] == (3, 4, 5)
    assert isinstance(SPACE, Mutable) and isinstance(SPACE, Encodable)


@settings(max_examples=200, deadline=None)
@given(choice_vectors())
def test_strings_and_choices_round_trip(choices: tuple[int, ...]) -> None:
    arch = SPACE.from_choices(choices)
    assert SPACE.to_choices(arch) == choices
    text = arch.encode()
    back = SPACE.decode(text)
    assert back == arch and hash(back) == hash(arch)
    assert back.encode() == text
    assert SPACE.key(arch) == arch.key == f"mnasnet:{text}"


def test_distinct_choices_give_distinct_strings() -> None:
    rng = random.Random(0)
    seen: dict[str, tuple[int, ...]] = {}
    for _ in range(300):
        c = tuple(rng.randrange(d.size) for d in SPACE.decisions())
        text = SPACE.from_choices(c).encode()
        assert seen.setdefault(text, c) == c


def test_mobilenetv2_point_matches_reference_counts() -> None:
    model = SPACE.build(MBV2, num_classes=1000)
    assert count_params(model) == 3_504_872  # torchvision.models.mobilenet_v2()
    macs = count_macs(model, (1, 3, 224, 224))
    assert abs(macs - 300.8e6) / 300.8e6 < 0.02
    # MobileNetV2 has a residual exactly where stride 1 and widths match: 10 layers
    identities = [m for m in model.modules() if getattr(m, "shortcut", None) is not None]
    assert len(identities) == 10
    assert all(isinstance(m.shortcut, nn.Identity) for m in identities)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.fc.in_features == 1280


def test_named_points_are_points_of_the_space() -> None:
    named = SPACE.named()
    assert {"mobilenetv2", "mnasnet-a1-nearest"} <= set(named)
    for name, arch in named.items():
        assert SPACE.parse(name) == arch
        assert SPACE.decode(arch.encode()) == arch
        assert SPACE.from_choices(SPACE.to_choices(arch)) == arch
    a1 = named["mnasnet-a1-nearest"]
    assert [b.op for b in a1.blocks] == ["dsconv", "mbconv6", "mbconv3"] + ["mbconv6"] * 4
    assert [b.se for b in a1.blocks] == [0, 0, 0.25, 0, 0.25, 0.25, 0]


def _forward_ok(model: nn.Module, size: int, classes: int, batch: int) -> None:
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(batch, 3, size, size))
    assert y.shape == (batch, classes)
    assert torch.isfinite(y).all()


def test_random_archs_build_and_run_small() -> None:
    rng = random.Random(1)
    archs = [SPACE.sample(rng) for _ in range(12)]
    # make sure the edge cases are covered: omitted blocks, every op and skip
    archs.append(SPACE.decode(MBV2.encode().replace("ds_r1", "ds_r0").replace(
        "ir_r1_k3_s1_e6_c320", "ir_r0_k3_s1_e6_c320")))
    for op in ("cn", "ds", "ir"):
        for skip in ("noskip", "idskip", "poolskip"):
            blocks = [f"{op}_r{r + 1}_k5_s{s}{'_e3' if op == 'ir' else ''}_c{int(c * 1.25)}"
                      f"_se0.25_{skip}" for _, c, r, s in SKELETON]
            archs.append(SPACE.decode("-".join(blocks)))
    for arch in archs:
        model = SPACE.build(arch, num_classes=10, width_mult=0.25)
        _forward_ok(model, 32, 10, 2)
    # one training step: gradients flow through every block type
    model = SPACE.build(archs[-1], num_classes=10, width_mult=0.25)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_random_archs_run_at_deployment_size() -> None:
    rng = random.Random(7)
    for _ in range(3):
        _forward_ok(SPACE.build(SPACE.sample(rng)), 224, 1000, 1)


def test_skip_ops_build_different_networks() -> None:
    space = MnasNetSpace(dropout=0.0)  # deterministic in train mode

    def with_skip(token: str) -> nn.Module:
        return space.build(space.decode(MBV2.encode().replace("idskip", token)),
                           num_classes=10, width_mult=0.5)

    none, ident, pool = with_skip("noskip"), with_skip("idskip"), with_skip("poolskip")
    assert not [m for m in none.modules() if getattr(m, "shortcut", None) is not None]
    pools = [m for m in pool.modules() if isinstance(m, PoolShortcut)]
    assert len(pools) == 17  # every layer of MobileNetV2's 17 bottlenecks
    # projection only where the width changes: the first layer of each of the 7 blocks
    assert sum(p.proj is not None for p in pools) == 7
    assert count_params(none) == count_params(ident) < count_params(pool)
    torch.manual_seed(0)
    for m in (ident, pool):  # same weights everywhere but the shortcuts
        m.load_state_dict(none.state_dict(), strict=False)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():  # train-mode BN normalises, so every block shows in the logits
        outs = [m.train()(x) for m in (none, ident, pool)]
    assert outs[0].abs().max() > 1e-3
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)
    assert not torch.allclose(outs[1], outs[2], atol=1e-4)


def test_width_multiplier_keeps_channels_usable() -> None:
    arch = SPACE.decode("-".join(
        f"ir_r{n}_k3_s{s}_e3_c{int(c * 0.75)}_se0.25_idskip" for _, c, n, s in SKELETON))
    model = SPACE.build(arch, num_classes=5, width_mult=0.1)
    se_reduce = {id(m.reduce) for m in model.modules() if isinstance(m, SqueezeExcite)}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.out_channels >= (1 if id(m) in se_reduce else 8)
    assert se_reduce
    _forward_ok(model, 32, 5, 2)
    full, half = (count_params(SPACE.build(MBV2, width_mult=w)) for w in (1.0, 0.5))
    assert half < full
    gray = SPACE.build(MBV2, num_classes=3, width_mult=0.25, in_channels=1).eval()
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda s: "", "expected 7 non-empty blocks"),
    (lambda s: s.rsplit("-", 1)[0], "got 6 parts"),
    (lambda s: s.replace("ds_r1_k3", "ds_r1_k7", 1), "kernel 'k7' invalid; valid: k3, k5"),
    (lambda s: s.replace("ds_r1_k3_s1", "ds_r1_k3_s2", 1), "block 1 of the MobileNetV2"),
    (lambda s: s.replace("_c24_", "_c25_", 1), "filters 'c25' invalid; valid: c18, c24, c30"),
    (lambda s: s.replace("ds_r1", "ds_r3", 1), "layers 'r3' invalid; valid: r0, r1, r2"),
    (lambda s: s.replace("ds_", "xx_", 1), "op token 'xx' invalid; valid: cn, ds, ir"),
    (lambda s: s.replace("_e6_c24", "_c24", 1), "needs an expansion token e3 or e6"),
    (lambda s: s.replace("_e6_c24", "_e4_c24", 1), "expansion 'e4' invalid; valid: e3, e6"),
    (lambda s: s.replace("ds_r1_k3_s1", "ds_r1_k3_s1_e6", 1), "only applies to 'ir'"),
    (lambda s: s.replace("_c16_", "_c16_se0.5_", 1), "se ratio 'se0.5' invalid"),
    (lambda s: s.replace("_c16_idskip", "_c16", 1), "missing skip"),
    (lambda s: s.replace("_c16_", "_c16_k5_", 1), "repeats 'k'"),
    (lambda s: s.replace("_c16_", "_c16_wide_", 1), "unknown token 'wide'"),
    (lambda s: s.replace("ds_r1_k3_s1_c16", "ds_k3_s1_c16", 1), "missing layers rN"),
])
def test_malformed_strings_name_the_problem(edit, needle: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError) as info:
        SPACE.decode(edit(MBV2.encode()))
    assert needle in str(info.value)


def test_bad_values_rejected_at_every_boundary() -> None:
    with pytest.raises(ValueError, match="filters 17 invalid"):
        MnasArch(tuple(b if i else BlockSpec("dsconv", 3, 0.0, "none", 17, 1)
                       for i, b in enumerate(MBV2.blocks)))
    with pytest.raises(ValueError, match="skip 'res' invalid; valid: pool, identity, none"):
        BlockSpec("dsconv", 3, 0.0, "res", 16, 1)
    with pytest.raises(TypeError, match="filters must be an int"):
        BlockSpec("dsconv", 3, 0.0, "none", 16.0, 1)
    with pytest.raises(ValueError, match="needs 7 blocks"):
        MnasArch(MBV2.blocks[:6])
    with pytest.raises(ValueError, match="out of range"):
        SPACE.from_choices([9] * 42)
    with pytest.raises(TypeError, match="MnasArch"):
        SPACE.build(MBV2.encode())
    with pytest.raises(ValueError, match="width_mult"):
        SPACE.build(MBV2, width_mult=0)
    with pytest.raises(ValueError, match="num_classes"):
        SPACE.build(MBV2, num_classes=0)
    with pytest.raises(TypeError, match="must be str"):
        SPACE.decode(3)


def test_mutate_and_vector() -> None:
    rng = random.Random(5)
    child = SPACE.mutate(MBV2, rng)
    diff = [a != b for a, b in zip(SPACE.to_choices(MBV2), SPACE.to_choices(child),
                                   strict=True)]
    assert sum(diff) == 1
    v = SPACE.vector(MBV2)
    assert v.shape == (sum(d.size for d in SPACE.decisions()),) and v.sum() == 42


# The TorchScript exporter (latency/export.py's first choice) warns that it is legacy.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_torch(tmp_path) -> None:  # noqa: ANN001
    import onnxruntime as ort

    arch = SPACE.decode(
        "cn_r1_k5_s1_c20_se0.25_poolskip-ds_r2_k5_s2_c30_se0.25_poolskip"
        "-ir_r2_k3_s2_e3_c40_se0.25_idskip-ir_r3_k5_s2_e6_c48_noskip"
        "-ir_r2_k3_s1_e6_c96_se0.25_idskip-ir_r2_k5_s2_e3_c120_poolskip"
        "-ir_r1_k3_s1_e6_c320_idskip")
    model = SPACE.build(arch, num_classes=10, width_mult=0.25).eval()
    torch.manual_seed(0)
    for m in model.modules():  # give BN and the classifier non-trivial values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.1, 0.5)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 1.0)
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "child.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_ops_and_skips_restrict_every_block() -> None:
    sub = get_space("mnasnet", ops="mbconv6, mbconv3", skips="identity")
    assert sub.ops == ("mbconv3", "mbconv6") and sub.skips == ("identity",)
    assert [d.size for d in sub.decisions()[:6]] == [2, 2, 2, 1, 3, 3]
    rng = random.Random(0)
    for _ in range(20):
        arch = sub.sample(rng)
        assert {b.op for b in arch.blocks} <= {"mbconv3", "mbconv6"}
        assert {b.skip for b in arch.blocks} == {"identity"}
        text = arch.encode()
        assert sub.decode(text) == arch and sub.to_choices(sub.decode(text)) == sub.to_choices(arch)
        # the same architecture is the same network in the full space
        assert SPACE.from_choices(SPACE.to_choices(arch)) == arch
        assert SPACE.key(arch) == sub.key(arch)
    with pytest.raises(ValueError, match="block 1 uses op 'dsconv', outside this space's "
                                         r"\(mbconv3, mbconv6\)"):
        sub.to_choices(MBV2)
    for bad in ("mbconv9", "", "mbconv6,,x"):
        with pytest.raises(ValueError, match="ops must be a comma-separated subset of "
                                             "conv, dsconv, mbconv3, mbconv6"):
            get_space("mnasnet", ops=bad)
    with pytest.raises(ValueError, match="skips must be a comma-separated subset of "
                                         "pool, identity, none"):
        get_space("mnasnet", skips="residual")

"""nasrl space: anchor layout, depth schedule, strings, compilation rules, building."""

from __future__ import annotations

import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnas.decisions import Subset
from mnas.spaces import get_space, space_names
from mnas.spaces.nasrl import ConvLayer, NasRLArch, NasRLSpace, _pad_cat
from tests.onnx_check import assert_onnx_matches


@pytest.fixture(scope="module")
def space():
    return get_space("nasrl")


@pytest.fixture(scope="module")
def strided():
    return get_space("nasrl", strides="1,2,3")


def test_registered_with_cifar_deploy_setting(space):
    assert "nasrl" in space_names()
    assert isinstance(space, NasRLSpace)
    assert (space.deploy_resolution, space.deploy_classes) == (32, 10)
    assert space.strides == (1,) and get_space("nasrl", strides="search").strides == (1, 2, 3)


@pytest.mark.parametrize("strides", ["1", "1,2,3"])
def test_each_layer_subset_sees_exactly_the_earlier_layers_anchors(strides):
    ds = get_space("nasrl", strides=strides).decisions_for_depth(7)
    anchors: list[int] = []  # layer index of each recorded anchor, oldest first
    seen_subsets = 0
    for d in ds:
        layer = int(d.name.split(".")[0][1:])
        if isinstance(d, Subset):
            assert d.n == layer and anchors[-d.n:] == list(range(layer))
            seen_subsets += 1
        if d.anchor:
            anchors.append(layer)
    assert anchors == list(range(7)) and seen_subsets == 6
    # the anchor is each layer's last decision
    last = {}
    for k, d in enumerate(ds):
        last[d.name.split(".")[0]] = k
    assert {k for k, d in enumerate(ds) if d.anchor} == set(last.values())


def test_depth_schedule_grows_at_the_right_children_counts():
    space = NasRLSpace()

    def depth(n: int) -> int:
        return len({d.name.split(".")[0] for d in space.decisions(n)})

    assert [depth(n) for n in (0, 1599, 1600, 3199, 3200, 16000)] == [6, 6, 8, 8, 10, 26]
    assert len(space.decisions(1600)) == 8 * 3 + 7
    capped = NasRLSpace(start_depth=3, grow_by=1, grow_every=10, max_depth=5)
    assert [capped.depth_at(n) for n in (0, 9, 10, 25, 1000)] == [3, 3, 4, 5, 5]
    assert NasRLSpace(grow_by=0).depth_at(10**6) == 6
    # without max_depth the growth still stops at a network that can be built
    assert NasRLSpace(grow_by=1000, grow_every=1).depth_at(10**9) == 1000
    with pytest.raises(ValueError, match="children_seen"):
        space.decisions(-1)
    with pytest.raises(ValueError, match="max_depth"):
        NasRLSpace(start_depth=6, max_depth=4)


@st.composite
def _choices(draw):
    space = draw(st.sampled_from([NasRLSpace(), NasRLSpace(strides="1,2,3")]))
    depth = draw(st.integers(1, 14))
    ds = space.decisions_for_depth(depth)
    return space, tuple(draw(st.integers(0, d.size - 1)) for d in ds)


@settings(max_examples=150, deadline=None)
@given(_choices())
def test_choices_and_strings_round_trip_at_any_depth(case):
    space, choices = case
    arch = space.from_choices(choices)
    assert space.to_choices(arch) == choices
    text = arch.encode()
    assert space.decode(text) == arch and space.decode(text).encode() == text
    assert space.key(arch) == f"nasrl:{text}"


def test_string_layout():
    space = NasRLSpace(strides="1,2,3")
    # layer 1 reads nothing (image), layer 2 reads layers 0 and 1
    arch = space.from_choices((1, 2, 0, 1, 0, 0, 3, 2, 0, 3, 1, 1, 2, 2))
    assert arch.encode() == "L0:fh3fw5f24s2|L1:fh1fw7f48s1in-|L2:fh3fw3f48s3in0+1"


@pytest.mark.parametrize("text, needle", [
    ("L0:fh4fw3f24s1", "filter height 4.*1, 3, 5, 7"),
    ("L0:fh3fw2f24s1", "filter width 2.*1, 3, 5, 7"),
    ("L0:fh3fw3f25s1", "filters 25.*24, 36, 48, 64"),
    ("L0:fh3fw3f24s2", "stride 2.*valid: 1"),
    ("L0:fh3fw3f24s1|L1:fh3fw3f24s1in1", "'L1:fh3fw3f24s1in1'.*0..0"),
    ("L0:fh3fw3f24s1|L1:fh3fw3f24s1", "needs its inputs"),
    ("L0:fh3fw3f24s1in-", "layer 0 always reads the image"),
    ("L0:fh3fw3f24s1|L2:fh3fw3f24s1in0", "expected 'L1:'"),
    ("L0:fh3fw3f24s1|L1:fh3fw3f24s1in0|L2:fh3fw3f24s1in1+0", "ascending"),
    ("L0:fh3fw3f24s1|L1:k3", "bad layer token 'L1:k3'"),
    ("", "bad layer token ''"),
])
def test_decode_names_the_bad_token(space, text, needle):
    with pytest.raises(ValueError, match=needle):
        space.decode(text)


def test_bad_choice_vectors_and_options_are_rejected(space):
    with pytest.raises(ValueError, match="fit no depth"):
        space.from_choices((0, 0))
    with pytest.raises(ValueError, match="out of range"):
        space.from_choices((0, 0, 4))
    with pytest.raises(ValueError, match="strides"):
        NasRLSpace(strides="1,x")
    with pytest.raises(TypeError):
        space.to_choices("L0:fh3fw3f24s1")
    with pytest.raises(ValueError, match="width_mult"):
        space.build(space.parse("chain6"), width_mult=0)


def test_mutate_follows_the_depth_schedule(space):
    rng = random.Random(0)
    for _ in range(20):
        arch = space.sample(rng)
        grown = space.mutate(arch, rng, children_seen=1600)
        assert arch.depth == 6 and grown.depth == 8
        old, new = space.to_choices(arch), space.to_choices(grown)
        assert sum(a != b for a, b in zip(old, new, strict=False)) <= 1  # the old layers stay


def test_compilation_rules_image_fallback_unconsumed_outputs_and_padding(strided):
    # L1 reads nothing → image; L0 (stride 3) and L1 (stride 1) feed L2, padded to 32×32;
    # L1 is consumed, L0 is consumed, so only L2 and L3 reach the classifier.
    arch = strided.decode("L0:fh3fw3f24s3|L1:fh5fw1f36s1in-|L2:fh1fw1f48s2in0+1|L3:fh3fw3f64s1in-")
    assert arch.unconsumed() == (2, 3)
    model = strided.build(arch, width_mult=1.0, in_channels=3)
    assert model.layers[1][0].in_channels == 3  # image fallback
    assert model.layers[2][0].in_channels == 24 + 36  # depth concat of its inputs
    assert model.classifier.in_features == 48 + 64  # unconsumed outputs concatenated
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    a, b = torch.ones(1, 2, 3, 3), torch.ones(1, 1, 6, 5)
    out = _pad_cat([a, b])
    assert out.shape == (1, 3, 6, 5)
    assert out[0, :2].sum() == 18 and out[0, :2, 1:4, 1:4].sum() == 18  # centred, zeros around


def test_chain6_named_point_builds(space):
    arch = space.parse("chain6")
    assert [layer.inputs for layer in arch.layers] == [(), (0,), (1,), (2,), (3,), (4,)]
    assert space.build(arch, num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_200_random_children_build_and_run_at_proxy_and_deploy_size():
    """No compilation failure over depths 6..12, fixed and searched strides."""
    rng = random.Random(1234)
    spaces = [NasRLSpace(), NasRLSpace(strides="1,2,3")]
    res = spaces[0].deploy_resolution
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(200):
            space = spaces[i % 2]
            arch = space.sample(rng, children_seen=rng.randrange(0, 4 * 1600))
            model = space.build(arch, width_mult=0.25)
            model.train()
            proxy = model(torch.randn(2, 3, 28, 28))
            model.eval()
            deploy = model(torch.randn(1, 3, res, res))
            assert proxy.shape == (2, 10) and deploy.shape == (1, 10), arch.encode()
            assert torch.isfinite(proxy).all() and torch.isfinite(deploy).all(), arch.encode()
    elapsed = time.perf_counter() - start
    print(f"nasrl: 200 children built and run in {elapsed:.1f} s")


def test_onnx_export_matches_torch(strided, tmp_path):
    arch = strided.decode("L0:fh3fw5f24s2|L1:fh1fw3f24s1in-|L2:fh3fw3f48s3in0+1|L3:fh7fw1f24s1in0+2")
    assert_onnx_matches(strided.build(arch, width_mult=0.5), tmp_path / "nasrl.onnx")


def test_arch_value_validation():
    with pytest.raises(ValueError, match="inputs"):
        NasRLArch((ConvLayer(3, 3, 24), ConvLayer(3, 3, 24, 1, (1,))))
    with pytest.raises(ValueError, match="at least one layer"):
        NasRLArch(())

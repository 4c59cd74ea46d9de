"""pnas space: anchor layout, growing cells, strings, symmetry, encoding, building, export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnas.decisions import Pointer, validate_choices
from mnas.spaces import get_space, space_names
from mnas.spaces.cell_ops import PNAS_OPS
from mnas.spaces.pnas import PnasArch, PnasSpace, make_arch
from tests.onnx_check import assert_onnx_matches


@pytest.fixture(scope="module")
def space():
    return get_space("pnas")


def test_registered_with_cifar_deploy_setting_and_27_decisions(space):
    assert "pnas" in space_names()
    assert isinstance(space, PnasSpace)
    assert (space.deploy_resolution, space.deploy_classes) == (32, 10)
    assert len(space.decisions()) == 2 + 5 * 5
    assert space.OPS == PNAS_OPS and len(set(PNAS_OPS)) == 8
    combines = [d for d in space.decisions() if d.name.endswith("combine")]
    assert len(combines) == 5 and all(d.options == ("add",) for d in combines)


def test_pointers_range_over_cell_inputs_and_earlier_blocks_like_nasnet(space):
    anchors: list[str] = []
    pointers = 0
    for d in space.decisions():
        _, _, rest = d.name.partition(".")
        if isinstance(d, Pointer):
            b = int(rest.split(".")[0][1:])
            assert anchors[-d.n:] == ["h_i", "h_i-1"] + [f"b{k}" for k in range(b)]
            pointers += 1
        if d.anchor:
            anchors.append(rest if rest in ("h_i", "h_i-1") else rest.split(".")[0])
    assert pointers == 10 and anchors == ["h_i", "h_i-1", "b0", "b1", "b2", "b3", "b4"]


def test_b_block_decisions_are_a_prefix_and_every_size_is_a_valid_arch(space):
    full = space.decisions()
    for b in range(1, 6):
        ds = space.decisions_for_blocks(b)
        assert ds == full[: 2 + 5 * b]
        arch = space.from_choices([d.size - 1 for d in ds])
        assert len(arch.blocks) == b and space.to_choices(arch) == tuple(d.size - 1 for d in ds)
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ValueError, match="1..5 blocks"):
            space.decisions_for_blocks(bad)
    with pytest.raises(ValueError, match=r"8 choices fit no cell.*\(7, 12, 17, 22, 27\)"):
        space.from_choices([0] * 8)
    with pytest.raises(ValueError, match="out of range for 'cell.b0.in1'"):
        space.from_choices([0, 0, 2, 0, 0, 0, 0])


@st.composite
def _cells(draw):
    space = draw(st.sampled_from([PnasSpace(), PnasSpace(blocks=2)]))
    b = draw(st.integers(1, space.blocks))
    choices = tuple(draw(st.integers(0, d.size - 1)) for d in space.decisions_for_blocks(b))
    return space, choices


@settings(max_examples=150, deadline=None)
@given(_cells())
def test_choices_strings_and_canonical_form_round_trip(case):
    space, choices = case
    arch = space.from_choices(choices)
    assert space.to_choices(arch) == choices
    text = arch.encode()
    assert space.decode(text) == arch and space.decode(text).encode() == text
    canon = space.canonical(arch)
    assert space.canonical(canon) == canon and len(canon.blocks) == len(arch.blocks)
    # add is commutative: swapping every block's halves is the same cell and encoding
    swapped = make_arch([(b.in2, b.op2, b.in1, b.op1) for b in arch.blocks])
    assert space.canonical(swapped) == canon
    v = space.vector(arch)
    assert v.shape == (space.vector_size,)
    np.testing.assert_array_equal(v, space.vector(swapped))
    parts = sum(space.block_vector(k, blk) for k, blk in enumerate(arch.blocks))
    np.testing.assert_allclose(v, parts)
    assert v[-1] == len(arch.blocks)
    summary = v[space.summary_columns]
    n_ops = len(space.OPS)
    assert summary[:n_ops].sum() == 2 * len(arch.blocks)  # every op counted once
    np.testing.assert_array_equal(summary[n_ops:-1].reshape(n_ops, 3).sum(axis=1),
                                  summary[:n_ops])


def test_string_layout_and_named_pnasnet5(space):
    arch = space.from_choices([0, 0, 1, 0, 0, 6, 0] + [2, 0, 4, 3, 0])
    assert arch.encode() == "[sep3x3~1+max3x3~0][id~2+conv1x7_7x1~0]"
    p5 = space.parse("pnasnet-5")
    assert p5.encode() == ("[sep5x5~1+max3x3~1][sep7x7~0+max3x3~0][sep5x5~0+sep3x3~0]"
                           "[sep3x3~4+max3x3~0][sep3x3~1+id~0]")
    assert PnasSpace(blocks=3).named() == {}


@pytest.mark.parametrize("text, needle", [
    ("[foo~0+id~1]", "unknown operation 'foo'; valid: sep3x3, sep5x5"),
    ("[sep3x3~2+id~1]", "block 0: bad input '2'; valid: 0..1"),
    ("[sep3x3~0]", "must be 'op~input\\+op~input'"),
    ("sep3x3~0+id~1", "must be blocks like"),
    ("[id~0+id~1]" * 6, "has 6 blocks; this space allows 1..5"),
    ("[id~0+id~1,add]", "bad input '1,add'"),
    ("[conv3x3~0+id~1]", "unknown operation 'conv3x3'"),
])
def test_decode_errors_name_the_problem(space, text, needle):
    with pytest.raises(ValueError, match=needle):
        space.decode(text)


def test_checks_archs_from_elsewhere(space):
    with pytest.raises(TypeError, match="expected a PnasArch"):
        space.to_choices("[id~0+id~1]")
    with pytest.raises(ValueError, match="this space allows 1..2"):
        PnasSpace(blocks=2).vector(space.parse("pnasnet-5"))
    with pytest.raises(ValueError, match="combine by 'add'"):
        from mnas.spaces.nasnet import Block, Cell
        PnasArch(Cell((Block(0, 1, "id", "id", "concat"),)))
    with pytest.raises(ValueError, match="blocks must be an integer >= 1"):
        PnasSpace(blocks=0)


def test_block_options_and_expansions_are_distinct_canonical_cells(space):
    one = space.block_options(0)
    assert len(one) == 136  # 16 (input, op) halves, unordered pairs with repetition
    assert len(space.block_options(4)) == 48 * 49 // 2
    arch = space.decode("[sep3x3~1+max3x3~0][id~2+avg3x3~0]")
    kids = space.expand(arch)
    assert len(kids) == 32 * 33 // 2 and len({k.encode() for k in kids}) == len(kids)
    for k in kids:
        assert k.blocks[:2] == arch.blocks and len(k.blocks) == 3
        last = k.blocks[2]
        assert (last.in1, PNAS_OPS.index(last.op1)) <= (last.in2, PNAS_OPS.index(last.op2))
    with pytest.raises(ValueError, match="maximum 5 blocks"):
        space.expand(space.parse("pnasnet-5"))


def test_mutate_changes_one_token_and_keeps_the_size(space):
    rng = random.Random(0)
    for b in (1, 3, 5):
        arch = space.from_choices([0] * (2 + 5 * b))
        for _ in range(30):
            new = space.mutate(arch, rng)
            a, n = space.to_choices(arch), space.to_choices(new)
            assert len(n) == len(a) and sum(x != y for x, y in zip(a, n, strict=True)) == 1
            validate_choices(space.decisions_for_blocks(b), n)


def _spatial_sizes(model, res):
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape)) for c in model.cells]
    with torch.no_grad():
        model(torch.randn(1, 3, res, res))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("b", [1, 3, 5])
def test_build_concatenates_every_block_and_reduces_twice(space, b):
    rng = random.Random(b)
    for _ in range(3):
        arch = space.from_choices([rng.randrange(d.size) for d in space.decisions_for_blocks(b)])
        model = space.build(arch, width_mult=0.5)
        model.eval()
        sizes = _spatial_sizes(model, 32)
        f = 8  # filters 16 × width 0.5
        # N=2 cells at F, reduction + 2 cells at 2F, reduction + 2 cells at 4F; each
        # cell outputs b blocks × its F channels (all blocks concatenated, PNAS's rule)
        assert [s[1] for s in sizes] == [b * f] * 2 + [b * 2 * f] * 3 + [b * 4 * f] * 3
        assert [s[2] for s in sizes] == [32, 32, 16, 16, 16, 8, 8, 8]
        assert model.classifier.in_features == b * 4 * f
        with torch.no_grad():
            out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    model = space.build(space.parse("pnasnet-5"), num_classes=7, in_channels=1)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        space.build(space.parse("pnasnet-5"), width_mult=0)


def test_drop_path_schedule_reaches_every_non_identity_op(space):
    model = space.build(space.parse("pnasnet-5"))
    model.set_training_progress(1.0)
    last = model.cells[-1]
    drops = [p.drop.p for p in last.paths if p.drop is not None]
    assert len(drops) == 9 and all(p == pytest.approx(0.4) for p in drops)  # one id op


def test_onnx_export_matches_torch_all_ops(tmp_path):
    space = PnasSpace(cells_per_stage=1)
    arch = space.decode("[sep3x3~0+sep5x5~1][sep7x7~2+conv1x7_7x1~0][id~1+avg3x3~3]"
                        "[max3x3~4+dil3x3~2]")
    assert {op for blk in arch.blocks for op in (blk.op1, blk.op2)} == set(PNAS_OPS)
    model = space.build(arch, width_mult=0.25)
    model.set_training_progress(1.0)  # export must ignore it (eval mode)
    assert_onnx_matches(model, tmp_path / "pnas.onnx")

"""nasnet space: anchor layout, strings, NASNet-A, ScheduledDropPath, building, export."""

from __future__ import annotations

import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnas.decisions import Pointer
from mnas.spaces import get_space, space_names
from mnas.spaces.cell_ops import NASNET_OPS, PNAS_OPS, DropPath, FactorizedReduce, build_op
from mnas.spaces.nasnet import Block, Cell, NasNetArch, NasNetSpace
from tests.onnx_check import assert_onnx_matches


@pytest.fixture(scope="module")
def space():
    return get_space("nasnet")


def test_registered_with_cifar_deploy_setting_and_54_decisions(space):
    assert "nasnet" in space_names()
    assert isinstance(space, NasNetSpace)
    assert (space.deploy_resolution, space.deploy_classes) == (32, 10)
    assert len(space.decisions()) == 2 * (2 + 5 * 5)
    assert len(NASNET_OPS) == 13 and len(set(NASNET_OPS)) == 13 and set(PNAS_OPS) < set(NASNET_OPS)


def test_pointers_range_over_this_cells_inputs_and_earlier_blocks(space):
    anchors: list[str] = []  # what each recorded anchor stands for, oldest first
    pointers = 0
    for d in space.decisions():
        cell, _, rest = d.name.partition(".")
        if isinstance(d, Pointer):
            b = int(rest.split(".")[0][1:])
            expected = [f"{cell}.h_i", f"{cell}.h_i-1"] + [f"{cell}.b{k}" for k in range(b)]
            assert anchors[-d.n:] == expected
            pointers += 1
        if d.anchor:
            anchors.append(d.name if rest in ("h_i", "h_i-1") else f"{cell}.{rest.split('.')[0]}")
    assert pointers == 20 and len(anchors) == 14


@st.composite
def _choices(draw):
    space = draw(st.sampled_from([NasNetSpace(), NasNetSpace(blocks=2)]))
    return space, tuple(draw(st.integers(0, d.size - 1)) for d in space.decisions())


@settings(max_examples=150, deadline=None)
@given(_choices())
def test_choices_and_strings_round_trip(case):
    space, choices = case
    arch = space.from_choices(choices)
    assert space.to_choices(arch) == choices
    text = arch.encode()
    assert space.decode(text) == arch and space.decode(text).encode() == text


def test_string_layout_and_unused_outputs(space):
    choices = [0, 0] + [0, 1, 10, 0, 1] + [2, 2, 4, 5, 0] * 4
    choices += [0, 0] + [1, 1, 12, 12, 0] * 5
    arch = space.from_choices(choices)
    assert arch.encode().startswith("normal:[sep3x3~0+id~1,concat][avg3x3~2+max3x3~2,add]")
    assert arch.encode().split("|")[1].startswith("reduce:[sep7x7~1+sep7x7~1,add]")
    assert arch.normal.unused() == (1, 2, 3, 4) and arch.reduce.unused() == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("text, needle", [
    ("normal:[foo~0+id~1,add]", "unknown operation 'foo'; valid: id, conv1x3_3x1"),
    ("normal:[sep3x3~2+id~1,add]", "block 0: bad input '2'; valid: 0..1"),
    ("normal:[sep3x3~0+id~1,mul]", "bad combine 'mul'; valid: add, concat"),
    ("normal:[sep3x3~0+id~1,add]|reduce:[sep3x3~0+id~1,add]", "normal cell has 1 blocks, expected 5"),
    ("normal:[sep3x3~0,add]", "must be 'op~input\\+op~input'"),
    ("reduce:[id~0+id~1,add]|normal:[id~0+id~1,add]", "expected cell 'normal', got 'reduce'"),
    ("normal:sep3x3~0+id~1,add", "written one after another"),
    ("nonsense", "normal:<blocks>\\|reduce:<blocks>"),
])
def test_decode_names_the_bad_token(space, text, needle):
    if "|" not in text and text.startswith("normal:"):
        text += "|reduce:" + "[id~0+id~1,add]" * 5
    with pytest.raises(ValueError, match=needle):
        space.decode(text)


def test_bad_values_are_rejected(space):
    with pytest.raises(ValueError, match="out of range"):
        Cell((Block(0, 2, "id", "id"),))
    with pytest.raises(ValueError, match="expected 54 choices"):
        space.from_choices([0] * 10)
    with pytest.raises(TypeError, match="NasNetArch"):
        space.build(object())
    with pytest.raises(ValueError, match="filters"):
        NasNetSpace(filters=1)
    with pytest.raises(ValueError, match="drop_path"):
        NasNetSpace(drop_path=1.0)
    with pytest.raises(ValueError, match="unknown operation 'sep9x9'"):
        build_op("sep9x9", 4, 4)
    small = NasNetSpace(blocks=2)
    with pytest.raises(ValueError, match="this space has 2"):
        small.to_choices(space.parse("nasnet-a"))


def test_nasnet_a_named_point_follows_the_slim_reference(space):
    arch = space.parse("nasnet-a")
    # slim NasNetANormalCell: ops and hiddenstate_indices, pairwise per block
    ops = ["sep5x5", "sep3x3", "sep5x5", "sep3x3", "avg3x3", "id", "avg3x3", "avg3x3",
           "sep3x3", "id"]
    idx = [0, 1, 1, 1, 0, 1, 1, 1, 0, 0]
    assert [x for b in arch.normal.blocks for x in (b.op1, b.op2)] == ops
    assert [x for b in arch.normal.blocks for x in (b.in1, b.in2)] == idx
    red_ops = ["sep5x5", "sep7x7", "max3x3", "sep7x7", "avg3x3", "sep5x5", "id", "avg3x3",
               "sep3x3", "max3x3"]
    red_idx = [0, 1, 0, 1, 0, 1, 3, 2, 2, 0]
    assert [x for b in arch.reduce.blocks for x in (b.op1, b.op2)] == red_ops
    assert [x for b in arch.reduce.blocks for x in (b.in1, b.in2)] == red_idx
    assert arch.reduce.unused() == (2, 3, 4)


def test_nasnet_a_builds_and_runs_at_32_and_224(space):
    model = space.build(space.parse("nasnet-a"), width_mult=0.25).eval()
    f = 4  # 16 · 0.25
    assert model.cells[0].out_channels == 5 * f  # five unused adds
    assert model.classifier.in_features == 5 * 4 * f
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)
    gray = space.build("nasnet-a", num_classes=3, width_mult=0.25, in_channels=1).eval()
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_scheduled_drop_path_rises_linearly_and_is_off_in_eval():
    space = NasNetSpace(cells_per_stage=1, drop_path=0.5)
    model = space.build("nasnet-a", width_mult=0.25)
    drops = [[m.p for m in cell.modules() if isinstance(m, DropPath)] for cell in model.cells]
    assert all(p == 0.0 for ps in drops for p in ps) and len(drops) == 5
    model.set_training_progress(0.4)
    for c, cell in enumerate(model.cells):
        ps = [m.p for m in cell.modules() if isinstance(m, DropPath)]
        # every non-identity op: NASNet-A has 2 ids in the normal cell, 1 in the reduction
        assert ps == [pytest.approx(0.5 * 0.4 * (c + 1) / 5)] * (9 if c in (1, 3) else 8)
    # identity paths are never dropped (slim's rule)
    n_paths = sum(1 for _ in model.cells[0].paths)
    assert sum(1 for p in model.cells[0].paths if p.drop is None) == 2 and n_paths == 10
    x = torch.randn(4, 3, 16, 16)
    model.set_training_progress(1.0)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x)
        b = model(x)
    assert not torch.allclose(a, b)  # paths dropped at random in training
    model.set_training_progress(0.0)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x))  # no drop at progress 0
    model.set_training_progress(1.0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="progress"):
        model.set_training_progress(1.5)


def test_factorized_reduce_handles_odd_sizes():
    fr = FactorizedReduce(6, 5)
    assert fr(torch.randn(1, 6, 7, 9)).shape == (1, 5, 4, 5)


def test_200_random_children_build_and_run_at_proxy_and_deploy_size():
    """No compilation failure: 200 random cell pairs, proxy 28×28 (odd 7×7 after two
    reductions) in training mode with drop path, deployment 32×32 in eval mode.

    All 200 in the search setting, N = 2 normal cells per stage (width 0.25 keeps it
    fast; the wiring does not depend on the width), and 5 more at N = 1, where a
    reduction cell follows a single normal cell."""
    rng = random.Random(99)
    search, short = NasNetSpace(), NasNetSpace(cells_per_stage=1)
    res = search.deploy_resolution
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(205):
            space = search if i < 200 else short
            arch = space.sample(rng)
            model = space.build(arch, width_mult=0.25)
            model.set_training_progress(rng.random())
            model.train()
            proxy = model(torch.randn(2, 3, 28, 28))
            model.eval()
            deploy = model(torch.randn(1, 3, res, res))
            assert proxy.shape == (2, 10) and deploy.shape == (1, 10), arch.encode()
            assert torch.isfinite(proxy).all() and torch.isfinite(deploy).all(), arch.encode()
    print(f"nasnet: 205 children built and run in {time.perf_counter() - start:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU")


def test_onnx_export_matches_torch_without_drop_path(tmp_path):
    space = NasNetSpace(cells_per_stage=1)
    arch = NasNetArch(
        normal=space.parse("nasnet-a").normal,
        reduce=space.decode("normal:" + "[id~0+id~1,add]" * 5 + "|reduce:[conv1x7_7x1~0+dil3x3~1,concat]"
                            "[max7x7~2+conv1x3_3x1~1,add][id~0+max5x5~3,concat]"
                            "[conv1x1~4+conv3x3~1,add][sep7x7~0+max3x3~2,add]").reduce)
    used = {op for c in (arch.normal, arch.reduce) for b in c.blocks for op in (b.op1, b.op2)}
    assert used == set(NASNET_OPS)
    model = space.build(arch, width_mult=0.25)
    model.set_training_progress(1.0)  # export must ignore it (eval mode)
    assert_onnx_matches(model, tmp_path / "nasnet.onnx")

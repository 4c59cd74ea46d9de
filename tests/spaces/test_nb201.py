"""nb201 space: the standard strings of all 15,625 cells, validation, and the network."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch

from mnas.spaces import get_space, space_names
from mnas.spaces.nb201 import EDGES, OPS, NB201Arch
from tests.onnx_check import assert_onnx_matches

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


def test_registered_with_cifar100_deploy_shape(space):
    assert "nb201" in space_names()
    assert space.deploy_resolution == 32 and space.deploy_classes == 100
    assert [d.options for d in space.decisions()] == [OPS] * 6
    assert len(space.decisions()) == len(EDGES)


def test_every_table_string_round_trips_and_is_distinct(space):
    with DATA.open(newline="") as f:
        archs = [row["arch"] for row in csv.DictReader(f)]
    assert len(archs) == 15625
    decoded = [space.decode(a) for a in archs]
    assert [space.encode(a) for a in decoded] == archs
    assert len(set(decoded)) == 15625
    # choices cover the whole product space exactly once
    assert len({space.to_choices(a) for a in decoded}) == 5**6


def test_choices_round_trip_and_string_layout(space):
    rng = random.Random(3)
    for _ in range(200):
        choices = tuple(rng.randrange(5) for _ in range(6))
        arch = space.from_choices(choices)
        assert space.to_choices(arch) == choices
        assert space.decode(arch.encode()) == arch
    arch = space.from_choices((0, 1, 2, 3, 4, 0))
    assert arch.encode() == ("|none~0|+|skip_connect~0|nor_conv_1x1~1|"
                             "+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|")


@pytest.mark.parametrize("text, needle", [
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv~0'"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "'none~2'"),
    ("|none~0|+|none~0|none~1|", "3 '+'-separated"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 edges"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "wrapped in '|'"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0'"),
])
def test_decode_names_the_bad_token(space, text, needle):
    with pytest.raises(ValueError) as err:
        space.decode(text)
    assert needle in str(err.value)


def test_bad_op_message_lists_valid_ops(space):
    with pytest.raises(ValueError, match="avg_pool_3x3"):
        space.decode("|max_pool~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="out of range"):
        space.from_choices((0, 0, 0, 0, 0, 5))
    with pytest.raises(ValueError, match="6 edges"):
        NB201Arch(("none",))


def test_mutate_changes_exactly_one_edge(space):
    rng = random.Random(0)
    arch = space.sample(rng)
    for _ in range(50):
        child = space.mutate(arch, rng)
        diff = sum(a != b for a, b in zip(arch.ops, child.ops, strict=True))
        assert diff == 1
        arch = child


def test_network_shape_and_parameter_count(space):
    # NAS-Bench-201 reports ~1.3 M parameters for its best CIFAR-100 cell (C=16, N=5)
    best = space.build(space.parse("best_cifar100"))
    n_best = sum(p.numel() for p in best.parameters())
    assert 1.2e6 < n_best < 1.4e6
    # only the skeleton (stem, reductions, head) has weights in an all-`none` network
    empty = space.build("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert sum(p.numel() for p in empty.parameters()) < n_best / 3
    x = torch.randn(2, 3, 32, 32)
    assert best.eval()(x).shape == (2, 100)
    assert space.build(space.parse("resnet"), num_classes=10)(x).shape == (2, 10)


def test_degenerate_cell_output_ignores_the_input(space):
    # no path input→output: logits are the same for every image (benchmark: ~1% accuracy)
    net = space.build("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|").eval()
    out = net(torch.randn(3, 3, 32, 32))
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[2])


def test_onnx_export_matches_torch(tmp_path):
    space = get_space("nb201", C=8, N=1)  # same ops and blocks, smaller: faster export
    arch = space.from_choices((3, 4, 2, 1, 0, 3))  # every op appears
    assert_onnx_matches(space.build(arch), tmp_path / "nb201.onnx",
                        space.deploy_resolution, atol=1e-4)

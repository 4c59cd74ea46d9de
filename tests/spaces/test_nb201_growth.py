"""nb201 as a Progressive space: cells grown node by node are full NB201 cells whose later
nodes pass the last grown node through, so every one is in the table and computes the
smaller cell; stages of 5, 25 and 125 choices; a size-aware encoding."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mnas.spaces import Progressive, get_space
from mnas.spaces.nb201 import EDGES, OPS, Cell, grown_cell

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.fixture(scope="module")
def table_archs() -> set[str]:
    with DATA.open(newline="") as f:
        return {row["arch"] for row in csv.DictReader(f)}


def test_is_progressive_with_three_stages_of_5_25_125(space):
    assert isinstance(space, Progressive) and space.growth_stages == 3
    ones = space.smallest_cells()
    assert len({a.encode() for a in ones}) == 5
    assert [space.cell_size(a) for a in ones] == [1] * 5
    keys, rows = space.grow(ones[3])
    assert len(set(keys)) == 25 and rows.shape == (25, space.summary_columns.stop)
    two = space.decode(keys[7])
    keys3, rows3 = space.grow(two)
    assert len(set(keys3)) == 125 and rows3.shape[0] == 125
    with pytest.raises(ValueError, match="all 3 nodes"):
        space.grow(space.decode(keys3[0]))


def test_grown_cells_are_table_strings_and_reach_every_other_cell_once(space, table_archs):
    ones = [a.encode() for a in space.smallest_cells()]
    twos = [k for a in ones for k in space.grow(space.decode(a))[0]]
    assert set(ones) <= table_archs and set(twos) <= table_archs
    assert len(twos) == 125 and len(set(twos)) == 125
    # 5 of the 25 node-2 choices pass node 1 through: they are the 1-node parents
    assert {k for k in twos if space.cell_size(space.decode(k)) == 1} == set(ones)
    threes = [k for a in twos if space.cell_size(space.decode(a)) == 2
              for k in space.grow(space.decode(a))[0]]
    assert len(threes) == 120 * 125 and len(set(threes)) == len(threes)
    assert set(threes) <= table_archs
    # growth reaches every other cell but those whose node 2 only passes node 1 on
    # (node 3 over two copies of node 1); they are one-token neighbours of grown cells
    rest = {space.decode(k) for k in table_archs - set(threes)}
    assert len(rest) == 5 * 125 and all(a.ops[1:3] == ("none", "skip_connect") for a in rest)
    # the expansion rows are the cells' own encodings
    keys, rows = space.grow(space.decode(twos[31]))
    np.testing.assert_array_equal(rows, np.stack([space.vector(space.decode(k)) for k in keys]))


def test_expansions_extend_the_parent_and_have_one_node_more(space):
    parent = grown_cell(("nor_conv_3x3", "skip_connect", "avg_pool_3x3"))
    assert space.cell_size(parent) == 2
    keys, _ = space.grow(parent)
    kids = [space.decode(k) for k in keys]
    assert all(k.ops[:3] == parent.ops[:3] for k in kids)
    sizes = [space.cell_size(k) for k in kids]
    # one choice of node 3 (none, none, skip from node 2) passes node 2 through: the parent
    assert sizes.count(2) == 1 and kids[sizes.index(2)] == parent
    assert sizes.count(3) == 124


def test_pass_through_nodes_compute_the_grown_cell():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    for b, prefix in ((1, ("nor_conv_3x3",)), (2, ("nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3"))):
        arch = grown_cell(prefix)
        assert arch.ops[len(prefix):] == tuple(
            "skip_connect" if frm == to - 1 else "none" for to, frm in EDGES[len(prefix):])
        cell = Cell(arch.ops, 4).eval()
        # the b-node cell by hand, with the same edge modules: node i sums its in-edges
        nodes, k = [x], 0
        for to in range(1, b + 1):
            nodes.append(sum(cell.edges[k + frm](nodes[frm]) for frm in range(to)))
            k += to
        with torch.no_grad():
            torch.testing.assert_close(cell(x), nodes[b])


def test_cell_size_neighbours_and_random_cells(space):
    full = space.decode("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    assert space.cell_size(full) == 3
    nb = [space.decode(k) for k in space.neighbours(full)]
    assert len(set(nb)) == 24 and full not in nb
    assert all(sum(a != b for a, b in zip(n.ops, full.ops, strict=True)) == 1 for n in nb)
    two = grown_cell(("nor_conv_3x3", "none", "avg_pool_3x3"))
    nb2 = [space.decode(k) for k in space.neighbours(two)]
    assert len(set(nb2)) == 12 and all(n.ops[3:] == two.ops[3:] for n in nb2)
    rng = random.Random(0)
    for size in (1, 2, 3):
        cells = [space.random_cell(rng, size) for _ in range(50)]
        # a random node can happen to pass through (then the cell is smaller)
        assert max(space.cell_size(c) for c in cells) == size
        assert all(c.ops[len(EDGES) - 3:] == ("none", "none", "skip_connect") for c in cells
                   if space.cell_size(c) < 3)
    with pytest.raises(ValueError, match="1..3 nodes"):
        space.random_cell(rng, 4)
    with pytest.raises(TypeError, match="NB201Arch"):
        space.cell_size("|none~0|")


def test_encoding_is_size_aware(space):
    cols = space.summary_columns
    one = grown_cell(("nor_conv_3x3",))
    v = space.vector(one)
    assert v.shape == (cols.stop,)
    assert v[: len(OPS)].tolist() == [0, 0, 0, 1, 0]
    assert not v[len(OPS): cols.start].any()  # pass-through edges: no one-hot
    counts = v[cols]
    assert counts[OPS.index("nor_conv_3x3")] == 1 and counts[: len(OPS)].sum() == 1
    assert counts[-1] == 1
    full = space.decode("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    w = space.vector(full)
    assert w[: cols.start].sum() == 6 and w[cols][: len(OPS)].sum() == 6 and w[-1] == 3
    # op counts split by whether the edge reads the cell input (node 0)
    from_input = w[cols.start + len(OPS): cols.start + 2 * len(OPS)]
    assert from_input[OPS.index("nor_conv_3x3")] == 1 and from_input.sum() == 3

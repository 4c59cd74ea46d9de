"""``pnas``: Progressive NAS's cell space (Liu et al., 2018).

One cell type, used both as the normal cell and — with stride 2 on the operations that
read the cell inputs — as the reduction cell, stacked in the NASNet CIFAR skeleton of
:mod:`mnas.spaces.nasnet` (``cells_per_stage`` N normal cells per stage, reductions
between stages, ``filters`` F doubling at each)::

    stem 3x3 conv (stem_multiplier·F) → N cells (F) → reduction (2F) → N cells (2F)
    → reduction (4F) → N cells (4F) → ReLU → global average pool → linear

A cell has up to B = ``blocks`` (5) blocks. Each block picks two hidden states, one of
the 8 PNAS operations for each (``PNAS_OPS`` in :mod:`mnas.spaces.cell_ops`: 3x3, 5x5,
7x7 depthwise-separable conv; 1x7 then 7x1 conv; identity; 3x3 average pool; 3x3 max
pool; 3x3 dilated conv) and adds the two results (combine is always ``add``). Hidden
states are numbered as in ``nasnet``: ``0`` = h_i (previous cell's output), ``1`` =
h_{i-1}, ``2 + k`` = block k of this cell. The cell output is the concatenation of
**all** its block outputs, as in the PNASNet-5 reference (slim's ``used_hiddenstates =
[1, 1, 0, 0, 0, 0, 0]``) — NASNet concatenates only the unused ones.

**Growing cells.** PNAS searches cells of b = 1, 2, …, B blocks. Every cell of 1..B
blocks is a valid architecture: strings, choice vectors and builders accept any number
of blocks in that range. ``decisions()`` describes the full B-block cell;
``decisions_for_blocks(b)`` the b-block one, which is a *prefix* of it, so a b-block
cell's choice vector is the first ``2 + 5·b`` choices of any of its expansions.

**Decisions and anchors** (exactly ``nasnet``'s layout, one cell): the list opens with
two one-option decisions carrying ``anchor=True`` — ``cell.h_i`` then ``cell.h_i-1`` —
and each block is ``in1, in2`` (Pointers over the ``2 + b`` most recent anchors, oldest
first: ``[h_i, h_{i-1}, block 0, …, block b-1]``, so the index is the hidden-state
number), ``op1, op2`` (Categorical over the 8 ops) and ``combine`` — a one-option
``("add",)`` Categorical that carries the block's anchor. 2 + 5·B decisions (27).

**Strings** read ``[sep5x5~1+max3x3~1][sep7x7~0+max3x3~0]...``: one
``[op1~in1+op2~in2]`` per block (no combine token: it is always add). Adding is
commutative, so ``[a~i+b~j]`` and ``[b~j+a~i]`` are the same network;
:meth:`PnasSpace.canonical` orders each block's pair, and :meth:`PnasSpace.vector`
encodes both orders identically.

**Surrogate encoding** (``vector``, the ``Encodable`` capability): fixed length for any
number of blocks. Per block position (padded to B; absent blocks are zeros): one-hot
input and one-hot op of the pair's first half, then of its second half (canonical
order). Then, summed over blocks: counts of each op, counts of (op, input kind) for input
kinds {h_i, h_{i-1}, a block}, and the number of blocks. These size-free counts are what
lets a predictor fit on b-block cells say something about a new block's slot, which it
has never seen filled; they are kept at the scale of the one-hots (1 per occurrence) so a
fitted model leans on them as much as on the positions. The encoding is a sum of
per-block parts (:meth:`PnasSpace.block_vector`), so a child's vector is its parent's
plus its new block's — which is how the ``pnas`` strategy encodes thousands of
expansions at once.

**Options**: ``blocks`` 5, ``cells_per_stage`` 2, ``filters`` 16, ``stem_multiplier``
3, ``drop_path`` 0.4 (ScheduledDropPath exactly as ``nasnet``:
``model.set_training_progress(p)``). The paper's searched CIFAR models used N = 2 and
small F during search; its final PNASNet-5 CIFAR model N = 3, F = 48.

**Deployment setting**: CIFAR — 32×32 inputs, 10 classes (``deploy_resolution`` /
``deploy_classes``). Global pooling lets the same model take 224×224 inputs.

Named point ``pnasnet-5``: the cell of slim's ``PNasNetNormalCell`` (same hidden-state
numbers).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from mnas.decisions import Categorical, Decision, Pointer, validate_choices
from mnas.spaces.base import SearchSpace, is_number, register_space, shown
from mnas.spaces.cell_ops import PNAS_OPS
from mnas.spaces.nasnet import Block, Cell, CellModule, NasNetNetwork, set_cell_options

#: input kinds for the summary counts of the encoding
_KINDS = 3  # h_i, h_{i-1}, an earlier block


@dataclass(frozen=True)
class PnasArch:
    """A PNAS cell: 1..B blocks, each ``op1(state[in1]) + op2(state[in2])``."""

    cell: Cell

    def __post_init__(self) -> None:
        for b, blk in enumerate(self.cell.blocks):
            if blk.combine != "add":
                raise ValueError(f"block {b}: PNAS blocks combine by 'add', got {blk.combine!r}")

    @property
    def blocks(self) -> tuple[Block, ...]:
        return self.cell.blocks

    def encode(self) -> str:
        return "".join(f"[{b.op1}~{b.in1}+{b.op2}~{b.in2}]" for b in self.cell.blocks)

    def __str__(self) -> str:
        return self.encode()


def make_arch(blocks: Sequence[tuple[int, str, int, str]]) -> PnasArch:
    """A cell from ``(in1, op1, in2, op2)`` tuples."""
    return PnasArch(Cell(tuple(Block(i1, i2, o1, o2, "add") for i1, o1, i2, o2 in blocks)))


class PnasCellModule(CellModule):
    """A built PNAS cell: like NASNet's, but its output concatenates every block."""

    def __init__(self, cell: Cell, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 prev_larger: bool) -> None:
        super().__init__(cell, c_prev_prev, c_prev, c, reduction, prev_larger)
        self.out_states = [2 + b for b in range(len(cell.blocks))]
        self.out_channels = c * len(cell.blocks)  # every block adds: c channels each


class PnasNetwork(NasNetNetwork):
    """PNAS cells in the NASNet CIFAR skeleton (see the module docstring)."""

    @staticmethod
    def make_cell(arch: PnasArch, c_pp: int, c_p: int, c: int, reduction: bool,
                  prev_was_reduction: bool) -> nn.Module:
        return PnasCellModule(arch.cell, c_pp, c_p, c, reduction, prev_was_reduction)


# slim's PNasNetNormalCell: operations and hiddenstate_indices, pairwise per block
_PNASNET_5 = ("[sep5x5~1+max3x3~1][sep7x7~0+max3x3~0][sep5x5~0+sep3x3~0]"
              "[sep3x3~4+max3x3~0][sep3x3~1+id~0]")


@register_space
class PnasSpace(SearchSpace):
    """PNAS's single-cell space: 1..B blocks, 8 ops, combine add."""

    name = "pnas"
    deploy_resolution = 32  # CIFAR setting
    deploy_classes = 10
    prefix_choices = True   # a b-block cell's choices are a prefix of the B-block ones
    OPS: tuple[str, ...] = PNAS_OPS

    def __init__(self, blocks: int = 5, cells_per_stage: int = 2, filters: int = 16,
                 stem_multiplier: int = 3, drop_path: float = 0.4) -> None:
        set_cell_options(self, blocks, cells_per_stage, filters, stem_multiplier, drop_path)
        self._op_index = {op: i for i, op in enumerate(self.OPS)}
        self._decisions = self._make_decisions()

    # -- decisions -------------------------------------------------------------------
    def _make_decisions(self) -> tuple[Decision, ...]:
        ds: list[Decision] = [Categorical("cell.h_i", ("h_i",), anchor=True),
                              Categorical("cell.h_i-1", ("h_i-1",), anchor=True)]
        for b in range(self.blocks):
            ds += [Pointer(f"cell.b{b}.in1", 2 + b), Pointer(f"cell.b{b}.in2", 2 + b),
                   Categorical(f"cell.b{b}.op1", self.OPS), Categorical(f"cell.b{b}.op2", self.OPS),
                   Categorical(f"cell.b{b}.combine", ("add",), anchor=True)]
        return tuple(ds)

    def decisions(self, children_seen: int = 0) -> tuple[Decision, ...]:
        """The full B-block cell's decisions (the search does not change them)."""
        return self._decisions

    def decisions_for_blocks(self, b: int) -> tuple[Decision, ...]:
        """The decisions of a b-block cell: the first ``2 + 5·b`` of :meth:`decisions`."""
        b = self._check_count(b)
        return self._decisions[: 2 + 5 * b]

    def _check_count(self, b: Any) -> int:
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 1 <= b <= self.blocks:
            raise ValueError(f"a cell has 1..{self.blocks} blocks in this space, got {b!r}")
        return int(b)

    # -- choices ---------------------------------------------------------------------
    def from_choices(self, choices: Sequence[int]) -> PnasArch:
        n = len(choices)
        b, rem = divmod(n - 2, 5)
        if rem or not 1 <= b <= self.blocks:
            valid = ", ".join(str(2 + 5 * k) for k in range(1, self.blocks + 1))
            raise ValueError(f"{n} choices fit no cell; a b-block cell has 2 + 5·b choices "
                             f"({valid})")
        c = validate_choices(self._decisions[:n], choices)
        blocks = []
        for k in range(b):
            i1, i2, o1, o2, _ = c[2 + 5 * k: 7 + 5 * k]
            blocks.append(Block(i1, i2, self.OPS[o1], self.OPS[o2], "add"))
        return PnasArch(Cell(tuple(blocks)))

    def to_choices(self, arch: PnasArch) -> tuple[int, ...]:
        arch = self._check(arch)
        out = [0, 0]
        for blk in arch.blocks:
            out += [blk.in1, blk.in2, self._op_index[blk.op1], self._op_index[blk.op2], 0]
        return tuple(out)

    def _check(self, arch: Any) -> PnasArch:
        if not isinstance(arch, PnasArch):
            raise TypeError(f"expected a PnasArch, got {type(arch).__name__}")
        if len(arch.blocks) > self.blocks:
            raise ValueError(f"cell has {len(arch.blocks)} blocks, this space allows "
                             f"1..{self.blocks}")
        for b, blk in enumerate(arch.blocks):
            for op in (blk.op1, blk.op2):
                if op not in self._op_index:
                    raise ValueError(f"block {b}: operation {op!r} is not in space "
                                     f"{self.name!r}; valid: {', '.join(self.OPS)}")
        return arch

    # -- strings ---------------------------------------------------------------------
    def decode(self, text: str) -> PnasArch:
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        text = text.strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError(f"{shown(text)} must be blocks like '[sep3x3~0+id~1]' written one "
                             f"after another (1..{self.blocks} of them)")
        parts = text[1:-1].split("][")
        if len(parts) > self.blocks:
            raise ValueError(f"{shown(text)} has {len(parts)} blocks; this space allows "
                             f"1..{self.blocks}")
        blocks = []
        for b, part in enumerate(parts):
            halves = part.split("+")
            if len(halves) != 2:
                raise ValueError(f"block {b}: {shown(part)} must be 'op~input+op~input'")
            parsed = []
            for half in halves:
                op, sep, idx = half.partition("~")
                if op not in self._op_index:
                    raise ValueError(f"block {b}: unknown operation {shown(op)}; "
                                     f"valid: {', '.join(self.OPS)}")
                if not sep or not is_number(idx) or int(idx) >= 2 + b:
                    raise ValueError(f"block {b}: bad input {shown(idx or half)}; valid: 0..{b + 1} "
                                     "(0 = h_i, 1 = h_i-1, 2+k = block k)")
                parsed.append((op, int(idx)))
            (o1, i1), (o2, i2) = parsed
            blocks.append(Block(i1, i2, o1, o2, "add"))
        return PnasArch(Cell(tuple(blocks)))

    def named(self) -> dict[str, PnasArch]:
        try:  # a space with fewer blocks does not contain it
            return {"pnasnet-5": self.decode(_PNASNET_5)}
        except ValueError:
            return {}

    # -- symmetry, growth and sampling -------------------------------------------------
    def canonical(self, arch: PnasArch) -> PnasArch:
        """The same cell with each block's two halves in (input, op) order."""
        arch = self._check(arch)
        out = []
        for blk in arch.blocks:
            h1 = (blk.in1, self._op_index[blk.op1])
            h2 = (blk.in2, self._op_index[blk.op2])
            (i1, o1), (i2, o2) = sorted((h1, h2))
            out.append((i1, self.OPS[o1], i2, self.OPS[o2]))
        return make_arch(out)

    def block_options(self, position: int) -> list[tuple[int, str, int, str]]:
        """Every distinct block (up to the symmetry of add) at ``position`` (0-based), as
        canonical ``(in1, op1, in2, op2)``: ``n(n+1)/2`` of them, n = (position+2)·8."""
        if not 0 <= position < self.blocks:
            raise ValueError(f"block position must be in 0..{self.blocks - 1}, got {position}")
        halves = [(i, o) for i in range(position + 2) for o in range(len(self.OPS))]
        return [(h1[0], self.OPS[h1[1]], h2[0], self.OPS[h2[1]])
                for k, h1 in enumerate(halves) for h2 in halves[k:]]

    def expand(self, arch: PnasArch) -> list[PnasArch]:
        """Every distinct one-block expansion of ``arch`` (canonical blocks appended)."""
        arch = self._check(arch)
        b = len(arch.blocks)
        if b >= self.blocks:
            raise ValueError(f"cell already has the maximum {self.blocks} blocks")
        return [PnasArch(Cell(arch.blocks + (Block(i1, i2, o1, o2, "add"),)))
                for i1, o1, i2, o2 in self.block_options(b)]

    # -- the Progressive capability (PNAS's growth by blocks) ---------------------------
    @property
    def growth_stages(self) -> int:
        """Cells grow 1 → B blocks."""
        return self.blocks

    def cell_size(self, arch: PnasArch) -> int:
        """The number of blocks."""
        return len(self._check(arch).blocks)

    def smallest_cells(self) -> list[PnasArch]:
        """Every distinct 1-block cell (canonical), in :meth:`block_options` order."""
        return [make_arch([opt]) for opt in self.block_options(0)]

    def grow(self, arch: PnasArch) -> tuple[list[str], np.ndarray]:
        """Every distinct one-block expansion of ``arch`` (canonical strings, in
        :meth:`block_options` order) and its :meth:`vector`: the parent's plus the new
        block's share, so thousands are encoded at once."""
        arch = self.canonical(arch)
        pos = len(arch.blocks)
        if pos >= self.blocks:
            raise ValueError(f"cell already has the maximum {self.blocks} blocks")
        cache = self.__dict__.setdefault("_block_shares", {})
        if pos not in cache:
            opts = self.block_options(pos)
            cache[pos] = (opts, np.stack([self.block_vector(pos, Block(i1, i2, o1, o2))
                                          for i1, o1, i2, o2 in opts]))
        opts, mat = cache[pos]
        p = arch.encode()
        return [p + f"[{o1}~{i1}+{o2}~{i2}]" for i1, o1, i2, o2 in opts], self.vector(arch) + mat

    def neighbours(self, arch: PnasArch) -> list[str]:
        """Canonical cells one input or op away from ``arch`` (same number of blocks)."""
        arch = self._check(arch)
        out: list[str] = []
        for k, blk in enumerate(arch.blocks):
            halves = [(blk.in1, blk.op1), (blk.in2, blk.op2)]
            for h in range(2):
                i, o = halves[h]
                alts = [(j, o) for j in range(k + 2) if j != i]
                alts += [(i, op) for op in self.OPS if op != o]
                for alt in alts:
                    new = list(halves)
                    new[h] = alt
                    blocks = [(b.in1, b.op1, b.in2, b.op2) for b in arch.blocks]
                    blocks[k] = (new[0][0], new[0][1], new[1][0], new[1][1])
                    out.append(self.canonical(make_arch(blocks)).encode())
        return out

    def random_cell(self, rng: random.Random, size: int) -> PnasArch:
        """A random canonical cell of ``size`` blocks (one draw per decision)."""
        ds = self.decisions_for_blocks(size)
        return self.canonical(self.from_choices([rng.randrange(d.size) for d in ds]))

    def mutate(self, arch: PnasArch, rng: random.Random, children_seen: int = 0) -> PnasArch:
        """Change one input or op of one block, keeping the number of blocks."""
        arch = self._check(arch)
        ds = self.decisions_for_blocks(len(arch.blocks))
        choices = list(self.to_choices(arch))
        movable = [i for i, d in enumerate(ds) if d.size > 1]
        i = rng.choice(movable)
        new = rng.randrange(ds[i].size - 1)
        choices[i] = new if new < choices[i] else new + 1
        return self.from_choices(choices)

    # -- encoding for surrogates ----------------------------------------------------------
    @property
    def vector_size(self) -> int:
        return (self.blocks * 2 * (self.blocks + 1 + len(self.OPS))
                + len(self.OPS) * (1 + _KINDS) + 1)

    @property
    def token_width(self) -> int:
        """Columns of one token (one block's slot) of the slot part of :meth:`vector`."""
        return 2 * (self.blocks + 1 + len(self.OPS))

    @property
    def summary_columns(self) -> slice:
        """The size-free columns of :meth:`vector`: op counts, (op, input kind) counts
        and the number of blocks (what a per-op cost model needs)."""
        return slice(self.blocks * 2 * (self.blocks + 1 + len(self.OPS)), self.vector_size)

    def block_vector(self, position: int, block: Block) -> np.ndarray:
        """Block ``position``'s share of :meth:`vector` (the vector is the sum of shares)."""
        nb, no = self.blocks, len(self.OPS)
        v = np.zeros(self.vector_size, dtype=np.float32)
        halves = sorted(((block.in1, self._op_index[block.op1]),
                         (block.in2, self._op_index[block.op2])))
        base = position * 2 * (nb + 1 + no)
        summary = nb * 2 * (nb + 1 + no)
        for h, (i, o) in enumerate(halves):
            off = base + h * (nb + 1 + no)
            v[off + i] = 1.0
            v[off + nb + 1 + o] = 1.0
            v[summary + o] += 1.0
            v[summary + no + o * _KINDS + min(i, 2)] += 1.0
        v[-1] = 1.0
        return v

    def vector(self, arch: PnasArch) -> np.ndarray:
        """Fixed-length encoding of a cell of any size (see the module docstring)."""
        arch = self._check(arch)
        out = np.zeros(self.vector_size, dtype=np.float32)
        for k, blk in enumerate(arch.blocks):
            out += self.block_vector(k, blk)
        return out

    # -- building --------------------------------------------------------------------
    def build(self, arch: PnasArch | str, num_classes: int | None = None,
              width_mult: float = 1.0, in_channels: int = 3) -> PnasNetwork:
        arch, num_classes, in_channels = self._build_args(arch, num_classes, width_mult,
                                                          in_channels)
        filters = max(2, round(self.filters * width_mult))
        return PnasNetwork(arch, num_classes, filters, self.cells_per_stage,
                           self.stem_multiplier, in_channels, self.drop_path)

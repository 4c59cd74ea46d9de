"""``nasnet``: NASNet's cell search space (Zoph et al., 2018).

The controller designs a *normal* cell (keeps the feature size) and a *reduction* cell
(stride 2); the network stacks them in the NASNet CIFAR skeleton::

    stem 3x3 conv (stem_multiplier·F) → N normal (F) → reduction (2F) → N normal (2F)
    → reduction (4F) → N normal (4F) → ReLU → global average pool → linear

with N = ``cells_per_stage`` (2 while searching, the paper's setting) and
F = ``filters`` (16 by default so CPU search is feasible; the paper's final CIFAR models
use larger F and N).

A cell has B = ``blocks`` (5) blocks. Each block picks two hidden states, one operation
for each, and how to combine them (``add`` or ``concat`` along channels). The hidden
states a block can pick are numbered like slim's ``hiddenstate_indices``:
``0`` = h_i (the previous cell's output), ``1`` = h_{i-1} (the one before), ``2 + k`` =
block k of this cell. Block outputs that no later block consumes are concatenated as the
cell output (the paper's rule). h_{i-1} goes through a factorized reduction when it is
larger than h_i (right after a reduction cell), a 1×1 conv when only its channels differ.

**Decisions and anchors.** Per cell the list opens with two one-option decisions carrying
``anchor=True`` — ``<cell>.h_i`` then ``<cell>.h_i-1`` — so the controller records one
anchor per cell input; each block ends with its ``combine`` decision, also an anchor.
Block b's input Pointers therefore range over the ``2 + b`` most recent anchors, oldest
first: exactly ``[h_i, h_{i-1}, block 0, …, block b-1]`` — the index is the hidden-state
number above. Per cell: 2 + 5·B decisions; 54 in all for B = 5.

**Strings** read ``normal:[sep5x5~0+sep3x3~1,add][...]...|reduce:[...]...``: one
``[op1~in1+op2~in2,combine]`` per block.

**ScheduledDropPath.** Every non-identity op output in a cell passes through drop path.
``model.set_training_progress(p)`` (p = fraction of training done) sets the drop
probability of cell c (0-based, of C cells) to ``drop_path · p · (c + 1) / C`` — linear in
training progress, scaled by depth as in the slim reference (its default "v3"). Nothing
is dropped in eval mode, hence never in an ONNX export.

**Options** (constructor arguments): ``blocks`` 5, ``cells_per_stage`` 2, ``filters`` 16,
``stem_multiplier`` 3 (slim's), ``drop_path`` 0.4 (the final drop probability; slim's
CIFAR ``drop_path_keep_prob`` 0.6). ``build(width_mult=…)`` scales F (at least 2).

**Deployment setting**: CIFAR — 32×32 inputs, 10 classes (``deploy_resolution`` /
``deploy_classes``). Global pooling lets the same model take 224×224 inputs.

Departures from the reference: the named point ``nasnet-a`` follows slim's NASNet-A ops
and inputs exactly, but its cell output follows the paper's rule (unused block outputs
only); slim hard-codes ``used_hiddenstates`` that also concatenate h_{i-1} into the
normal cell's output and block 1 into the reduction cell's. No auxiliary head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mnas.decisions import Categorical, Decision, Pointer, validate_choices
from mnas.spaces.base import SearchSpace, as_int, is_number, register_space, shown
from mnas.spaces.cell_ops import NASNET_OPS, DropPath, FactorizedReduce, ReLUConvBN, build_op

CELL_NAMES = ("normal", "reduce")
COMBINES = ("add", "concat")
#: names of the two cell-input hidden states, by hidden-state number
INPUT_NAMES = ("h_i", "h_i-1")


@dataclass(frozen=True)
class Block:
    """One block: ``combine(op1(state[in1]), op2(state[in2]))``."""

    in1: int
    in2: int
    op1: str
    op2: str
    combine: str = "add"

    def encode(self) -> str:
        return f"[{self.op1}~{self.in1}+{self.op2}~{self.in2},{self.combine}]"


@dataclass(frozen=True)
class Cell:
    """A tuple of blocks; block b may read hidden states ``0 .. b + 1``."""

    blocks: tuple[Block, ...]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("a cell needs at least one block")
        for b, blk in enumerate(self.blocks):
            for i in (blk.in1, blk.in2):
                if not 0 <= i < 2 + b:
                    raise ValueError(f"block {b} input {i} out of range; valid: 0..{b + 1} "
                                     "(0 = h_i, 1 = h_i-1, 2+k = block k)")

    def encode(self) -> str:
        return "".join(b.encode() for b in self.blocks)

    def unused(self) -> tuple[int, ...]:
        """Blocks whose output no later block reads (concatenated as the cell output)."""
        used = {i - 2 for blk in self.blocks for i in (blk.in1, blk.in2) if i >= 2}
        return tuple(b for b in range(len(self.blocks)) if b not in used)


@dataclass(frozen=True)
class NasNetArch:
    """A normal and a reduction cell."""

    normal: Cell
    reduce: Cell

    def encode(self) -> str:
        return f"normal:{self.normal.encode()}|reduce:{self.reduce.encode()}"

    def __str__(self) -> str:
        return self.encode()


def parse_cell(text: str, where: str, ops: Sequence[str], combines: Sequence[str],
               blocks: int | None) -> Cell:
    """Parse ``[op~i+op~i,combine]...``; ValueError naming the bad token and valid values."""
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"{where} cell {shown(text)} must be blocks like "
                         "'[sep3x3~0+id~1,add]' written one after another")
    parts = text[1:-1].split("][")
    out = []
    for b, part in enumerate(parts):
        pair, sep, combine = part.partition(",")
        if not sep or combine not in combines:
            raise ValueError(f"{where} block {b}: bad combine {shown(combine or part)}; "
                             f"valid: {', '.join(combines)}")
        halves = pair.split("+")
        if len(halves) != 2:
            raise ValueError(f"{where} block {b}: {shown(pair)} must be 'op~input+op~input'")
        parsed = []
        for half in halves:
            op, sep, idx = half.partition("~")
            if op not in ops:
                raise ValueError(f"{where} block {b}: unknown operation {shown(op)}; "
                                 f"valid: {', '.join(ops)}")
            if not sep or not is_number(idx) or int(idx) >= 2 + b:
                raise ValueError(f"{where} block {b}: bad input {shown(idx or half)}; valid: "
                                 f"0..{b + 1} (0 = h_i, 1 = h_i-1, 2+k = block k)")
            parsed.append((op, int(idx)))
        (op1, in1), (op2, in2) = parsed
        out.append(Block(in1, in2, op1, op2, combine))
    if blocks is not None and len(out) != blocks:
        raise ValueError(f"{where} cell has {len(out)} blocks, expected {blocks}")
    return Cell(tuple(out))



def _as_prob(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return v


class _Path(nn.Module):
    """One operation of a block, with drop path unless it is the identity."""

    def __init__(self, op: str, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.op = build_op(op, c_in, c_out, stride)
        self.drop = DropPath() if op != "id" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.op(x)
        return self.drop(x) if self.drop is not None else x


class CellModule(nn.Module):
    """A built cell: ``forward(h_{i-1}, h_i)`` → concat of the unused block outputs."""

    def __init__(self, cell: Cell, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 prev_larger: bool) -> None:
        super().__init__()
        self.pre_cur = ReLUConvBN(c_prev, c, 1)
        if prev_larger:
            self.pre_prev: nn.Module = FactorizedReduce(c_prev_prev, c)
        elif c_prev_prev != c:
            self.pre_prev = ReLUConvBN(c_prev_prev, c, 1)
        else:
            self.pre_prev = nn.Identity()
        self.wiring = [(blk.in1, blk.in2, blk.combine == "concat") for blk in cell.blocks]
        channels = [c, c]
        paths = []
        for blk in cell.blocks:
            for i, op in ((blk.in1, blk.op1), (blk.in2, blk.op2)):
                # in a reduction cell only ops on the cell inputs stride (slim's rule)
                stride = 2 if reduction and i < 2 else 1
                paths.append(_Path(op, channels[i], c, stride))
            channels.append(2 * c if blk.combine == "concat" else c)
        self.paths = nn.ModuleList(paths)
        self.out_states = [2 + b for b in cell.unused()]
        self.out_channels = sum(channels[i] for i in self.out_states)

    def set_drop_prob(self, p: float) -> None:
        for path in self.paths:
            if path.drop is not None:
                path.drop.p = p

    def forward(self, h_prev: torch.Tensor, h_cur: torch.Tensor) -> torch.Tensor:
        states = [self.pre_cur(h_cur), self.pre_prev(h_prev)]
        for b, (i1, i2, concat) in enumerate(self.wiring):
            a = self.paths[2 * b](states[i1])
            z = self.paths[2 * b + 1](states[i2])
            states.append(torch.cat([a, z], dim=1) if concat else a + z)
        outs = [states[i] for i in self.out_states]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class NasNetNetwork(nn.Module):
    """Cells in the NASNet CIFAR skeleton (see the module docstring)."""

    def __init__(self, arch: NasNetArch, num_classes: int, filters: int, cells_per_stage: int,
                 stem_multiplier: int, in_channels: int, drop_path: float) -> None:
        super().__init__()
        c_stem = stem_multiplier * filters
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, filters
        prev_was_reduction = False
        cells = []
        for stage in range(3):
            kinds = ([] if stage == 0 else [True]) + [False] * cells_per_stage
            for reduction in kinds:
                if reduction:
                    c *= 2
                cell = self.make_cell(arch, c_pp, c_p, c, reduction, prev_was_reduction)
                cells.append(cell)
                c_pp, c_p = c_p, cell.out_channels
                prev_was_reduction = reduction
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(c_p, num_classes)
        self.drop_path = drop_path
        self.training_progress = 0.0

    @staticmethod
    def make_cell(arch: NasNetArch, c_pp: int, c_p: int, c: int, reduction: bool,
                  prev_was_reduction: bool) -> nn.Module:
        """One cell of the skeleton (subclasses build their own cells)."""
        return CellModule(arch.reduce if reduction else arch.normal, c_pp, c_p, c,
                          reduction, prev_was_reduction)

    def set_training_progress(self, p: float) -> None:
        """ScheduledDropPath: cell c of C drops paths with ``drop_path · p · (c+1)/C``."""
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"training progress must be in [0, 1], got {p}")
        self.training_progress = p
        n = len(self.cells)
        for c, cell in enumerate(self.cells):
            cell.set_drop_prob(self.drop_path * p * (c + 1) / n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_prev = h_cur = self.stem(x)
        for cell in self.cells:
            h_prev, h_cur = h_cur, cell(h_prev, h_cur)
        return self.classifier(torch.relu(h_cur).mean(dim=(2, 3)))


# NASNet-A, from slim's NasNetANormalCell / NasNetAReductionCell (same hidden-state numbers)
_NASNET_A = (
    "normal:[sep5x5~0+sep3x3~1,add][sep5x5~1+sep3x3~1,add][avg3x3~0+id~1,add]"
    "[avg3x3~1+avg3x3~1,add][sep3x3~0+id~0,add]"
    "|reduce:[sep5x5~0+sep7x7~1,add][max3x3~0+sep7x7~1,add][avg3x3~0+sep5x5~1,add]"
    "[id~3+avg3x3~2,add][sep3x3~2+max3x3~0,add]"
)


def set_cell_options(space: Any, blocks: Any, cells_per_stage: Any, filters: Any,
                     stem_multiplier: Any, drop_path: Any) -> None:
    """Validate and set the options every cell space takes (NASNet's and PNAS's)."""
    space.blocks = as_int("blocks", blocks, 1)
    space.cells_per_stage = as_int("cells_per_stage", cells_per_stage, 1)
    space.filters = as_int("filters", filters, 2)
    space.stem_multiplier = as_int("stem_multiplier", stem_multiplier, 1)
    space.drop_path = _as_prob("drop_path", drop_path)


@register_space
class NasNetSpace(SearchSpace):
    """NASNet's normal + reduction cell space (B blocks, 13 ops, add | concat)."""

    name = "nasnet"
    deploy_resolution = 32  # CIFAR setting
    deploy_classes = 10
    #: operations and combiners; subclasses (``pnas``) narrow them
    OPS: tuple[str, ...] = NASNET_OPS
    COMBINES: tuple[str, ...] = COMBINES

    def __init__(self, blocks: int = 5, cells_per_stage: int = 2, filters: int = 16,
                 stem_multiplier: int = 3, drop_path: float = 0.4) -> None:
        set_cell_options(self, blocks, cells_per_stage, filters, stem_multiplier, drop_path)
        self._decisions = self._make_decisions()

    def _make_decisions(self) -> tuple[Decision, ...]:
        ds: list[Decision] = []
        for cell in CELL_NAMES:
            # one anchor per cell input, h_i first, so Pointer index == hidden-state number
            for name in INPUT_NAMES:
                ds.append(Categorical(f"{cell}.{name}", (name,), anchor=True))
            for b in range(self.blocks):
                ds.append(Pointer(f"{cell}.b{b}.in1", 2 + b))
                ds.append(Pointer(f"{cell}.b{b}.in2", 2 + b))
                ds.append(Categorical(f"{cell}.b{b}.op1", self.OPS))
                ds.append(Categorical(f"{cell}.b{b}.op2", self.OPS))
                ds.append(Categorical(f"{cell}.b{b}.combine", self.COMBINES, anchor=True))
        return tuple(ds)

    def decisions(self, children_seen: int = 0) -> tuple[Decision, ...]:
        return self._decisions

    def from_choices(self, choices: Sequence[int]) -> NasNetArch:
        c = validate_choices(self._decisions, choices)
        per_cell = 2 + 5 * self.blocks
        cells = []
        for k in range(2):
            base = k * per_cell + 2  # skip the two input anchors (always 0)
            blocks = []
            for b in range(self.blocks):
                i1, i2, o1, o2, comb = c[base + 5 * b: base + 5 * b + 5]
                blocks.append(Block(i1, i2, self.OPS[o1], self.OPS[o2], self.COMBINES[comb]))
            cells.append(Cell(tuple(blocks)))
        return NasNetArch(*cells)

    def to_choices(self, arch: NasNetArch) -> tuple[int, ...]:
        arch = self._check(arch)
        out: list[int] = []
        for cell in (arch.normal, arch.reduce):
            out += [0, 0]
            for blk in cell.blocks:
                out += [blk.in1, blk.in2, self.OPS.index(blk.op1), self.OPS.index(blk.op2),
                        self.COMBINES.index(blk.combine)]
        return tuple(out)

    def _check(self, arch: Any) -> NasNetArch:
        if not isinstance(arch, NasNetArch):
            raise TypeError(f"expected a NasNetArch, got {type(arch).__name__}")
        for where, cell in zip(CELL_NAMES, (arch.normal, arch.reduce), strict=True):
            if len(cell.blocks) != self.blocks:
                raise ValueError(f"{where} cell has {len(cell.blocks)} blocks, "
                                 f"this space has {self.blocks}")
            for blk in cell.blocks:
                for op in (blk.op1, blk.op2):
                    if op not in self.OPS:
                        raise ValueError(f"operation {op!r} is not in space {self.name!r}; "
                                         f"valid: {', '.join(self.OPS)}")
                if blk.combine not in self.COMBINES:
                    raise ValueError(f"combine {blk.combine!r} is not in space {self.name!r}; "
                                     f"valid: {', '.join(self.COMBINES)}")
        return arch

    def decode(self, text: str) -> NasNetArch:
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        parts = text.strip().split("|")
        if len(parts) != 2:
            raise ValueError(f"{shown(text)} must be 'normal:<blocks>|reduce:<blocks>'")
        cells = []
        for part, want in zip(parts, CELL_NAMES, strict=True):
            name, sep, body = part.partition(":")
            if not sep or name != want:
                raise ValueError(f"expected cell {want!r}, got {shown(name)}; "
                                 f"valid order: {', '.join(CELL_NAMES)}")
            cells.append(parse_cell(body, want, self.OPS, self.COMBINES, self.blocks))
        return NasNetArch(*cells)

    def named(self) -> dict[str, NasNetArch]:
        try:  # a narrower subclass (fewer ops or blocks) may not contain NASNet-A
            return {"nasnet-a": self.decode(_NASNET_A)}
        except ValueError:
            return {}

    def build(self, arch: NasNetArch | str, num_classes: int | None = None,
              width_mult: float = 1.0, in_channels: int = 3) -> NasNetNetwork:
        arch, num_classes, in_channels = self._build_args(arch, num_classes, width_mult,
                                                          in_channels)
        filters = max(2, round(self.filters * width_mult))
        return NasNetNetwork(arch, num_classes, filters, self.cells_per_stage,
                             self.stem_multiplier, in_channels, self.drop_path)

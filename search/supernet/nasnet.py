"""Supernet of the ``nasnet`` cell space (also any subclass with the same frame, e.g.
``pnas``), and the space's MAC count by component.

The skeleton is fixed — stem, ``3·N + 2`` cell positions (normal, reduction) — and
every cell position shares its operations across children:

* **block operations**: one module per *(cell position, block, slot, input, op)* and
  input width, keyed ``c{k}b{b}{x|y}~{input}|{op}|{in}>{out}`` (``x``/``y`` = the
  block's first/second operation; ``input`` = hidden-state number, 0 = h_i, 1 = h_i-1,
  2+j = block j). This is ENAS's micro sharing — weights per (node, previous node,
  op), separately for a node's two operations, as in its reference code — plus the
  input width, which here depends on the child (a ``concat`` block doubles it);
* **cell inputs**: ``c{k}|pre_cur|{in}>{out}``, and ``c{k}|pre_prev|…`` (a 1×1 conv) or
  ``c{k}|pre_fr|…`` (factorized reduction after a reduction cell) — their input widths
  depend on how many block outputs the previous cells concatenate;
* the classifier per input width (``classifier|{in}``); the stem is one module.

Modules come from :mod:`mnas.spaces.cell_ops` (``build_op``, ``ReLUConvBN``,
``FactorizedReduce``), wired exactly as :class:`mnas.spaces.nasnet.CellModule`, so a
child equals its standalone build with the same weights. ScheduledDropPath is not
applied while training shared weights (it is a final-training regulariser; ENAS's
search does not use it); at evaluation it is off in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mnas.spaces.cell_ops import FactorizedReduce, ReLUConvBN, build_op
from search.supernet import Spec, Supernet


@dataclass(frozen=True)
class CellPlan:
    """One cell position of one child: widths, operations and wiring."""

    index: int
    reduction: bool
    prev_larger: bool                 # h_{i-1} is twice h_i's size (after a reduction)
    c_pp: int                         # width of h_{i-1}
    c_p: int                          # width of h_i
    c: int                            # the cell's operation width
    paths: tuple[tuple[int, int, int, str, int, int], ...]  # block, slot, input, op, in, stride
    wiring: tuple[tuple[int, int, bool], ...]             # in1, in2, concat
    out_states: tuple[int, ...]
    out_channels: int


def plan_network(space: Any, arch: Any, filters: int) -> tuple[int, tuple[CellPlan, ...], int]:
    """``(stem width, cells, classifier input width)`` of ``arch`` at ``filters`` —
    the bookkeeping of :class:`mnas.spaces.nasnet.NasNetNetwork`."""
    c_stem = space.stem_multiplier * filters
    c_pp, c_p, c = c_stem, c_stem, filters
    prev_red = False
    cells: list[CellPlan] = []
    for stage in range(3):
        for reduction in ([] if stage == 0 else [True]) + [False] * space.cells_per_stage:
            if reduction:
                c *= 2
            cell = arch.reduce if reduction else arch.normal
            channels = [c, c]
            paths, wiring = [], []
            for b, blk in enumerate(cell.blocks):
                for slot, (i, op) in enumerate(((blk.in1, blk.op1), (blk.in2, blk.op2))):
                    # in a reduction cell only ops on the cell inputs stride
                    paths.append((b, slot, i, op, channels[i], 2 if reduction and i < 2 else 1))
                concat = blk.combine == "concat"
                wiring.append((blk.in1, blk.in2, concat))
                channels.append(2 * c if concat else c)
            out_states = tuple(2 + b for b in cell.unused())
            out_ch = sum(channels[i] for i in out_states)
            cells.append(CellPlan(len(cells), reduction, prev_red, c_pp, c_p, c, tuple(paths),
                                  tuple(wiring), out_states, out_ch))
            c_pp, c_p = c_p, out_ch
            prev_red = reduction
    return c_stem, tuple(cells), c_p


def _pre_prev_spec(cell: CellPlan) -> tuple[str, Spec] | None:
    if cell.prev_larger:
        return f"c{cell.index}|pre_fr|{cell.c_pp}>{cell.c}", ("fr", cell.c_pp, cell.c)
    if cell.c_pp != cell.c:
        return f"c{cell.index}|pre_prev|{cell.c_pp}>{cell.c}", ("rcb", cell.c_pp, cell.c)
    return None


def _op_key(cell: CellPlan, path: tuple[int, int, int, str, int, int]) -> tuple[str, Spec]:
    b, slot, i, op, cin, stride = path
    return (f"c{cell.index}b{b}{'xy'[slot]}~{i}|{op}|{cin}>{cell.c}",
            ("op", op, cin, cell.c, stride))


class NasNetSupernet(Supernet):
    """Weight-shared ``nasnet`` children at one proxy width (see the module doc)."""

    def __init__(self, space: Any, num_classes: int = 10, width_mult: float = 0.5,
                 in_channels: int = 3, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__(space, num_classes, width_mult, in_channels, seed, channels_last)
        self.filters = max(2, round(space.filters * self.width_mult))  # as space.build
        c_stem = space.stem_multiplier * self.filters
        self.stem = self.seeded("stem", lambda: nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)))
        self.identity = nn.Identity()

    def _build(self, spec: Spec) -> nn.Module:
        kind = spec[0]
        if kind == "rcb":
            return ReLUConvBN(int(spec[1]), int(spec[2]), 1)
        if kind == "fr":
            return FactorizedReduce(int(spec[1]), int(spec[2]))
        if kind == "op":
            _, op, cin, cout, stride = spec
            return build_op(str(op), int(cin), int(cout), int(stride))
        if kind == "linear":
            return nn.Linear(int(spec[1]), self.num_classes)
        raise ValueError(f"unknown nasnet supernet module spec {spec!r}")

    def _cell_modules(self, cell: CellPlan) -> tuple[nn.Module, nn.Module, list[nn.Module]]:
        pre_cur = self.module(f"c{cell.index}|pre_cur|{cell.c_p}>{cell.c}",
                              ("rcb", cell.c_p, cell.c))
        pp = _pre_prev_spec(cell)
        pre_prev = self.module(*pp) if pp is not None else self.identity
        ops = [self.module(*_op_key(cell, p)) for p in cell.paths]
        return pre_cur, pre_prev, ops

    def _compile(self, arch: Any) -> Any:
        arch = self.space._check(arch)
        _, cells, c_final = plan_network(self.space, arch, self.filters)
        steps = [(cell, *self._cell_modules(cell)) for cell in cells]
        return steps, self.module(f"classifier|{c_final}", ("linear", c_final))

    def _run(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        steps, classifier = path
        h_prev = h_cur = self.stem(x)
        for cell, pre_cur, pre_prev, ops in steps:  # CellModule.forward
            states = [pre_cur(h_cur), pre_prev(h_prev)]
            for b, (i1, i2, concat) in enumerate(cell.wiring):
                a = ops[2 * b](states[i1])
                z = ops[2 * b + 1](states[i2])
                states.append(torch.cat([a, z], dim=1) if concat else a + z)
            outs = [states[i] for i in cell.out_states]
            h_prev, h_cur = h_cur, outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return classifier(torch.relu(h_cur).mean(dim=(2, 3)))

    def child_modules(self, arch: Any) -> dict[str, nn.Module]:
        steps, classifier = self.compiled(arch)
        out: dict[str, nn.Module] = {"stem": self.stem}
        for cell, pre_cur, pre_prev, ops in steps:
            out[f"cells.{cell.index}.pre_cur"] = pre_cur
            if pre_prev is not self.identity:
                out[f"cells.{cell.index}.pre_prev"] = pre_prev
            for j, op in enumerate(ops):
                out[f"cells.{cell.index}.paths.{j}.op"] = op
        out["classifier"] = classifier
        return out


# -- MACs at deployment size, by component ------------------------------------------------
_COMPONENT_MACS: dict[tuple[Any, ...], int] = {}


def _component_macs(spec: Spec, size: int) -> int:
    from mnas.counting import count_macs

    key = (*spec, size)
    macs = _COMPONENT_MACS.get(key)
    if macs is None:
        kind = spec[0]
        if kind == "rcb":
            m: nn.Module = ReLUConvBN(int(spec[1]), int(spec[2]), 1)
        elif kind == "fr":
            m = FactorizedReduce(int(spec[1]), int(spec[2]))
        else:
            m = build_op(str(spec[1]), int(spec[2]), int(spec[3]), int(spec[4]))
        macs = _COMPONENT_MACS[key] = count_macs(m, (1, int(spec[1 if kind != "op" else 2]),
                                                     size, size))
    return macs


class NasnetMacs:
    """``arch -> MACs`` of the deployable child (the space's filters, deployment input and
    classes) as :func:`mnas.counting.count_macs` counts the built model: stem and
    classifier in closed form, every cell component counted once on the real
    ``cell_ops`` module at its input size and cached."""

    def __init__(self, space: Any, in_channels: int = 3) -> None:
        self.space = space
        self.resolution = int(space.deploy_resolution)
        self.classes = int(space.deploy_classes)
        self.in_channels = in_channels

    def __call__(self, arch: Any) -> int:
        c_stem, cells, c_final = plan_network(self.space, arch, self.space.filters)
        size = self.resolution
        total = size * size * c_stem * self.in_channels * 9        # 3x3 stem, stride 1
        size_prev = size_cur = size
        for cell in cells:
            total += _component_macs(("rcb", cell.c_p, cell.c), size_cur)
            pp = _pre_prev_spec(cell)
            if pp is not None:
                total += _component_macs(pp[1], size_prev)
            out_size = math.ceil(size_cur / 2) if cell.reduction else size_cur
            for p in cell.paths:
                total += _component_macs(_op_key(cell, p)[1], size_cur if p[2] < 2 else out_size)
            size_prev, size_cur = size_cur, out_size
        return total + c_final * self.classes

"""Supernet of the ``nasnet`` cell space, and the space's MAC count by component (only
``nasnet`` is served: :func:`search.supernet.make_supernet` dispatches by space name).

The skeleton is fixed — stem, ``3·N + 2`` cell positions (normal, reduction) — and
every cell position shares its operations across children:

* **block operations**: one module per *(cell position, block, slot, input, op)*, keyed
  ``c{k}b{b}{x|y}~{input}|{op}`` (``x``/``y`` = the block's first/second operation;
  ``input`` = hidden-state number, 0 = h_i, 1 = h_i-1, 2+j = block j). This is ENAS's
  micro sharing — weights per (node, previous node, op), separately for a node's two
  operations, as in its reference code;
* **cell inputs**: ``c{k}|pre_cur``, and ``c{k}|pre_prev`` (a 1×1 conv) or
  ``c{k}|pre_fr`` (factorized reduction after a reduction cell);
* one ``classifier``; the stem is one module.

**Max width, sliced.** Only *input* widths vary between children, through ``concat``:
an operation always outputs the cell width ``c``, but its input is ``c``, or ``2c``
when it reads a block that concatenates; a cell outputs the concatenation of its unused
blocks (``c`` … ``B·2c``), which is the next cells' preprocessing input and, after the
last cell, the classifier's. Each module is built at the widest input any child can
feed it, and a child runs its convolutions (and the classifier) on the first ``in``
input channels: conv weight ``[:, :in]``, depthwise ``[:in]``; every BatchNorm is at
the fixed output width, so none is sliced. An ``id`` of equal widths and a pool
without projection (input ``c``) have no weights and use no module. So a child equals
its standalone build given the leading slices (:meth:`Supernet.to_standalone`; tested).

Modules come from :mod:`mnas.spaces.cell_ops` (``build_op``, ``ReLUConvBN``,
``FactorizedReduce``), wired exactly as :class:`mnas.spaces.nasnet.CellModule`.
ScheduledDropPath is not applied while training shared weights (it is a final-training
regulariser; ENAS's search does not use it); at evaluation it is off in both.

Measured (``benchmarks/enas_speed.py --space nasnet``, defaults: 1,100 shared steps,
20 children against the 2-epoch proxy; the width-keyed supernet this replaced in
brackets, its seed 1 through the same training and children): 3,417 modules, all
created within 400 steps (6,355–6,371); training loss over the last 50 steps 2.32 /
2.43 at seeds 0 / 1 (2.47 / 2.42), chance 2.30; supernet accuracies 0.06–0.20 (0.05–0.20);
Spearman with the proxy 0.18 (p = 0.46) / 0.35 (p = 0.13) (0.62, p = 0.004 / −0.18,
p = 0.44); the same CPU time per step and per scored child. The shared weights still
do not learn this space in this budget, and with accuracies this near chance the
ranking is noise either way. Checkpoints of the width-keyed supernet do not load into
this one (their keys would replay as unused modules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnas.spaces.cell_ops import (
    FactorizedConv,
    FactorizedReduce,
    ReLUConvBN,
    SepConv,
    build_op,
)
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


def _pre_prev_spec(cell: CellPlan) -> Spec | None:
    """``h_{i-1}``'s preprocessing at the child's widths (None: identity)."""
    if cell.prev_larger:
        return ("fr", cell.c_pp, cell.c)
    if cell.c_pp != cell.c:
        return ("rcb", cell.c_pp, cell.c)
    return None


def _op_spec(cell: CellPlan, path: tuple[int, int, int, str, int, int]) -> Spec:
    """A block operation at the child's widths."""
    _, _, _, op, cin, stride = path
    return ("op", op, cin, cell.c, stride)


def _conv_in(conv: nn.Conv2d, x: torch.Tensor, cin: int) -> torch.Tensor:
    """``conv`` on its first ``cin`` input channels (depthwise: its first ``cin`` channels)."""
    if conv.groups == 1:
        w, groups = conv.weight[:, :cin], 1
    else:
        w, groups = conv.weight[:cin], cin
    return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, groups)


def run_sliced(m: nn.Module, x: torch.Tensor, cin: int) -> torch.Tensor:
    """``m`` (a ``cell_ops`` module or the classifier, built for at least ``cin`` input
    channels and the output width the child uses) on the ``cin`` channels of ``x``: the
    convolutions that read the input use their leading input channels, the rest runs
    as built."""
    if isinstance(m, nn.Linear):
        return F.linear(x, m.weight[:, :cin], m.bias)
    if isinstance(m, FactorizedReduce):
        if m.relu:
            x = F.relu(x)
        odd = F.pad(x, (0, 1, 0, 1))[:, :, 1::2, 1::2]
        return m.bn(torch.cat([_conv_in(m.path1, x[:, :, ::2, ::2], cin),
                               _conv_in(m.path2, odd, cin)], dim=1))
    if not isinstance(m, ReLUConvBN | SepConv | FactorizedConv):
        raise TypeError(f"no sliced forward for {type(m).__name__}")
    # ReLU, then the conv(s) reading the input (a separable conv's depthwise + pointwise)
    reads = 2 if isinstance(m, SepConv) else 1
    x = F.relu(x)
    for k in range(1, 1 + reads):
        x = _conv_in(m[k], x, cin)
    for layer in list(m)[1 + reads:]:
        x = layer(x)
    return x


class NasNetSupernet(Supernet):
    """Weight-shared ``nasnet`` children at one proxy width (see the module doc)."""

    def __init__(self, space: Any, num_classes: int = 10, width_mult: float = 0.5,
                 in_channels: int = 3, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__(space, num_classes, width_mult, in_channels, seed, channels_last)
        self.filters = max(2, round(space.filters * self.width_mult))  # as space.build
        c_stem = space.stem_multiplier * self.filters
        self.c_stem = c_stem
        self.stem = self.seeded("stem", lambda: nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)))
        self.identity = nn.Identity()
        #: the parameter-free operations (pools at equal widths), not shared modules
        self._free: dict[tuple[str, int, int], nn.Module] = {}
        # a block outputs up to 2c (concat), a cell up to B of them
        self._block_max = 2 if "concat" in space.COMBINES else 1

    def _cell_out_max(self, c: int) -> int:
        return self.space.blocks * self._block_max * c

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

    def _shared(self, key: str, spec: Spec, cmax: int, cin: int
                ) -> tuple[nn.Module | None, nn.Module, int]:
        """``(shared module or None, what runs, input width to slice to or 0)``: the
        module built at input width ``cmax``, run whole when the child's ``cin`` is that."""
        m = self.module(key, spec)
        return m, m, (0 if cin == cmax else cin)

    def _op(self, cell: CellPlan, path: tuple[int, int, int, str, int, int]
            ) -> tuple[nn.Module | None, nn.Module, int]:
        b, slot, i, op, cin, stride = path
        if cin == cell.c and (op == "id" and stride == 1 or op[:3] in ("avg", "max")):
            free = self._free.get((op, cin, stride))     # no weights: nothing to share
            if free is None:
                free = self._free[(op, cin, stride)] = build_op(op, cin, cin, stride)
            return None, free, 0
        cmax = cell.c if i < 2 else self._block_max * cell.c
        return self._shared(f"c{cell.index}b{b}{'xy'[slot]}~{i}|{op}",
                            ("op", op, cmax, cell.c, stride), cmax, cin)

    def _cell_steps(self, cells: tuple[CellPlan, ...]) -> list[tuple[Any, ...]]:
        steps = []
        for cell in cells:
            k = cell.index
            cp_max = self.c_stem if k == 0 else self._cell_out_max(cells[k - 1].c)
            cpp_max = self.c_stem if k < 2 else self._cell_out_max(cells[k - 2].c)
            pre_cur = self._shared(f"c{k}|pre_cur", ("rcb", cp_max, cell.c), cp_max, cell.c_p)
            pp = _pre_prev_spec(cell)
            if pp is None:
                pre_prev: tuple[Any, ...] = (None, self.identity, 0)
            else:
                name = "pre_fr" if pp[0] == "fr" else "pre_prev"
                pre_prev = self._shared(f"c{k}|{name}", (pp[0], cpp_max, cell.c), cpp_max,
                                        cell.c_pp)
            steps.append((cell, pre_cur, pre_prev, [self._op(cell, p) for p in cell.paths]))
        return steps

    def _compile(self, arch: Any) -> Any:
        arch = self.space._check(arch)
        _, cells, c_final = plan_network(self.space, arch, self.filters)
        c_max = self._cell_out_max(cells[-1].c)
        return self._cell_steps(cells), self._shared("classifier", ("linear", c_max), c_max,
                                                     c_final)

    def _run(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        def run(unit: tuple[Any, nn.Module, int], h: torch.Tensor) -> torch.Tensor:
            _, m, cin = unit
            return m(h) if cin == 0 else run_sliced(m, h, cin)

        steps, classifier = path
        h_prev = h_cur = self.stem(x)
        for cell, pre_cur, pre_prev, ops in steps:  # CellModule.forward
            states = [run(pre_cur, h_cur), run(pre_prev, h_prev)]
            for b, (i1, i2, concat) in enumerate(cell.wiring):
                a = run(ops[2 * b], states[i1])
                z = run(ops[2 * b + 1], states[i2])
                states.append(torch.cat([a, z], dim=1) if concat else a + z)
            outs = [states[i] for i in cell.out_states]
            h_prev, h_cur = h_cur, outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return run(classifier, torch.relu(h_cur).mean(dim=(2, 3)))

    def child_modules(self, arch: Any) -> dict[str, nn.Module]:
        steps, classifier = self.compiled(arch)
        out: dict[str, nn.Module] = {"stem": self.stem}
        for cell, pre_cur, pre_prev, ops in steps:
            for name, (m, *_) in [("pre_cur", pre_cur), ("pre_prev", pre_prev),
                                  *((f"paths.{j}.op", op) for j, op in enumerate(ops))]:
                if m is not None:
                    out[f"cells.{cell.index}.{name}"] = m
        out["classifier"] = classifier[0]
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
                total += _component_macs(pp, size_prev)
            out_size = math.ceil(size_cur / 2) if cell.reduction else size_cur
            for p in cell.paths:
                total += _component_macs(_op_spec(cell, p), size_cur if p[2] < 2 else out_size)
            size_prev, size_cur = size_cur, out_size
        return total + c_final * self.classes

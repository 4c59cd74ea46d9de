"""NAS-Bench-201 cell space and its CIFAR network (Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes; each of the 6 edges ``j → i`` (``j < i``) carries one of 5
operations. The canonical string is the benchmark's own::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

where the ``k``-th group lists the edges into node ``k`` and ``op~j`` reads from node
``j``. Decisions follow that order: (1←0), (2←0), (2←1), (3←0), (3←1), (3←2).

The network is the benchmark's CIFAR skeleton: stem 3×3 conv + BN, three stages of
``N`` cells with ``C``, ``2C``, ``4C`` channels separated by residual reduction blocks,
then BN-ReLU, global average pooling and a linear classifier. ``nor_conv`` is
ReLU-Conv-BN. The tabulated accuracies (``shared/data/nb201_dev.csv``) are CIFAR-100
with C = 16, N = 5 at 32×32, so ``deploy_classes`` is 100 and ``deploy_resolution``
32 — pass ``num_classes`` to ``build`` for CIFAR-10 or ImageNet-16-120.

**Growing cells** (the ``Progressive`` capability, for PNAS): a cell grows node by node.
A cell grown to b nodes is the full cell whose later nodes pass node b through
(``skip_connect`` from the node before, ``none`` on their other edges;
:func:`grown_cell`), so it computes the b-node cell and its string is in every NB201
table. Stage sizes: the 5 one-node cells, 25 choices of node 2's edges per parent, 125 of
node 3's. ``vector`` is size-aware: one-hot ops of the grown edges only, then op counts
(all grown edges; from the cell input; from an inner node) and the number of nodes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mnas.decisions import Categorical, validate_choices
from mnas.spaces.base import SearchSpace, register_space, shown

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                        "avg_pool_3x3")
#: (to_node, from_node) of each edge, in canonical-string order
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


@dataclass(frozen=True)
class NB201Arch:
    """One cell: the operation on each of the 6 edges, in :data:`EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise ValueError(f"an NB201 cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        for op in self.ops:
            if op not in OPS:
                raise ValueError(f"unknown NB201 op {op!r}; valid: {', '.join(OPS)}")

    def encode(self) -> str:
        groups: list[list[str]] = [[], [], []]
        for (to, frm), op in zip(EDGES, self.ops, strict=True):
            groups[to - 1].append(f"{op}~{frm}")
        return "+".join("|" + "|".join(g) + "|" for g in groups)

    def __str__(self) -> str:
        return self.encode()


def decode_cell(text: str) -> NB201Arch:
    """Parse the standard NB201 string; ValueError naming the first bad token."""
    if not isinstance(text, str):
        raise TypeError(f"an NB201 string must be str, got {type(text).__name__}")
    groups = text.strip().split("+")
    if len(groups) != 3:
        raise ValueError(f"an NB201 string has 3 '+'-separated node groups, got "
                         f"{len(groups)} in {shown(text)}; expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise ValueError(f"node {node} group {shown(group)} must be wrapped in '|' in "
                             f"{shown(text)}")
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise ValueError(f"node {node} needs {node} edges, got {len(tokens)} in {shown(group)}")
        for frm, token in enumerate(tokens):
            op, sep, src = token.partition("~")
            if not sep or op not in OPS:
                raise ValueError(f"bad token {shown(token)} in {shown(text)}; expected op~{frm} with op "
                                 f"one of: {', '.join(OPS)}")
            if src != str(frm):
                raise ValueError(f"bad token {shown(token)} in {shown(text)}: edge {frm} of node {node} "
                                 f"must read from node {frm} (write {op}~{frm})")
            ops.append(op)
    return NB201Arch(tuple(ops))


# -- growing cells (PNAS) -----------------------------------------------------------------

#: edges into nodes 1..b: the first NODE_EDGES[b] entries of :data:`EDGES`
NODE_EDGES = (0, 1, 3, 6)


def grown_cell(ops: Sequence[str]) -> NB201Arch:
    """The cell grown to b nodes (``ops``: the edges into nodes 1..b, in :data:`EDGES`
    order, b(b+1)/2 of them) as a full NB201 cell: each later node j passes node j−1
    through (``skip_connect`` from j−1, ``none`` on its other edges), so the network
    computes exactly the b-node cell and the string is in every NB201 table."""
    ops = tuple(ops)
    if len(ops) not in NODE_EDGES[1:]:
        raise ValueError(f"a cell grown to 1, 2 or 3 nodes has 1, 3 or 6 edge ops, got {len(ops)}")
    rest = tuple("skip_connect" if frm == to - 1 else "none" for to, frm in EDGES[len(ops):])
    return NB201Arch(ops + rest)


def _pass_through(arch: NB201Arch, node: int) -> bool:
    """Whether ``node`` only passes node−1 through."""
    lo, hi = NODE_EDGES[node - 1], NODE_EDGES[node]
    return arch.ops[lo:hi] == tuple("skip_connect" if frm == node - 1 else "none"
                                    for _, frm in EDGES[lo:hi])


# -- the CIFAR network ------------------------------------------------------------------


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The ``none`` op: the edge carries nothing (kept so the graph matches the benchmark's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, c: int) -> nn.Module:
    """One edge operation inside a cell (stride 1, ``c`` → ``c`` channels)."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 op {op!r}; valid: {', '.join(OPS)}")


class Cell(nn.Module):
    """Node i = sum over j < i of op(j→i)(node j); the cell outputs node 3."""

    def __init__(self, ops: Sequence[str], c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, c) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for to in range(1, 4):
            total = self.edges[k](nodes[0])
            for frm in range(1, to):
                total = total + self.edges[k + frm](nodes[frm])
            k += to
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """The benchmark's ResNet basic block between stages (stride 2, channels ×2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem → N cells (C) → reduction → N cells (2C) → reduction → N cells (4C) → head."""

    def __init__(self, ops: Sequence[str], C: int = 16, N: int = 5, num_classes: int = 100,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        c = C
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(Cell(ops, c) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


# -- the space ---------------------------------------------------------------------------


@register_space
class NB201Space(SearchSpace):
    """The 15,625-cell NAS-Bench-201 space (6 edges × 5 ops).

    ``C`` and ``N`` size the network :meth:`build` makes (benchmark: 16 and 5).
    """

    name = "nb201"
    deploy_resolution = 32
    deploy_classes = 100  # CIFAR-100: the column the shipped table's accuracy comes from

    def __init__(self, C: int = 16, N: int = 5) -> None:
        if int(C) < 1 or int(N) < 1:
            raise ValueError(f"nb201 needs C >= 1 and N >= 1, got C={C}, N={N}")
        self.C = int(C)
        self.N = int(N)
        self._decisions = tuple(Categorical(f"edge{to}_{frm}", OPS) for to, frm in EDGES)

    def decisions(self, children_seen: int = 0) -> tuple[Categorical, ...]:
        return self._decisions

    def from_choices(self, choices: Sequence[int]) -> NB201Arch:
        c = validate_choices(self._decisions, choices)
        return NB201Arch(tuple(OPS[i] for i in c))

    def to_choices(self, arch: NB201Arch) -> tuple[int, ...]:
        return tuple(OPS.index(op) for op in arch.ops)

    def decode(self, text: str) -> NB201Arch:
        return decode_cell(text)

    def named(self) -> dict[str, NB201Arch]:
        # the best CIFAR-100 cell of the benchmark and the ResNet-like all-3x3 cell
        return {
            "best_cifar100": decode_cell("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                         "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
            "resnet": decode_cell("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|"
                                  "+|skip_connect~0|none~1|skip_connect~2|"),
        }

    # -- the Progressive capability: PNAS grows the cell node by node -----------------------
    growth_stages = 3
    #: the size-free columns of :meth:`vector`: op counts, (op, reads the cell input)
    #: counts and the number of nodes
    summary_columns = slice(len(EDGES) * len(OPS), len(EDGES) * len(OPS) + 3 * len(OPS) + 1)
    #: columns of one token (one edge's one-hot op) of the slot part of :meth:`vector`
    token_width = len(OPS)

    def _arch(self, arch: Any) -> NB201Arch:
        if not isinstance(arch, NB201Arch):
            raise TypeError(f"expected an NB201Arch, got {type(arch).__name__}")
        return arch

    def cell_size(self, arch: NB201Arch) -> int:
        """The number of grown nodes: the smallest b whose later nodes all pass through
        (see :func:`grown_cell`); 3 for a cell whose node 3 does anything else."""
        arch = self._arch(arch)
        b = 3
        while b > 1 and _pass_through(arch, b):
            b -= 1
        return b

    def canonical(self, arch: NB201Arch) -> NB201Arch:
        """Every NB201 string is its own canonical form (the table lists all 15,625)."""
        return self._arch(arch)

    def smallest_cells(self) -> list[NB201Arch]:
        """The 5 one-node cells (node 1's op; nodes 2 and 3 pass it through)."""
        return [grown_cell((op,)) for op in OPS]

    def grow(self, arch: NB201Arch) -> tuple[list[str], np.ndarray]:
        """Every choice of the next node's edges (25 for node 2, 125 for node 3), as
        strings and :meth:`vector` rows."""
        b = self.cell_size(arch)
        if b >= 3:
            raise ValueError("cell already has all 3 nodes")
        prefix = arch.ops[: NODE_EDGES[b]]
        # at most 5 + 125 parents: remember each one's expansions (PNAS asks every round)
        cache = self.__dict__.setdefault("_grown", {})
        if prefix not in cache:
            kids = [grown_cell(prefix + combo) for combo in itertools.product(OPS, repeat=b + 1)]
            rows = np.stack([self.vector(k) for k in kids])
            rows.flags.writeable = False
            cache[prefix] = ([k.encode() for k in kids], rows)
        keys, rows = cache[prefix]
        return list(keys), rows

    def neighbours(self, arch: NB201Arch) -> list[str]:
        """The cells one grown edge's op away (the pass-through edges stay)."""
        b = self.cell_size(arch)
        prefix = arch.ops[: NODE_EDGES[b]]
        return [grown_cell(prefix[:i] + (op,) + prefix[i + 1:]).encode()
                for i in range(len(prefix)) for op in OPS if op != prefix[i]]

    def random_cell(self, rng: random.Random, size: int) -> NB201Arch:
        """A random cell grown to ``size`` nodes."""
        if isinstance(size, bool) or size not in (1, 2, 3):
            raise ValueError(f"an NB201 cell has 1..3 nodes, got {size!r}")
        return grown_cell(tuple(OPS[rng.randrange(len(OPS))] for _ in range(NODE_EDGES[size])))

    def vector(self, arch: NB201Arch) -> np.ndarray:
        """Fixed-length encoding of a cell of any size: one-hot op per grown edge (edges
        of pass-through nodes are zeros), then op counts over the grown edges, counts of
        each op on an edge from the cell input (node 0) and from an inner node, and the
        number of nodes. The counts let a predictor fit on smaller cells say something
        about a new node's edges, whose one-hot slots it has never seen filled."""
        b = self.cell_size(arch)
        no = len(OPS)
        v = np.zeros(self.summary_columns.stop, dtype=np.float32)
        base = self.summary_columns.start
        for e in range(NODE_EDGES[b]):
            o = OPS.index(arch.ops[e])
            v[e * no + o] = 1.0
            v[base + o] += 1.0
            v[base + no * (1 if EDGES[e][1] == 0 else 2) + o] += 1.0
        v[-1] = b
        return v

    def build(self, arch: Any, num_classes: int | None = None, width_mult: float = 1.0,
              in_channels: int = 3) -> Any:
        if isinstance(arch, str):
            arch = self.parse(arch)
        if not isinstance(arch, NB201Arch):
            raise TypeError(f"nb201 builds an NB201Arch or its string, got {type(arch).__name__}")
        C = max(1, round(self.C * width_mult))
        return NB201Network(arch.ops, C=C, N=self.N,
                            num_classes=num_classes or self.deploy_classes,
                            in_channels=in_channels)


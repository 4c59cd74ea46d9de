"""Supernet of the ``nb201`` space (NAS-Bench-201's one-shot network), and its MAC count.

The skeleton is the benchmark's CIFAR network — stem, three stages of ``N`` cells
separated by residual reduction blocks, BN-ReLU, pooling, classifier — and every child
runs the same skeleton; only each cell's six edge operations differ. So:

* the stem, the two reductions, the last BN-ReLU and the classifier are single modules
  every child uses (built once, seeded, like the standalone network's);
* each **cell position × edge × parametric op** has its own module, keyed
  ``c{k}e{e}|{op}`` (``nor_conv_1x1`` / ``nor_conv_3x3``, ReLU-Conv-BN) — ENAS's sharing
  per (position, operation), which is also the weight-sharing baseline of the NB201
  paper (Dong & Yang, 2020). ``none``, ``skip_connect`` and ``avg_pool_3x3`` have no
  weights.

Every cell of a child carries the same genotype (as in the benchmark), at its own
position's weights. A child equals its standalone build with the same weights
(:meth:`Supernet.to_standalone`; tested). Unlike the ``mnasnet`` supernet there is no
width slicing: each module has the one shape its position needs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnas.spaces.nb201 import EDGES, NB201Arch, NB201Network, ReLUConvBN, ResidualReduction
from search.supernet import Spec, Supernet

#: edge ops with weights (each gets a shared module per cell position and edge)
PARAMETRIC = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class NB201Supernet(Supernet):
    """Weight-shared ``nb201`` children at one proxy width (see the module doc)."""

    def __init__(self, space: Any, num_classes: int = 10, width_mult: float = 0.5,
                 in_channels: int = 3, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__(space, num_classes, width_mult, in_channels, seed, channels_last)
        self.C = max(1, round(space.C * self.width_mult))        # as space.build
        C, N = self.C, int(space.N)
        # (standalone index in ``cells``, channels, kind) of every skeleton position
        self.positions: list[tuple[int, int, str]] = []
        c = C
        for stage in range(3):
            if stage:
                self.positions.append((len(self.positions), c, "reduction"))
                c *= 2
            first = len(self.positions)
            self.positions.extend((first + i, c, "cell") for i in range(N))
        self.stem = self.seeded("stem", lambda: nn.Sequential(
            nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)))
        self.reductions = nn.ModuleDict({
            str(k): self.seeded(f"reduction{k}", lambda c=c: ResidualReduction(c, 2 * c))
            for k, c, kind in self.positions if kind == "reduction"})
        self.lastact = self.seeded("lastact", lambda: nn.Sequential(nn.BatchNorm2d(c),
                                                                    nn.ReLU(inplace=False)))
        self.classifier = self.seeded("classifier", lambda: nn.Linear(c, num_classes))

    def _build(self, spec: Spec) -> nn.Module:
        kind, op, c = spec
        if kind != "op" or op not in PARAMETRIC:
            raise ValueError(f"unknown nb201 supernet module spec {spec!r}")
        return ReLUConvBN(int(c), int(c), PARAMETRIC[str(op)])

    def _compile(self, arch: Any) -> Any:
        if not isinstance(arch, NB201Arch):
            raise TypeError(f"the nb201 supernet runs NB201Arch cells, got {type(arch).__name__}")
        steps: list[tuple[str, Any]] = []
        for k, c, kind in self.positions:
            if kind == "reduction":
                steps.append(("reduction", self.reductions[str(k)]))
                continue
            edges = [(op, self.module(f"c{k}e{e}|{op}", ("op", op, c))
                      if op in PARAMETRIC else None) for e, op in enumerate(arch.ops)]
            steps.append(("cell", edges))
        return steps

    @staticmethod
    def _edge(op: str, m: nn.Module | None, x: torch.Tensor) -> torch.Tensor | None:
        if m is not None:
            return m(x)
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return None                                          # none: adds nothing

    def _run(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        x = self.stem(x)
        for kind, what in path:
            if kind == "reduction":
                x = what(x)
                continue
            nodes = [x]                                      # Cell.forward
            for to in range(1, 4):
                total: torch.Tensor | None = None
                for e, (t, frm) in enumerate(EDGES):
                    if t != to:
                        continue
                    y = self._edge(*what[e], nodes[frm])
                    if y is not None:
                        total = y if total is None else total + y
                nodes.append(total if total is not None else torch.zeros_like(x))
            x = nodes[3]
        x = self.lastact(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def child_modules(self, arch: Any) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"stem": self.stem}
        for (k, _, _), (kind, what) in zip(self.positions, self.compiled(arch), strict=True):
            if kind == "reduction":
                out[f"cells.{k}"] = what
                continue
            for e, (_, m) in enumerate(what):
                if m is not None:
                    out[f"cells.{k}.edges.{e}"] = m
        out["lastact"] = self.lastact
        out["classifier"] = self.classifier
        return out


class Nb201Macs:
    """``arch -> MACs`` of the deployable child (the space's C and N, deployment input
    and classes) as :func:`mnas.counting.count_macs` counts the built model: the
    skeleton (all edges ``none``) plus, per parametric op, its cost in one cell of each
    stage times the number of cells — counted once on the real modules."""

    def __init__(self, space: Any, in_channels: int = 3) -> None:
        from mnas.counting import count_macs

        r = int(space.deploy_resolution)
        skeleton = NB201Network(("none",) * len(EDGES), C=space.C, N=space.N,
                                num_classes=int(space.deploy_classes), in_channels=in_channels)
        self.base = int(count_macs(skeleton, (1, in_channels, r, r)))
        self.per_op = {op: sum(space.N * int(count_macs(ReLUConvBN(c, c, k), (1, c, s, s)))
                               for c, s in ((space.C, r), (2 * space.C, (r + 1) // 2),
                                            (4 * space.C, (r + 3) // 4)))
                       for op, k in PARAMETRIC.items()}

    def __call__(self, arch: Any) -> int:
        return self.base + sum(self.per_op.get(op, 0) for op in arch.ops)

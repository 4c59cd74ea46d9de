"""``nasrl``: NAS-RL's chain of conv layers with anchor-point skips (Zoph & Le, 2017).

Each layer is conv(filter height × filter width, filters, stride) → BN → ReLU. Its input
is the depth-concatenation of the earlier layers the controller connects to it (one
yes/no per earlier layer — the paper's anchor points). The paper's three rules make
every architecture compile:

1. a layer with no input takes the image;
2. every layer output nobody consumes is concatenated into the final hidden state, which
   goes to the classifier (here: global average pool → linear);
3. inputs of different spatial sizes are zero-padded (centred) to the largest.

**Decisions.** Layer 0: ``L0.fh, L0.fw, L0.filters[, L0.stride]``. Layer i > 0 opens with
``Li.in`` — a Subset over the i earlier layers' anchors (bit j = layer j), the anchor
point at the start of a layer as in the paper's figure — followed by the same shape
decisions. Each layer's *last* decision carries ``anchor=True``, so the anchor of layer
j is the controller state after layer j's decisions, and at ``Li.in`` the i most recent
anchors are exactly layers ``0 .. i-1``, oldest first. The stride decision exists only
when ``strides`` offers more than one value (the paper: fixed 1, or {1, 2, 3}); the
paper's separate stride height/width is one square stride here.

**Depth schedule.** ``decisions(children_seen)`` describes
``start_depth + grow_by · (children_seen // grow_every)`` layers (6, +2 every 1,600
children — the paper's numbers), capped at ``max_depth`` if given (and always at 1,000 layers). Strings, choice
vectors and builders accept any depth ≥ 1, so children of earlier depths stay valid.
The base class's fixed-length ``vector()`` covers only ``start_depth``-layer archs.

**Strings** read ``L0:fh3fw5f36s1|L1:fh1fw3f24s1in0|L2:fh3fw3f48s2in0+1|L3:fh1fw1f24s1in-``
(``in-``: no input, so the image).

**Options** (constructor arguments; list options also take strings like ``"1,2,3"``):
``strides`` ``"1"`` (fixed, default) or ``"1,2,3"`` (``"fixed"`` / ``"search"`` work too);
``start_depth`` 6, ``grow_by`` 2, ``grow_every`` 1600, ``max_depth`` None;
``kernel_sizes`` ``"1,3,5,7"`` (filter height and width), ``filters`` ``"24,36,48,64"``.
``build(width_mult=…)`` scales every layer's filters (at least 1).

**Deployment setting**: CIFAR-10 — 32×32 inputs, 10 classes (``deploy_resolution`` /
``deploy_classes``). The paper cubes the accuracy reward: ``Reward(transform="cube")``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnas.decisions import Categorical, Decision, Subset, validate_choices
from mnas.spaces.base import DIGITS, SearchSpace, as_int, register_space, shown

_N = f"({DIGITS})"
_LAYER_RE = re.compile(rf"L{_N}:fh{_N}fw{_N}f{_N}s{_N}(?:in(-|{DIGITS}(?:\+{DIGITS})*))?")

#: no network deeper than this (``max_depth`` None still stops here): a larger
#: ``grow_by`` or ``start_depth`` would hang the first build instead of searching
MAX_DEPTH = 1000


@dataclass(frozen=True)
class ConvLayer:
    """One layer: a ``fh × fw`` conv with ``filters`` outputs reading layers ``inputs``."""

    fh: int
    fw: int
    filters: int
    stride: int = 1
    inputs: tuple[int, ...] = ()

    def encode(self, index: int) -> str:
        text = f"L{index}:fh{self.fh}fw{self.fw}f{self.filters}s{self.stride}"
        if index > 0:
            text += "in" + ("+".join(map(str, self.inputs)) or "-")
        return text


@dataclass(frozen=True)
class NasRLArch:
    """A chain of conv layers; layer i reads a sorted subset of layers ``0 .. i-1``."""

    layers: tuple[ConvLayer, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("an architecture needs at least one layer")
        for i, layer in enumerate(self.layers):
            if min(layer.fh, layer.fw, layer.filters, layer.stride) < 1:
                raise ValueError(f"layer {i}: sizes must be positive, got {layer}")
            if list(layer.inputs) != sorted(set(layer.inputs)) or any(
                    not 0 <= j < i for j in layer.inputs):
                raise ValueError(f"layer {i}: inputs must be sorted distinct layers in "
                                 f"0..{i - 1}, got {layer.inputs}")

    @property
    def depth(self) -> int:
        return len(self.layers)

    def unconsumed(self) -> tuple[int, ...]:
        """Layers no later layer reads: concatenated before the classifier."""
        used = {j for layer in self.layers for j in layer.inputs}
        return tuple(i for i in range(self.depth) if i not in used)

    def encode(self) -> str:
        return "|".join(layer.encode(i) for i, layer in enumerate(self.layers))

    def __str__(self) -> str:
        return self.encode()


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """Option values as a sorted tuple of distinct positive ints (accepts "1,2,3")."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, int):
        value = [value]
    try:
        out = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be positive integers like '1,2,3', got {value!r}") from None
    if not out or out[0] < 1:
        raise ValueError(f"{name} must be one or more positive integers, got {value!r}")
    return out



def _pad_cat(xs: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad (centred) to the largest height and width, then concatenate on depth."""
    if len(xs) == 1:
        return xs[0]
    h = max(x.shape[2] for x in xs)
    w = max(x.shape[3] for x in xs)
    padded = []
    for x in xs:
        dh, dw = h - x.shape[2], w - x.shape[3]
        if dh or dw:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        padded.append(x)
    return torch.cat(padded, dim=1)


class NasRLNetwork(nn.Module):
    """A built NAS-RL architecture (see the module docstring for the wiring rules)."""

    def __init__(self, arch: NasRLArch, num_classes: int, width_mult: float,
                 in_channels: int) -> None:
        super().__init__()
        channels: list[int] = []
        layers = []
        for layer in arch.layers:
            c_in = sum(channels[j] for j in layer.inputs) if layer.inputs else in_channels
            c_out = max(1, round(layer.filters * width_mult))
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, (layer.fh, layer.fw), layer.stride,
                          (layer.fh // 2, layer.fw // 2), bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ))
            channels.append(c_out)
        self.layers = nn.ModuleList(layers)
        self.inputs = [layer.inputs for layer in arch.layers]
        self.outputs = arch.unconsumed()
        self.classifier = nn.Linear(sum(channels[i] for i in self.outputs), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for layer, inputs in zip(self.layers, self.inputs, strict=True):
            outs.append(layer(_pad_cat([outs[j] for j in inputs]) if inputs else x))
        h = _pad_cat([outs[i] for i in self.outputs])
        return self.classifier(h.mean(dim=(2, 3)))


@register_space
class NasRLSpace(SearchSpace):
    """NAS-RL's conv-layer chain with anchor skips and a growing depth."""

    name = "nasrl"
    deploy_resolution = 32  # CIFAR-10 setting
    deploy_classes = 10

    def __init__(self, start_depth: int = 6, grow_by: int = 2, grow_every: int = 1600,
                 max_depth: int | None = None, strides: str | Sequence[int] = "1",
                 kernel_sizes: str | Sequence[int] = "1,3,5,7",
                 filters: str | Sequence[int] = "24,36,48,64") -> None:
        # list options default to strings so CLI ``KEY=1,2,3`` values keep their type
        self.start_depth = as_int("start_depth", start_depth, 1, MAX_DEPTH)
        self.grow_by = as_int("grow_by", grow_by, 0, MAX_DEPTH)
        self.grow_every = as_int("grow_every", grow_every, 1)
        self.max_depth = None if max_depth in (None, "", "none") else as_int(
            "max_depth", max_depth, self.start_depth, MAX_DEPTH)
        if strides in ("fixed", "search"):
            strides = (1,) if strides == "fixed" else (1, 2, 3)
        self.strides = _int_tuple("strides", strides)
        self.kernel_sizes = _int_tuple("kernel_sizes", kernel_sizes)
        self.filters = _int_tuple("filters", filters)
        self._cache: dict[int, tuple[Decision, ...]] = {}

    # -- decisions -------------------------------------------------------------------
    @property
    def per_layer(self) -> int:
        """Shape decisions per layer (3, or 4 with a stride decision)."""
        return 3 + (len(self.strides) > 1)

    def depth_at(self, children_seen: int) -> int:
        """Depth of the architectures proposed after ``children_seen`` children."""
        if children_seen < 0:
            raise ValueError(f"children_seen must be >= 0, got {children_seen}")
        depth = self.start_depth + self.grow_by * (children_seen // self.grow_every)
        return min(depth, MAX_DEPTH if self.max_depth is None else self.max_depth)

    def decisions_for_depth(self, depth: int) -> tuple[Decision, ...]:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if depth not in self._cache:
            ds: list[Decision] = []
            for i in range(depth):
                if i > 0:
                    ds.append(Subset(f"L{i}.in", i))
                layer = [Categorical(f"L{i}.fh", self.kernel_sizes),
                         Categorical(f"L{i}.fw", self.kernel_sizes),
                         Categorical(f"L{i}.filters", self.filters)]
                if len(self.strides) > 1:
                    layer.append(Categorical(f"L{i}.stride", self.strides))
                last = layer[-1]
                layer[-1] = Categorical(last.name, last.options, anchor=True)
                ds += layer
            self._cache[depth] = tuple(ds)
        return self._cache[depth]

    def decisions(self, children_seen: int = 0) -> tuple[Decision, ...]:
        return self.decisions_for_depth(self.depth_at(children_seen))

    # -- choices ---------------------------------------------------------------------
    def _depth_of(self, n_choices: int) -> int:
        k = self.per_layer
        depth, rem = divmod(n_choices + 1, k + 1)  # n = depth·k + (depth - 1)
        if rem or depth < 1:
            raise ValueError(f"{n_choices} choices fit no depth; a depth-d architecture has "
                             f"d·{k} + d - 1 choices ({k}, {2 * k + 1}, {3 * k + 2}, ...)")
        return depth

    def from_choices(self, choices: Sequence[int]) -> NasRLArch:
        depth = self._depth_of(len(choices))
        c = iter(validate_choices(self.decisions_for_depth(depth), choices))
        layers = []
        for i in range(depth):
            mask = next(c) if i > 0 else 0
            fh, fw, f = self.kernel_sizes[next(c)], self.kernel_sizes[next(c)], self.filters[next(c)]
            s = self.strides[next(c)] if len(self.strides) > 1 else self.strides[0]
            inputs = tuple(j for j in range(i) if mask >> j & 1)
            layers.append(ConvLayer(fh, fw, f, s, inputs))
        return NasRLArch(tuple(layers))

    def to_choices(self, arch: NasRLArch) -> tuple[int, ...]:
        self._check(arch)
        out: list[int] = []
        for i, layer in enumerate(arch.layers):
            if i > 0:
                out.append(sum(1 << j for j in layer.inputs))
            out += [self.kernel_sizes.index(layer.fh), self.kernel_sizes.index(layer.fw),
                    self.filters.index(layer.filters)]
            if len(self.strides) > 1:
                out.append(self.strides.index(layer.stride))
        return tuple(out)

    def _check(self, arch: Any) -> NasRLArch:
        if not isinstance(arch, NasRLArch):
            raise TypeError(f"expected a NasRLArch, got {type(arch).__name__}")
        for i, layer in enumerate(arch.layers):
            for what, value, valid in (("filter height", layer.fh, self.kernel_sizes),
                                       ("filter width", layer.fw, self.kernel_sizes),
                                       ("filters", layer.filters, self.filters),
                                       ("stride", layer.stride, self.strides)):
                if value not in valid:
                    raise ValueError(f"layer {i}: {what} {value} is not in this space; "
                                     f"valid: {', '.join(map(str, valid))}")
        return arch

    # -- strings ---------------------------------------------------------------------
    def decode(self, text: str) -> NasRLArch:
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        layers = []
        for i, token in enumerate(text.strip().split("|")):
            m = _LAYER_RE.fullmatch(token)
            if m is None:
                raise ValueError(f"bad layer token {shown(token)}; expected like "
                                 f"'L{i}:fh3fw3f36s1" + ("in0+1'" if i else "'"))
            idx, fh, fw, f, s, ins = m.groups()
            if int(idx) != i:
                raise ValueError(f"layer token {shown(token)} is at position {i}; expected 'L{i}:'")
            if i == 0 and ins is not None:
                raise ValueError(f"layer token {shown(token)}: layer 0 always reads the image; "
                                 "drop its 'in' part")
            if i > 0 and ins is None:
                raise ValueError(f"layer token {shown(token)} needs its inputs: 'in' + layers "
                                 f"0..{i - 1} joined by '+', or 'in-' for the image")
            inputs = () if ins in (None, "-") else tuple(int(j) for j in ins.split("+"))
            bad = [j for j in inputs if j >= i]
            if bad or list(inputs) != sorted(set(inputs)):
                raise ValueError(f"layer token {shown(token)}: inputs must be distinct, ascending "
                                 f"layers in 0..{i - 1} (or '-'), got {shown('in' + ins)}")
            layers.append(ConvLayer(int(fh), int(fw), int(f), int(s), inputs))
        return self._check(NasRLArch(tuple(layers)))

    def named(self) -> dict[str, NasRLArch]:
        """``chain6``: six 3×3, 36-filter layers, each reading the one before (a plain CNN)."""
        layers = tuple(ConvLayer(3, 3, 36, 1, (i - 1,) if i else ()) for i in range(6))
        try:  # absent when the space's options exclude it
            return {"chain6": self._check(NasRLArch(layers))}
        except ValueError:
            return {}

    # -- building --------------------------------------------------------------------
    def build(self, arch: NasRLArch | str, num_classes: int | None = None,
              width_mult: float = 1.0, in_channels: int = 3) -> NasRLNetwork:
        arch, num_classes, in_channels = self._build_args(arch, num_classes, width_mult,
                                                          in_channels)
        return NasRLNetwork(arch, num_classes, width_mult, in_channels)

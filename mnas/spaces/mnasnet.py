"""MnasNet's factorized hierarchical search space on the MobileNetV2 skeleton (the default).

The network is ``stem (3x3 conv 32, stride 2) -> 7 blocks -> head (1x1 conv 1280, global
average pool, dropout, linear)``. Block ``i`` follows MobileNetV2's row ``(t, c, n, s)``::

    (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1)

and makes six decisions, shared by all of its layers (so 7 x 6 = 42 decisions):

* ConvOp: ``conv`` (regular kxk conv), ``dsconv`` (depthwise-separable: dw kxk + linear
  1x1), ``mbconv3`` / ``mbconv6`` (mobile inverted bottleneck, expansion 3 / 6);
* kernel: 3 or 5;
* SE ratio: 0 or 0.25 (reduced width = ``max(1, int(layer_input_channels * 0.25))``);
* skip op: ``pool``, ``identity`` or ``none``;
* filters: MobileNetV2's ``c`` x {0.75, 1.0, 1.25} (all exact integers, e.g. 24/32/40);
* layers: MobileNetV2's ``n`` + {-1, 0, +1}. Zero layers omits the block; only blocks 1
  and 7 (n = 1, stride 1) can reach zero, so the total stride is always 32.

The first layer of a block has the row's stride and changes the width to the block's
filters; the others have stride 1 and equal widths.

Skip ops — MnasNet's paper names "pooling, identity residual, no skip" without defining
them; this is **our reading**:

* ``identity``: ``out = layer(x) + x`` wherever that is shape-preserving (stride 1 and
  equal channels), i.e. MobileNetV2's rule. The first layer of a block that downsamples
  or changes width therefore gets no shortcut; identity never adds parameters.
* ``pool``: every layer gets ``out = layer(x) + proj(avgpool(x))`` where ``avgpool`` is a
  3x3 average pool with the layer's stride (padding 1, padding excluded) and ``proj`` a
  1x1 conv + BN used only when the width changes. At stride 1 it is a smoothing
  shortcut, not the identity, so all three skip ops build different networks.
* ``none``: no shortcut.

Canonical strings (timm-like): one token group per block, joined by ``-``::

    ds_r1_k3_s1_c16_idskip-ir_r2_k3_s2_e6_c24_idskip-...-ir_r1_k3_s1_e6_c320_se0.25_poolskip

``cn``/``ds``/``ir`` = conv / dsconv / MBConv (``e3``/``e6`` only on ``ir``), ``rN``
layers, ``kN`` kernel, ``sN`` the block's stride (fixed by the skeleton: shown for
readers, checked on decode), ``cN`` filters at width 1.0, ``se0.25`` present only when
SE is on, then ``noskip``/``idskip``/``poolskip``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mnas.blocks import (
    ClassifierHead,
    ConvBnAct,
    DepthwiseSeparable,
    MBConv,
    RegularConv,
    init_weights,
)
from mnas.decisions import Categorical, validate_choices
from mnas.spaces.base import DIGITS, SearchSpace, register_space, shown

#: MobileNetV2 rows (expansion t, channels c, layers n, first stride s)
SKELETON: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_BLOCKS = len(SKELETON)

CONV_OPS = ("conv", "dsconv", "mbconv3", "mbconv6")
KERNELS = (3, 5)
SE_RATIOS = (0.0, 0.25)
SKIPS = ("pool", "identity", "none")
FILTER_MULTS = (0.75, 1.0, 1.25)
LAYER_OFFSETS = (-1, 0, 1)

_OP_TOKEN = {"conv": ("cn", None), "dsconv": ("ds", None), "mbconv3": ("ir", 3),
             "mbconv6": ("ir", 6)}
_SKIP_TOKEN = {"pool": "poolskip", "identity": "idskip", "none": "noskip"}
_TOKEN_SKIP = {v: k for k, v in _SKIP_TOKEN.items()}


def filter_options(block: int) -> tuple[int, ...]:
    """Filter counts allowed in ``block`` (0-based): MobileNetV2's c x {0.75, 1, 1.25}."""
    c = SKELETON[block][1]
    out = tuple(int(c * m) for m in FILTER_MULTS)
    assert all(abs(o - c * m) < 1e-9 for o, m in zip(out, FILTER_MULTS, strict=True))
    return out


def layer_options(block: int) -> tuple[int, ...]:
    """Layer counts allowed in ``block`` (0-based): MobileNetV2's n + {-1, 0, +1}."""
    n = SKELETON[block][2]
    return tuple(n + d for d in LAYER_OFFSETS)


def _fmt(options: Sequence[object]) -> str:
    return ", ".join(str(o) for o in options)


@dataclass(frozen=True)
class BlockSpec:
    """One block's decisions (values, not indices). Validated against its position by
    :class:`MnasArch`."""

    op: str
    kernel: int
    se: float
    skip: str
    filters: int
    layers: int

    def __post_init__(self) -> None:
        for field in ("kernel", "filters", "layers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field} must be an int, got {value!r}")
        if self.op not in CONV_OPS:
            raise ValueError(f"op {self.op!r} invalid; valid: {_fmt(CONV_OPS)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel {self.kernel!r} invalid; valid: {_fmt(KERNELS)}")
        if self.se not in SE_RATIOS:
            raise ValueError(f"se ratio {self.se!r} invalid; valid: {_fmt(SE_RATIOS)}")
        if self.skip not in SKIPS:
            raise ValueError(f"skip {self.skip!r} invalid; valid: {_fmt(SKIPS)}")
        object.__setattr__(self, "se", float(self.se))

    def encode(self, stride: int) -> str:
        op, expand = _OP_TOKEN[self.op]
        parts = [op, f"r{self.layers}", f"k{self.kernel}", f"s{stride}"]
        if expand is not None:
            parts.append(f"e{expand}")
        parts.append(f"c{self.filters}")
        if self.se:
            parts.append(f"se{self.se:g}")
        parts.append(_SKIP_TOKEN[self.skip])
        return "_".join(parts)


@dataclass(frozen=True)
class MnasArch:
    """A point of the ``mnasnet`` space: 7 :class:`BlockSpec`. Frozen and hashable."""

    blocks: tuple[BlockSpec, ...]

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        if len(blocks) != NUM_BLOCKS:
            raise ValueError(f"mnasnet arch needs {NUM_BLOCKS} blocks, got {len(blocks)}")
        for i, b in enumerate(blocks):
            if not isinstance(b, BlockSpec):
                raise TypeError(f"block {i + 1} must be a BlockSpec, got {type(b).__name__}")
            if b.filters not in filter_options(i):
                raise ValueError(f"block {i + 1}: filters {b.filters} invalid; valid: "
                                 f"{_fmt(filter_options(i))}")
            if b.layers not in layer_options(i):
                raise ValueError(f"block {i + 1}: layers {b.layers} invalid; valid: "
                                 f"{_fmt(layer_options(i))}")
        object.__setattr__(self, "blocks", blocks)

    def encode(self) -> str:
        return "-".join(b.encode(SKELETON[i][3]) for i, b in enumerate(self.blocks))

    @property
    def key(self) -> str:
        return f"{MnasNetSpace.name}:{self.encode()}"

    def __str__(self) -> str:
        return self.encode()


_NUM = re.compile(rf"(r|k|s|e|c)({DIGITS})")
_SE = re.compile(rf"se({DIGITS}(?:\.{DIGITS})?)")
_TOKEN_HELP = ("op first (cn, ds, ir), then rN, kN, sN, eN (ir only), cN, optional se0.25, "
               "and one of noskip, idskip, poolskip")


def _decode_block(i: int, part: str) -> BlockSpec:
    where = f"block {i + 1} {shown(part)}"
    tokens = part.split("_")
    op_tok = tokens[0]
    if op_tok not in ("cn", "ds", "ir"):
        raise ValueError(f"{where}: op token {shown(op_tok)} invalid; valid: cn, ds, ir")
    found: dict[str, Any] = {}
    given: dict[str, str] = {}   # the token as written: 'c999999999', not 'c1e+09'
    for tok in tokens[1:]:
        m, se = _NUM.fullmatch(tok), _SE.fullmatch(tok)
        if m:
            key, value = m.group(1), int(m.group(2))
        elif se:
            key, value = "se", float(se.group(1))
        elif tok in _TOKEN_SKIP:
            key, value = "skip", _TOKEN_SKIP[tok]
        else:
            raise ValueError(f"{where}: unknown token {shown(tok)}; expected {_TOKEN_HELP}")
        if key in found:
            raise ValueError(f"{where}: token {shown(tok)} repeats {key!r}")
        found[key], given[key] = value, tok
    for key, label in (("r", "layers rN"), ("k", "kernel kN"), ("s", "stride sN"),
                       ("c", "filters cN"), ("skip", "skip noskip|idskip|poolskip")):
        if key not in found:
            raise ValueError(f"{where}: missing {label}")
    if op_tok == "ir":
        if "e" not in found:
            raise ValueError(f"{where}: 'ir' needs an expansion token e3 or e6")
        if found["e"] not in (3, 6):
            raise ValueError(f"{where}: expansion 'e{found['e']}' invalid; valid: e3, e6")
        op = f"mbconv{found['e']}"
    else:
        if "e" in found:
            raise ValueError(f"{where}: expansion token 'e{found['e']}' only applies to 'ir'")
        op = "conv" if op_tok == "cn" else "dsconv"
    stride = SKELETON[i][3]
    if found["s"] != stride:
        raise ValueError(f"{where}: stride 's{found['s']}' invalid; block {i + 1} of the "
                         f"MobileNetV2 skeleton has stride s{stride}")
    checks = (("k", KERNELS, "kernel"), ("c", filter_options(i), "filters"),
              ("r", layer_options(i), "layers"), ("se", SE_RATIOS, "se ratio"))
    for key, valid, label in checks:
        value = found.get(key, 0.0)
        if value not in valid:
            raise ValueError(f"{where}: {label} {given[key]!r} invalid; valid: "
                             + ", ".join(f"{key}{v:g}" for v in valid))
    return BlockSpec(op=op, kernel=int(found["k"]), se=float(found.get("se", 0.0)),
                     skip=str(found["skip"]), filters=int(found["c"]), layers=int(found["r"]))


class MnasNetModel(nn.Module):
    """``stem -> blocks -> head``; returns logits ``[batch, num_classes]``."""

    def __init__(self, stem: nn.Module, blocks: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def scale_channels(channels: int, width_mult: float) -> int:
    """Channels under a width multiplier: exact at 1.0, otherwise rounded and >= 8."""
    if width_mult == 1.0:
        return channels
    return max(8, int(round(channels * width_mult)))


@register_space
class MnasNetSpace(SearchSpace):
    """MnasNet's factorized hierarchical space (see the module docstring).

    ``dropout`` is the classifier dropout of built models (MobileNetV2's 0.2). ``ops`` and
    ``skips`` (comma-separated, default: all) restrict every block's ConvOp and skip op to
    a subset — e.g. ``ops="mbconv3,mbconv6", skips="identity"``, the MBConv-only space of
    ProxylessNAS / Once-for-All, or what a target's accelerator runs well. Arch strings are
    the full space's; an architecture outside the subset is refused by ``to_choices``.
    """

    name = "mnasnet"
    deploy_resolution = 224
    deploy_classes = 1000

    def __init__(self, dropout: float = 0.2, ops: str = ",".join(CONV_OPS),
                 skips: str = ",".join(SKIPS)) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.ops, self.skips = _subset("ops", ops, CONV_OPS), _subset("skips", skips, SKIPS)
        ds = []
        for i in range(NUM_BLOCKS):
            b = f"b{i + 1}"
            ds += [Categorical(f"{b}_op", self.ops), Categorical(f"{b}_kernel", KERNELS),
                   Categorical(f"{b}_se", SE_RATIOS), Categorical(f"{b}_skip", self.skips),
                   Categorical(f"{b}_filters", filter_options(i)),
                   Categorical(f"{b}_layers", layer_options(i))]
        self._decisions = tuple(ds)

    # -- decisions and choices -------------------------------------------------------
    def decisions(self, children_seen: int = 0) -> tuple[Categorical, ...]:
        return self._decisions

    def from_choices(self, choices: Sequence[int]) -> MnasArch:
        c = validate_choices(self._decisions, choices)
        blocks = []
        for i in range(NUM_BLOCKS):
            vals = [d.options[k] for d, k in zip(self._decisions[6 * i: 6 * i + 6],
                                                 c[6 * i: 6 * i + 6], strict=True)]
            blocks.append(BlockSpec(*vals))
        return MnasArch(tuple(blocks))

    def to_choices(self, arch: MnasArch) -> tuple[int, ...]:
        arch = self._check(arch)
        out = []
        for i, b in enumerate(arch.blocks):
            values = (b.op, b.kernel, b.se, b.skip, b.filters, b.layers)
            for d, v in zip(self._decisions[6 * i: 6 * i + 6], values, strict=True):
                if v not in d.options:      # only ops and skips can be restricted
                    raise ValueError(f"block {i + 1} uses {d.name.split('_')[1]} {v!r}, outside "
                                     f"this space's ({', '.join(map(str, d.options))})")
                out.append(d.options.index(v))
        return tuple(out)

    # -- strings -----------------------------------------------------------------------
    def decode(self, text: str) -> MnasArch:
        if not isinstance(text, str):
            raise TypeError(f"arch string must be str, got {type(text).__name__}")
        parts = text.strip().split("-")
        if len(parts) != NUM_BLOCKS or not all(parts):
            raise ValueError(f"{shown(text)} is not a mnasnet arch: expected {NUM_BLOCKS} non-empty "
                             f"blocks joined by '-' (got {len(parts)} parts) or a named point "
                             f"({', '.join(self.named())})")
        return MnasArch(tuple(_decode_block(i, p) for i, p in enumerate(parts)))

    def named(self) -> dict[str, MnasArch]:
        mbv2 = [BlockSpec("dsconv", 3, 0.0, "identity", 16, 1)]
        mbv2 += [BlockSpec("mbconv6", 3, 0.0, "identity", c, n) for _, c, n, _ in SKELETON[1:]]
        # MnasNet-A1 is NOT a point of this space: its block 5 has 112 filters, not one of
        # 72/96/120. This is the nearest point (120), otherwise A1's ops, kernels, SE, layers.
        a1 = [BlockSpec("dsconv", 3, 0.0, "none", 16, 1),
              BlockSpec("mbconv6", 3, 0.0, "identity", 24, 2),
              BlockSpec("mbconv3", 5, 0.25, "identity", 40, 3),
              BlockSpec("mbconv6", 3, 0.0, "identity", 80, 4),
              BlockSpec("mbconv6", 3, 0.25, "identity", 120, 2),
              BlockSpec("mbconv6", 5, 0.25, "identity", 160, 3),
              BlockSpec("mbconv6", 3, 0.0, "identity", 320, 1)]
        return {"mobilenetv2": MnasArch(tuple(mbv2)), "mnasnet-a1-nearest": MnasArch(tuple(a1))}

    # -- building ----------------------------------------------------------------------
    def build(self, arch: MnasArch, num_classes: int | None = None, width_mult: float = 1.0,
              in_channels: int = 3) -> MnasNetModel:
        arch = self._check(arch)
        num_classes = self.deploy_classes if num_classes is None else num_classes
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        ch = scale_channels(STEM_CHANNELS, width_mult)
        stem = ConvBnAct(in_channels, ch, 3, 2)
        stages = []
        for i, b in enumerate(arch.blocks):
            out = scale_channels(b.filters, width_mult)
            layers = []
            for j in range(b.layers):
                stride = SKELETON[i][3] if j == 0 else 1
                layers.append(_make_layer(b, ch, out, stride))
                ch = out
            stages.append(nn.Sequential(*layers))
        head = ClassifierHead(ch, scale_channels(HEAD_CHANNELS, width_mult), num_classes,
                              self.dropout)
        model = MnasNetModel(stem, nn.Sequential(*stages), head)
        init_weights(model)
        return model

    def _check(self, arch: object) -> MnasArch:
        if not isinstance(arch, MnasArch):
            raise TypeError(f"expected an MnasArch, got {type(arch).__name__}")
        return arch


def _subset(name: str, text: str | Sequence[str], valid: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty subset of ``valid`` from ``"a,b"`` (or a sequence), in ``valid``'s order."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    bad = [t for t in items if t not in valid]
    if bad or not any(items):
        raise ValueError(f"{name} must be a comma-separated subset of {', '.join(valid)}; "
                         f"got {text!r}")
    return tuple(v for v in valid if v in items)


def _make_layer(b: BlockSpec, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    kw = {"kernel": b.kernel, "stride": stride, "se_ratio": b.se, "skip": b.skip}
    if b.op == "conv":
        return RegularConv(in_ch, out_ch, **kw)
    if b.op == "dsconv":
        return DepthwiseSeparable(in_ch, out_ch, **kw)
    return MBConv(in_ch, out_ch, expand=int(b.op.removeprefix("mbconv")), **kw)

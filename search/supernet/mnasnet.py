"""Supernet of the ``mnasnet`` space (max-width weights, channel slicing), and the space's
MAC count by layer units.

**Positions** are layer slots ``(block i, layer j)``: block ``i`` has as many slots as
its largest layer count, and a child with ``layers = n`` runs slots ``0 .. n-1`` (the
layers choice is how many of the block's positions run). The stem is one module.

**Operations** — one shared module per position and *ConvOp family*, keyed
``b{i}l{j}|{family}`` (1-based block): ``cn`` (regular conv) and ``ir`` (MBConv, both
expansions, and the depthwise-separable conv). It is the space's own layer body
(``RegularConv`` / ``MBConv`` from :mod:`mnas.blocks`) built at the position's *largest*
settings — 5×5 kernel, SE on, expansion 6, the most filters of the block and, for slot 0,
the widest input any child can feed it (an empty block passes its input on) — and every
child's setting is a slice of it (weight *entanglement*, as Single-Path NAS and
Once-for-All do): conv weights ``[:out, :in]`` and the *centre* 3×3 of a 5×5 kernel,
depthwise ``[:c]``, BatchNorm ``[:c]``, SE ``[:reduced, :c]`` with the child's own reduced
width, ``mbconv3`` the first ``3·in`` expanded channels; a child without SE skips the SE
module. ``dsconv`` is an MBConv without the expansion conv (MobileNetV2's ``t = 1``
layer), so it runs the ``ir`` module's depthwise conv, SE and projection on the first
``in`` channels (:func:`body_plan`). The forward runs the same ops as the block's modules
on those slices (``F.conv2d``, ``F.batch_norm`` with the module's mode, ReLU6, the SE
gate), so a child equals its standalone build when that build gets the slices
(:meth:`Supernet.to_standalone`; tested).

Why entangled: with one independently initialised module per (op, kernel, SE) — 16 per
position — the shared weights never learned (``benchmarks/enas_speed.py``: training loss
above chance after 1,100 shared steps, supernet accuracy at chance). Measured on digits
32×32 (240 shared steps, children varying only the named decisions around MobileNetV2):
kernel × SE with independent modules → accuracy 0.12–0.19; entangled → 0.95–0.96;
mbconv3 vs mbconv6 entangled → 0.93–0.96; filters or layers (always sliced) →
0.94–0.96.

What still does not learn (measured in this file's current form, 240 shared steps,
scored on 40 children, chance 0.10; see ``search.strategies.enas`` for the whole
record): children that mix ConvOp families or skip ops. From a supernet whose largest
child (mbconv6, 5×5, SE, identity skip, most filters and layers) was trained alone for
120 steps to 0.91, changing *one* block of it gives: kernel, SE, expansion, filters,
layers 0.77–0.92 (inherited); skip ``pool``/``none`` 0.42–0.67; ``dsconv`` 0.19–0.26
(entangled with ``ir`` as above — same tensors, but its depthwise conv sees the input
channels where the MBConv's sees expanded ones); ``conv`` 0.06–0.11 (own module).
Training on from there: children varying kernel, SE, filters and layers (mbconv6, fixed
skip) reach 0.73–0.95 (without the warm-up 0.25–0.59); adding ``dsconv`` (entangled or
its own module alike) or the skip op brings every child back to chance (0.06–0.18).

**Skip ops** are separate, because the body does not depend on them: ``identity`` adds
``x`` (only where shape-preserving — the blocks' rule), ``none`` adds nothing, ``pool``
adds the 3×3 average pool and, when the width changes, a per-position max-width 1×1
projection (``b{i}l{j}|poolproj``), sliced likewise. The head (``head``) is one
``ClassifierHead`` whose 1×1 conv is sliced to the child's last width.

**Private BatchNorm** (``private_bn``, off by default): the BatchNorms of a layer's
body come from a set per position and the named layer settings (``op``, ``kernel``,
``se``, the real ``skip``), keyed ``b{i}l{j}|bn|{values}``, while conv and SE weights
stay shared — the one-shot trick of per-alternative BN affine and statistics;
``zero_gamma`` starts a residual branch's last gamma at 0. Measured: no help (uniform
children 0.12–0.17 after 1,100–2,200 steps, as without; see ``search.strategies.enas``).

Slicing also bounds the table at 2 operation modules per position, and trains every
width of an operation together. Autograd gives the whole max-width tensor a gradient
(zero outside the slice), so SGD's momentum and weight decay touch it all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnas.blocks import ClassifierHead, ConvBnAct, SqueezeExcite, init_weights, se_channels
from mnas.spaces import mnasnet as sp
from search.supernet import Spec, Supernet


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """``bn`` on the first ``c`` channels (``nn.BatchNorm2d.forward`` on slices; the
    running statistics are updated through views of the module's buffers)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean[:c] if track and bn.running_mean is not None else None,
                        bn.running_var[:c] if track and bn.running_var is not None else None,
                        bn.weight[:c], bn.bias[:c], use_batch, factor, bn.eps)


def conv_bn_act(m: nn.Module, x: torch.Tensor, cin: int, cout: int,
                kernel: int | None = None, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """A max-width, max-kernel :class:`ConvBnAct` run on ``cin -> cout`` channels with a
    ``kernel``×``kernel`` window (default: the module's) — the *centre* of the stored
    kernel, as Single-Path NAS and Once-for-All nest a 3×3 kernel in a 5×5 one
    (depthwise when the conv is grouped: then ``cin == cout`` groups). ``bn`` replaces
    the module's own BatchNorm (a private one, see :class:`MnasNetSupernet`)."""
    conv, bn = m[0], (m[1] if bn is None else bn)
    w = conv.weight[:cout, :cin] if conv.groups == 1 else conv.weight[:cout]
    groups = 1 if conv.groups == 1 else cout
    big = w.shape[-1]
    k = big if kernel is None else min(kernel, big)      # 1×1 convs stay 1×1
    if k != big:
        o = (big - k) // 2
        # contiguous: a strided kernel view gave NaN weight gradients in the CPU
        # depthwise convolution's backward (torch 2.13)
        w = w[:, :, o: o + k, o: o + k].contiguous()
    x = F.conv2d(x, w, None, conv.stride, (k - 1) // 2, conv.dilation, groups)
    x = batch_norm(bn, x, cout)
    return F.relu6(x) if len(m) > 2 else x


def squeeze_excite(m: SqueezeExcite, x: torch.Tensor, c: int, r: int) -> torch.Tensor:
    """A max-width :class:`SqueezeExcite` on ``c`` channels reduced to ``r``."""
    s = F.adaptive_avg_pool2d(x, 1)
    s = F.relu(F.conv2d(s, m.reduce.weight[:r, :c], m.reduce.bias[:r]))
    s = torch.sigmoid(F.conv2d(s, m.expand.weight[:c, :r], m.expand.bias[:c]))
    return x * s


#: the shared module (family) each ConvOp runs on, and the index in that module's body of
#: each of the op's steps
FAMILY = {"conv": "cn", "dsconv": "ir", "mbconv3": "ir", "mbconv6": "ir"}
#: the widest layer of each family: what its one shared module is built as ("ds": only
#: to replay checkpoints written while dsconv had a module of its own)
_FAMILY_OP = {"cn": "conv", "ds": "dsconv", "ir": "mbconv6"}
MAX_KERNEL = max(sp.KERNELS)
#: layer settings a private BatchNorm set can be keyed by ("skip" is the shortcut the
#: layer really has: identity where it cannot apply is "none")
PRIVATE_FIELDS = ("op", "kernel", "se", "skip")
MAX_SE = max(sp.SE_RATIOS)


def body_plan(op: str, cin: int, cout: int, se: float
              ) -> list[tuple[int, str, int, int]]:
    """Steps of a child layer ``cin -> cout`` as :mod:`mnas.blocks` orders its body:
    ``(index in the family module's body, "conv" | "se", a, b)`` with ``("conv", in,
    out)`` or ``("se", channels, reduced)``. ``dsconv`` runs the ``ir`` module's
    depthwise conv, SE and projection on its first ``cin`` channels (an MBConv of
    expansion 1, MobileNetV2's ``t = 1`` layer), ``mbconv3`` its first ``3·cin``."""
    def se_step(i: int, c: int) -> list[tuple[int, str, int, int]]:
        return [(i, "se", c, se_channels(cin, se))] if se > 0 else []

    if op == "conv":
        return [(0, "conv", cin, cout), *se_step(1, cout)]
    if op == "dsconv":
        return [(1, "conv", cin, cin), *se_step(2, cin), (3, "conv", cin, cout)]
    mid = cin * int(op.removeprefix("mbconv"))
    return [(0, "conv", cin, mid), (1, "conv", mid, mid), *se_step(2, mid),
            (3, "conv", mid, cout)]


class MnasNetSupernet(Supernet):
    """Weight-shared ``mnasnet`` children at one proxy width (see the module doc)."""

    def __init__(self, space: Any, num_classes: int = 10, width_mult: float = 0.5,
                 in_channels: int = 3, seed: int = 0, channels_last: bool = True,
                 private_bn: tuple[str, ...] = (), zero_gamma: bool = False) -> None:
        super().__init__(space, num_classes, width_mult, in_channels, seed, channels_last)
        bad = [f for f in private_bn if f not in PRIVATE_FIELDS]
        if bad:
            raise ValueError(f"private_bn fields {bad} invalid; valid: {', '.join(PRIVATE_FIELDS)}")
        self.private_bn = tuple(f for f in PRIVATE_FIELDS if f in private_bn)
        self.zero_gamma = bool(zero_gamma)
        w = self.width_mult
        self.stem_channels = sp.scale_channels(sp.STEM_CHANNELS, w)
        # the widest input each block's first layer (and the head) can see
        self.in_max: list[int] = []
        self.out_max: list[int] = []
        prev = {self.stem_channels}
        for i in range(sp.NUM_BLOCKS):
            self.in_max.append(max(prev))
            outs = {sp.scale_channels(f, w) for f in sp.filter_options(i)}
            self.out_max.append(max(outs))
            prev = outs | (prev if 0 in sp.layer_options(i) else set())
        self.head_in_max = max(prev)

        def stem() -> nn.Module:
            m = ConvBnAct(in_channels, self.stem_channels, 3, 2)
            init_weights(m)
            return m

        self.stem = self.seeded("stem", stem)

    def _widths(self, i: int, j: int) -> tuple[int, int, int]:
        """Max input width, max output width and stride of position (i, j)."""
        cin = self.in_max[i] if j == 0 else self.out_max[i]
        return cin, self.out_max[i], sp.SKELETON[i][3] if j == 0 else 1

    def _build(self, spec: Spec) -> nn.Module:
        kind = spec[0]
        if kind == "body":
            _, i, j, family = spec
            cin, cout, stride = self._widths(int(i), int(j))
            block = sp.BlockSpec(_FAMILY_OP[str(family)], MAX_KERNEL, MAX_SE, "none", cout, 1)
            layer = sp._make_layer(block, cin, cout, stride)
            init_weights(layer)
            return layer.body
        if kind == "bn":            # a private set of the body's BatchNorms
            _, i, j, family, shortcut = spec
            body = self._build(("body", i, j, family))
            bns = nn.ModuleDict({str(k): m[1] for k, m in enumerate(body)
                                 if isinstance(m, ConvBnAct)})
            if self.zero_gamma and shortcut != "none":   # the residual branch starts at 0
                nn.init.zeros_(bns[max(bns, key=int)].weight)
            return bns
        if kind == "proj":
            cin, cout, _ = self._widths(int(spec[1]), int(spec[2]))
            m = ConvBnAct(cin, cout, 1, act=False)      # PoolShortcut's projection
        elif kind == "head":
            m = ClassifierHead(self.head_in_max, sp.scale_channels(sp.HEAD_CHANNELS,
                                                                   self.width_mult),
                               self.num_classes, self.space.dropout)
        else:
            raise ValueError(f"unknown mnasnet supernet module spec {spec!r}")
        init_weights(m)
        return m

    def layers(self, arch: Any) -> list[tuple[str, int, int, dict[str, Any]]]:
        """``(standalone prefix, in, out, layer settings)`` of every layer of ``arch``."""
        arch = self.space._check(arch)
        out = []
        ch = self.stem_channels
        for i, b in enumerate(arch.blocks):
            cout = sp.scale_channels(b.filters, self.width_mult)
            for j in range(b.layers):
                out.append((f"blocks.{i}.{j}", ch, cout,
                            {"block": i, "slot": j, "op": b.op, "kernel": b.kernel,
                             "se": b.se, "skip": b.skip,
                             "stride": sp.SKELETON[i][3] if j == 0 else 1}))
                ch = cout
        return out

    def _layer(self, cin: int, cout: int, s: dict[str, Any]) -> tuple[Any, ...]:
        pos = f"b{s['block'] + 1}l{s['slot']}"
        family = FAMILY[s["op"]]
        body = self.module(f"{pos}|{family}", ("body", s["block"], s["slot"], family))
        stride = s["stride"]
        if s["skip"] == "pool":
            proj = (self.module(f"{pos}|poolproj", ("proj", s["block"], s["slot"]))
                    if cin != cout else None)
            shortcut: Any = ("pool", proj)
        elif s["skip"] == "identity" and stride == 1 and cin == cout:
            shortcut = ("identity", None)
        else:
            shortcut = None
        bns: dict[str, nn.Module] = {}
        if self.private_bn:
            real = {**s, "skip": shortcut[0] if shortcut else "none"}
            tag = "_".join(f"{real[f]}" for f in self.private_bn)
            bns = dict(self.module(f"{pos}|bn|{tag}".replace(".", "p"),
                                   ("bn", s["block"], s["slot"], family, real["skip"])).items())
        plan = [(body[idx], kind, a, b, bns.get(str(idx)))
                for idx, kind, a, b in body_plan(s["op"], cin, cout, s["se"])]
        return plan, shortcut, stride, cin, cout, s["kernel"]

    def _head_in(self, arch: Any) -> int:
        ch = self.stem_channels
        for b in arch.blocks:
            if b.layers:
                ch = sp.scale_channels(b.filters, self.width_mult)
        return ch

    def _compile(self, arch: Any) -> Any:
        steps = [self._layer(cin, cout, s) for _, cin, cout, s in self.layers(arch)]
        return steps, self.module("head", ("head",)), self._head_in(arch)

    def _run(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        steps, head, head_in = path
        x = self.stem(x)
        for plan, shortcut, stride, cin, cout, kernel in steps:  # _LayerBlock.forward
            out = x
            for m, kind, a, b, bn in plan:
                out = (conv_bn_act(m, out, a, b, kernel, bn) if kind == "conv"
                       else squeeze_excite(m, out, a, b))
            if shortcut is not None:
                kind, proj = shortcut
                if kind == "identity":
                    out = out + x
                else:                                      # PoolShortcut.forward
                    p = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
                    out = out + (conv_bn_act(proj, p, cin, cout) if proj is not None else p)
            x = out
        x = conv_bn_act(head.conv, x, head_in, head.conv[0].out_channels)   # ClassifierHead
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return head.fc(F.dropout(x, head.dropout.p, self.training))

    def child_modules(self, arch: Any) -> dict[str, nn.Module]:
        steps, head, _ = self.compiled(arch)
        out: dict[str, nn.Module] = {"stem": self.stem}
        for (prefix, *_), (plan, shortcut, *_) in zip(self.layers(arch), steps, strict=True):
            for k, (m, *_, bn) in enumerate(plan):
                out[f"{prefix}.body.{k}"] = m
                if bn is not None:      # after the body: to_standalone copies it last
                    out[f"{prefix}.body.{k}.1"] = bn
            if shortcut is not None and shortcut[1] is not None:
                out[f"{prefix}.shortcut.proj"] = shortcut[1]
        out["head"] = head
        return out


# -- MACs at deployment size, by layer unit -----------------------------------------------
def _out(size: int, stride: int) -> int:
    return -(-size // stride)   # "same" padding


def unit_macs(u: Any, num_classes: int) -> int:
    """MACs of one :class:`latency.lut.Unit` in closed form, counted the way
    :func:`mnas.counting.count_macs` counts the module (Conv2d and Linear only;
    depthwise ``out · k²``; SE convs on the pooled 1×1 map). The tests check it against
    ``count_macs`` on the real modules."""
    if u.kind == "stem":
        return _out(u.size, u.stride) ** 2 * u.out_ch * u.in_ch * 9
    if u.kind == "head":
        return u.size * u.size * u.in_ch * u.out_ch + u.out_ch * num_classes
    o2 = _out(u.size, u.stride) ** 2
    k2 = u.kernel * u.kernel
    r = se_channels(u.in_ch, u.se) if u.se > 0 else 0
    if u.op == "conv":
        macs = o2 * u.in_ch * u.out_ch * k2 + 2 * r * u.out_ch
    elif u.op == "dsconv":
        macs = o2 * u.in_ch * k2 + 2 * r * u.in_ch + o2 * u.in_ch * u.out_ch
    else:
        mid = u.in_ch * int(u.op.removeprefix("mbconv"))
        macs = (u.size * u.size * u.in_ch * mid + o2 * mid * k2 + 2 * r * mid
                + o2 * mid * u.out_ch)
    if u.skip == "pool" and u.in_ch != u.out_ch:
        macs += o2 * u.in_ch * u.out_ch          # the shortcut's 1x1 projection
    return macs


class MnasnetMacs:
    """``arch -> MACs`` of the deployable child (width 1.0, the space's deployment input
    and classes), as :func:`mnas.counting.count_macs` counts the built model: the sum of
    :func:`unit_macs` over its stem/layer/head units (:class:`latency.lut.MnasnetUnits`)."""

    def __init__(self, space: Any) -> None:
        from latency.lut import MnasnetUnits

        self.units = MnasnetUnits(space.deploy_resolution, space.deploy_classes,
                                  float(space.dropout))
        self._cache: dict[str, int] = {}

    def unit(self, u: Any) -> int:
        macs = self._cache.get(u.key)
        if macs is None:
            macs = self._cache[u.key] = unit_macs(u, self.units.num_classes)
        return macs

    def __call__(self, arch: Any) -> int:
        return sum(self.unit(u) for u in self.units.units(arch))

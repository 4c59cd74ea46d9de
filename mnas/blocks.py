"""Block library: the layers the ``mnasnet`` space (and other spaces) build from.

Conventions follow torchvision's MobileNetV2 so that its named point reproduces the
reference parameter count exactly: every conv is bias-free and followed by BatchNorm;
activations are ReLU6; the last 1x1 projection of a bottleneck is linear (BN, no
activation). Only plain torch modules are used so every model exports to ONNX.

Skip handling (``skip`` argument of every layer block; see :func:`make_shortcut`):

* ``"none"`` — no shortcut.
* ``"identity"`` — ``out = body(x) + x``, only where it is shape-preserving (stride 1 and
  equal channels, MobileNetV2's rule); elsewhere (the first layer of a block that
  downsamples or changes width) the layer has no shortcut.
* ``"pool"`` — ``out = body(x) + proj(avgpool3x3_stride_s(x))`` on every layer: a 3x3
  average pool with the layer's stride (padding 1, padding excluded from the average),
  followed by a 1x1 conv + BN projection only when the channel count changes. At
  stride 1 this is a smoothing shortcut, not the identity, so the three skip choices
  build three different networks.
"""

from __future__ import annotations

import torch
from torch import nn

SKIP_OPS = ("pool", "identity", "none")


class ConvBnAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU6`` ("same" padding); ``act=False`` drops
    the activation (linear projections)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 reduce -> ReLU -> 1x1 expand ->
    sigmoid gate multiplied onto the input (MnasNet's form, biases on the 1x1 convs)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        if reduced < 1:
            raise ValueError(f"SqueezeExcite needs reduced channels >= 1, got {reduced}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * s


def se_channels(in_ch: int, se_ratio: float) -> int:
    """Reduced SE width: relative to the *layer input* channels, as in MnasNet's
    reference code (``max(1, int(input_filters * se_ratio))``)."""
    return max(1, int(in_ch * se_ratio))


class PoolShortcut(nn.Module):
    """3x3 average pool with the layer's stride, plus a 1x1 conv + BN projection when the
    channel count changes. Output size equals that of a kxk/stride conv with same padding."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        self.proj = ConvBnAct(in_ch, out_ch, 1, act=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return self.proj(x) if self.proj is not None else x


def make_shortcut(skip: str, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The shortcut module for one layer, or None when the layer has none (see module doc)."""
    if skip == "none":
        return None
    if skip == "identity":
        return nn.Identity() if stride == 1 and in_ch == out_ch else None
    if skip == "pool":
        return PoolShortcut(in_ch, out_ch, stride)
    raise ValueError(f"unknown skip op {skip!r}; valid: {', '.join(SKIP_OPS)}")


class _LayerBlock(nn.Module):
    """``body(x) (+ shortcut(x))``; subclasses fill ``self.body``."""

    body: nn.Module

    def __init__(self, in_ch: int, out_ch: int, stride: int, skip: str) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.shortcut = make_shortcut(skip, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class RegularConv(_LayerBlock):
    """Regular conv layer: ``kxk conv(stride) -> BN -> ReLU6 (-> SE)``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, skip: str = "none") -> None:
        super().__init__(in_ch, out_ch, stride, skip)
        layers: list[nn.Module] = [ConvBnAct(in_ch, out_ch, kernel, stride)]
        if se_ratio > 0:
            layers.append(SqueezeExcite(out_ch, se_channels(in_ch, se_ratio)))
        self.body = nn.Sequential(*layers)


class DepthwiseSeparable(_LayerBlock):
    """Depthwise-separable conv: ``dw kxk(stride) -> BN -> ReLU6 (-> SE) -> 1x1 -> BN``
    (linear projection). With ``skip="none"`` and kernel 3 this is exactly torchvision's
    MobileNetV2 ``t=1`` inverted residual."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, skip: str = "none") -> None:
        super().__init__(in_ch, out_ch, stride, skip)
        layers: list[nn.Module] = [ConvBnAct(in_ch, in_ch, kernel, stride, groups=in_ch)]
        if se_ratio > 0:
            layers.append(SqueezeExcite(in_ch, se_channels(in_ch, se_ratio)))
        layers.append(ConvBnAct(in_ch, out_ch, 1, act=False))
        self.body = nn.Sequential(*layers)


class MBConv(_LayerBlock):
    """Mobile inverted bottleneck: ``1x1 expand(e) -> BN -> ReLU6 -> dw kxk(stride) -> BN
    -> ReLU6 (-> SE) -> 1x1 project -> BN`` (linear). The expansion conv is omitted when
    ``expand == 1`` (then it is a :class:`DepthwiseSeparable` body)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 expand: int = 6, se_ratio: float = 0.0, skip: str = "none") -> None:
        super().__init__(in_ch, out_ch, stride, skip)
        if expand < 1:
            raise ValueError(f"MBConv expansion must be >= 1, got {expand}")
        mid = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBnAct(in_ch, mid, 1))
        layers.append(ConvBnAct(mid, mid, kernel, stride, groups=mid))
        if se_ratio > 0:
            layers.append(SqueezeExcite(mid, se_channels(in_ch, se_ratio)))
        layers.append(ConvBnAct(mid, out_ch, 1, act=False))
        self.body = nn.Sequential(*layers)


class ClassifierHead(nn.Module):
    """``1x1 conv -> BN -> ReLU6 -> global average pool -> flatten -> dropout -> linear``."""

    def __init__(self, in_ch: int, head_ch: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv = ConvBnAct(in_ch, head_ch, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.conv(x)))))


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation: Kaiming-normal (fan_out) convs, BN to
    identity, classifier N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)

"""The NASNet operation library, shared by the cell spaces (``nasnet``; later ``pnas``).

Each operation maps ``c_in`` channels to ``c_out`` channels at a given stride. The
implementations follow the NASNet reference (tensorflow/models research/slim nasnet):

* separable convs are *stacked twice* (ReLU → depthwise → pointwise → BN, ×2, stride on
  the first), as in slim's ``separable_kxk_2``;
* ``id`` is a real identity only when stride is 1 and channels match, otherwise a
  strided ReLU → 1×1 conv → BN (slim's ``none``);
* pools use "SAME" padding (average pools exclude the padding, like TF) and are followed by
  1×1 conv → BN when the channel count has to change;
* the other convs are ReLU → conv → BN.

Token names are short and readable because they appear in canonical arch strings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the 13 operations of NASNet (paper order)
NASNET_OPS: tuple[str, ...] = (
    "id",            # identity
    "conv1x3_3x1",   # 1x3 then 3x1 convolution
    "conv1x7_7x1",   # 1x7 then 7x1 convolution
    "dil3x3",        # 3x3 dilated convolution (dilation 2)
    "avg3x3",        # 3x3 average pooling
    "max3x3",        # 3x3 max pooling
    "max5x5",        # 5x5 max pooling
    "max7x7",        # 7x7 max pooling
    "conv1x1",       # 1x1 convolution
    "conv3x3",       # 3x3 convolution
    "sep3x3",        # 3x3 depthwise-separable convolution
    "sep5x5",        # 5x5 depthwise-separable convolution
    "sep7x7",        # 7x7 depthwise-separable convolution
)

#: the 8 operations of PNAS (a subset of NASNet's)
PNAS_OPS: tuple[str, ...] = (
    "sep3x3", "sep5x5", "sep7x7", "conv1x7_7x1", "id", "avg3x3", "max3x3", "dil3x3",
)


class ReLUConvBN(nn.Sequential):
    """ReLU → conv → BN (the NASNet conv unit)."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, dilation: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked (ReLU → depthwise k×k → pointwise → BN) units; stride on the first."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel, stride, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, kernel, 1, pad, groups=c_out, bias=False),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class FactorizedConv(nn.Sequential):
    """ReLU → 1×k conv → k×1 conv → BN (the "1xk then kx1" operations)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, (1, kernel), (1, stride), (0, pad), bias=False),
            nn.Conv2d(c_out, c_out, (kernel, 1), (stride, 1), (pad, 0), bias=False),
            nn.BatchNorm2d(c_out),
        )


class Pool(nn.Module):
    """k×k max/avg pool with "SAME" padding; 1×1 conv → BN after it if channels change."""

    def __init__(self, kind: str, kernel: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        if kind == "avg":
            self.pool: nn.Module = nn.AvgPool2d(kernel, stride, pad, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(kernel, stride, pad)
        self.proj: nn.Module = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                              nn.BatchNorm2d(c_out))
                                if c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing information to striding (slim's
    ``factorized_reduction``): two 1×1 convs on the even and the one-pixel-shifted
    sub-grids, concatenated, then BN. ``relu`` applies ReLU first (cell inputs)."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        super().__init__()
        if c_out < 2:
            raise ValueError(f"factorized reduction needs at least 2 output channels, got {c_out}")
        self.relu = relu
        self.path1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.path2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = F.relu(x)
        p1 = self.path1(x[:, :, ::2, ::2])
        # pad right/bottom by one and drop the first row/column: the odd sub-grid, same size
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        p2 = self.path2(shifted[:, :, ::2, ::2])
        return self.bn(torch.cat([p1, p2], dim=1))


class DropPath(nn.Module):
    """Drop a whole path per example with probability ``p`` (training only), scaling the
    kept ones by ``1/(1-p)``. ``p`` is set from outside (ScheduledDropPath)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
        return x / keep * mask

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def build_op(name: str, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    """The module for operation ``name`` mapping ``c_in`` → ``c_out`` channels."""
    if stride not in (1, 2):
        raise ValueError(f"operation stride must be 1 or 2, got {stride}")
    if name == "id":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return ReLUConvBN(c_in, c_out, 1, stride)
    if name in ("conv1x3_3x1", "conv1x7_7x1"):
        return FactorizedConv(c_in, c_out, int(name[6]), stride)
    if name == "dil3x3":
        return ReLUConvBN(c_in, c_out, 3, stride, padding=2, dilation=2)
    if name in ("avg3x3", "max3x3", "max5x5", "max7x7"):
        return Pool(name[:3], int(name[3]), c_in, c_out, stride)
    if name in ("conv1x1", "conv3x3"):
        k = int(name[4])
        return ReLUConvBN(c_in, c_out, k, stride, padding=k // 2)
    if name in ("sep3x3", "sep5x5", "sep7x7"):
        return SepConv(c_in, c_out, int(name[3]), stride)
    raise ValueError(f"unknown operation {name!r}; valid: {', '.join(NASNET_OPS)}")

"""Parameter and multiply-accumulate (MAC) counting.

What is counted, and why (the convention of MobileNetV2 / MnasNet's "300M MACs"):

* ``count_params``: every element of every ``nn.Parameter`` (trainable or frozen),
  each shared parameter once; buffers (BN running stats) are not parameters.
* ``count_macs``: one forward pass at ``input_shape`` with hooks on
  - ``nn.Conv2d`` (any groups, stride, dilation): ``output elements x (in_channels /
    groups) x kernel_h x kernel_w`` — one MAC per weight use; depthwise convs
    (groups = channels) cost ``output elements x k x k``;
  - ``nn.Linear``: ``output elements x in_features``.
  Biases, BatchNorm, activations, pooling, SE gating multiplies and residual additions
  are **not** counted; they are a few percent of a mobile CNN's arithmetic and are not
  counted in the published numbers either. The count is for the whole batch of
  ``input_shape`` (use batch 1 for per-image MACs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_params needs an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass of a zero tensor of ``input_shape``
    (Conv2d incl. grouped/depthwise and Linear; see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_macs needs an nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, got {tuple(input_shape)}")
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()  # BN must not update running stats from a dummy input
        with torch.no_grad():
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def arch_stats(space: Any, arch: Any, num_classes: int | None = None,
               resolution: int | None = None, width_mult: float = 1.0,
               in_channels: int = 3) -> dict[str, int]:
    """``{"params", "macs"}`` of ``arch`` built by ``space`` at deployment size (defaults:
    the space's ``deploy_classes`` and ``deploy_resolution``), batch 1."""
    num_classes = space.deploy_classes if num_classes is None else num_classes
    resolution = space.deploy_resolution if resolution is None else resolution
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    model = space.build(arch, num_classes=num_classes, width_mult=width_mult,
                        in_channels=in_channels)
    return {"params": count_params(model),
            "macs": count_macs(model, (1, in_channels, resolution, resolution))}

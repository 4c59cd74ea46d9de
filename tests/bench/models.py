"""Tiny real ONNX models for the bench tests: a narrow and a much wider conv net (the
"heavier model under the same suite name" that a real slowdown is made of)."""

from __future__ import annotations

from pathlib import Path

SHAPE = (1, 3, 32, 32)


def conv_net(width: int):
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def export_conv_net(width: int, path: Path) -> Path:
    import torch

    from latency.export import export_onnx

    torch.manual_seed(0)
    return export_onnx(conv_net(width), path, input_shape=SHAPE)

"""A tiny real model and a tiny real search space for latency tests (fast to export/run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mnas.decisions import Categorical
from mnas.spaces.base import SearchSpace

SHAPE = (1, 3, 16, 16)


def tiny_model(width: int = 8, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


@dataclass(frozen=True)
class TinyArch:
    width: int

    def encode(self) -> str:
        return f"w{self.width}"


class TinyLatencySpace(SearchSpace):
    """One decision (width); ``w0`` builds a module the exporter cannot handle. Not
    registered, so no test that iterates over the registry ever sees it."""

    name = "tiny_latency_test"
    deploy_resolution = 16
    deploy_classes = 10
    WIDTHS = (4, 8, 0)

    def __init__(self) -> None:
        self.built: list[tuple[TinyArch, int | None, float]] = []

    def decisions(self, children_seen: int = 0) -> tuple[Categorical, ...]:
        return (Categorical("width", self.WIDTHS),)

    def from_choices(self, choices: Any) -> TinyArch:
        return TinyArch(self.WIDTHS[choices[0]])

    def to_choices(self, arch: TinyArch) -> tuple[int, ...]:
        return (self.WIDTHS.index(arch.width),)

    def decode(self, text: str) -> TinyArch:
        if not (text.startswith("w") and text[1:].isdigit()
                and int(text[1:]) in self.WIDTHS):
            raise ValueError(f"bad tiny arch {text!r}; valid: w4, w8, w0")
        return TinyArch(int(text[1:]))

    def named(self) -> dict[str, TinyArch]:
        return {"small": TinyArch(4)}

    def build(self, arch: TinyArch, num_classes: int | None = None, width_mult: float = 1.0,
              in_channels: int = 3) -> nn.Module:
        self.built.append((arch, num_classes, width_mult))
        if arch.width == 0:
            return _Untraceable()
        return tiny_model(max(1, int(arch.width * width_mult)), num_classes or 10, in_channels)


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> Any:
        raise NotImplementedError("this child cannot run")


def endless_onnx(path: Any) -> None:
    """Write a 300-byte ONNX model that runs for ever: a ``Loop`` of 10¹² additions (what
    an untrusted upload can send)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    body = h.make_graph(
        [h.make_node("Identity", ["c_in"], ["c_out"]), h.make_node("Add", ["v", "one"], ["w"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []),
                 h.make_tensor_value_info("c_in", T.BOOL, []),
                 h.make_tensor_value_info("v", T.FLOAT, [1])],
        [h.make_tensor_value_info("c_out", T.BOOL, []),
         h.make_tensor_value_info("w", T.FLOAT, [1])],
        [h.make_tensor("one", T.FLOAT, [1], [1.0])])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "endless",
        [h.make_tensor_value_info("x", T.FLOAT, [1])],
        [h.make_tensor_value_info("y", T.FLOAT, [1])],
        [h.make_tensor("M", T.INT64, [], [10**12]), h.make_tensor("cond", T.BOOL, [], [True])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

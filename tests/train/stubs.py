"""A minimal search space of tiny CNNs for proxy-training tests (no real space needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mnas.decisions import Categorical
from mnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class TinyArch:
    width: int          # channels of the first conv
    kind: str = "ok"    # "ok" | "nan" (logits are NaN) | "progress" (records progress)
    #                     | "interrupt" (Ctrl-C arrives in the first forward)

    def encode(self) -> str:
        return f"w{self.width}_{self.kind}"


class TinyCNN(nn.Module):
    def __init__(self, in_channels: int, width: int, num_classes: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.progress: list[float] = []
        self.devices: set[str] = set()     # where forward ran (cpu, cuda)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Linear(32 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        self.devices.add(x.device.type)
        y = self.fc(self.features(x))
        return y * float("nan") if self.kind == "nan" else y


class ProgressCNN(TinyCNN):
    def set_training_progress(self, p: float) -> None:
        self.progress.append(p)


class TinySpace(SearchSpace):
    """One decision (first-conv width); ``build`` records the models it made."""

    name = "tiny"
    WIDTHS = (4, 8)

    def __init__(self) -> None:
        self.built: list[TinyCNN] = []
        self.calls: list[dict] = []

    def decisions(self, children_seen: int = 0) -> tuple[Categorical, ...]:
        return (Categorical("width", self.WIDTHS),)

    def from_choices(self, choices: Sequence[int]) -> TinyArch:
        return TinyArch(self.WIDTHS[choices[0]])

    def to_choices(self, arch: TinyArch) -> tuple[int, ...]:
        return (self.WIDTHS.index(arch.width),)

    def decode(self, text: str) -> TinyArch:
        w, kind = text.split("_")
        return TinyArch(int(w[1:]), kind)

    def build(self, arch: TinyArch, num_classes: int | None = None, width_mult: float = 1.0,
              in_channels: int = 3) -> TinyCNN:
        self.calls.append({"num_classes": num_classes, "width_mult": width_mult,
                           "in_channels": in_channels})
        cls = ProgressCNN if arch.kind == "progress" else TinyCNN
        model = cls(in_channels, max(2, round(arch.width * width_mult)), num_classes or 10,
                    arch.kind)
        self.built.append(model)
        return model

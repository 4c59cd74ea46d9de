"""Regenerate the small ONNX model(s) the example latency suite measures.

    .venv/bin/python benchmarks/models/make_models.py

Weights come from a fixed seed and the TorchScript exporter writes the same bytes every
time, so the committed file's sha256 (kept in the baseline) stays valid.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def tiny_cnn():
    """A 3-conv classifier at 64x64 (~100 kB): a stand-in for an app's small model."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def main() -> None:
    import torch

    from latency.export import export_onnx, file_sha256

    torch.manual_seed(0)
    out = export_onnx(tiny_cnn(), HERE / "tiny_cnn.onnx", input_shape=(1, 3, 64, 64))
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {file_sha256(out)[:16]}...)")


if __name__ == "__main__":
    main()

"""The torch devices tests run on here: the CPU, and CUDA where a GPU is visible (so the
``cuda`` parameters run on a machine with one and are absent, not skipped, elsewhere)."""

from __future__ import annotations

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

"""Where training runs: a torch device that exists here, and its Lightning form.

One check for every trainer that takes a device (the proxy evaluator, ``mnas train``,
the ENAS supernet), so a bad or absent device is the same clear line everywhere.
"""

from __future__ import annotations

from typing import Any

import torch


def check_device(value: Any, name: str = "torch_device") -> torch.device:
    """``value`` as a torch device that exists here; ValueError naming the choices."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ", ".join(["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(n)] if n else []))
    try:
        dev = torch.device(str(value))
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a torch device; valid here: {valid}") from None
    if dev.type == "cpu" or (dev.type == "cuda" and n and (dev.index or 0) < n):
        return dev
    raise ValueError(f"{name} {value!r} is not available on this machine; valid here: {valid}")


def trainer_device(dev: torch.device) -> dict[str, Any]:
    """``L.Trainer`` keyword arguments that train on ``dev``.

    On CUDA ``deterministic`` is ``"warn"``: some kernels the children use
    (adaptive average pooling's backward) have no deterministic CUDA form and would
    otherwise stop the training. So a child's accuracy on a GPU is reproducible only up
    to those kernels' float summation order; on the CPU it is exact.
    """
    if dev.type == "cuda":
        return {"accelerator": "cuda", "devices": [dev.index or 0], "deterministic": "warn"}
    return {"accelerator": "cpu", "devices": 1, "deterministic": True}

"""mnas — hardware-aware neural architecture search for mobile."""

from __future__ import annotations

__version__ = "0.1.0"

"""Built-in strategies; importing this package registers them (one line per module)."""

from __future__ import annotations

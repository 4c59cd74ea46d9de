"""Built-in evaluators; importing this package registers them with mnas.evaluate.

Keep one import line per evaluator module.
"""

from __future__ import annotations

from mnas.evaluators import (
    lut,  # noqa: F401
    measured,  # noqa: F401
    proxy,  # noqa: F401
    table,  # noqa: F401
)

"""Built-in evaluators; importing this package registers them with mnas.evaluate.

Keep one import line per evaluator module.
"""

from __future__ import annotations

from mnas.evaluators import measured  # noqa: F401
from mnas.evaluators import lut  # noqa: F401
from mnas.evaluators import table  # noqa: F401
from mnas.evaluators import proxy  # noqa: F401

"""Built-in strategies; importing this package registers them (one line per module)."""

from __future__ import annotations

from search.strategies import evolution as _evolution  # noqa: F401
from search.strategies import optuna_sampler as _optuna_sampler  # noqa: F401

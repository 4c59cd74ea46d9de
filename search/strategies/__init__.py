"""Built-in strategies; importing this package registers them (one line per module)."""

from __future__ import annotations

from search.strategies import enas as _enas  # noqa: F401
from search.strategies import evolution as _evolution  # noqa: F401
from search.strategies import optuna_sampler as _optuna_sampler  # noqa: F401
from search.strategies import pnas as _pnas  # noqa: F401
from search.strategies import ppo as _ppo  # noqa: F401
from search.strategies import random as _random  # noqa: F401
from search.strategies import reinforce as _reinforce  # noqa: F401

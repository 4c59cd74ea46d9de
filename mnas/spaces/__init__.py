"""Built-in search spaces; importing this package registers them."""

from __future__ import annotations

from mnas.spaces.base import (
    SPACES,
    Encodable,
    Mutable,
    SearchSpace,
    get_space,
    register_space,
    space_names,
)

# Each import registers one space (keep one line per space).
from mnas.spaces import mnasnet  # noqa: E402,F401
from mnas.spaces import nb201  # noqa: E402,F401
from mnas.spaces import nasrl  # noqa: E402,F401
from mnas.spaces import nasnet  # noqa: E402,F401
from mnas.spaces import pnas  # noqa: E402,F401

__all__ = ["SPACES", "Encodable", "Mutable", "SearchSpace", "get_space", "register_space",
           "space_names"]

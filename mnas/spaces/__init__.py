"""Built-in search spaces; importing this package registers them."""

from __future__ import annotations

# Each import registers one space (keep one line per space).
from mnas.spaces import (
    mnasnet,  # noqa: E402,F401
    nasnet,  # noqa: E402,F401
    nasrl,  # noqa: E402,F401
    nb201,  # noqa: E402,F401
    pnas,  # noqa: E402,F401
)
from mnas.spaces.base import (
    SPACES,
    Encodable,
    Mutable,
    Progressive,
    SearchSpace,
    get_space,
    register_space,
    space_names,
)

__all__ = ["SPACES", "Encodable", "Mutable", "Progressive", "SearchSpace", "get_space", "register_space",
           "space_names"]

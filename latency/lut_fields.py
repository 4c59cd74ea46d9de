"""Field checks of a lookup-table file (:class:`latency.lut.LatencyTable`): a damaged or
hand-edited table is one line naming the field, not a KeyError when it first predicts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


KINDS = {"a number": finite, "a positive number": lambda v: finite(v) and v > 0,
         "a string": lambda v: isinstance(v, str)}


def need(d: Mapping[str, Any], key: str, what: str, kind: str) -> None:
    """ValueError naming ``what``'s missing or malformed field ``key``."""
    if key not in d:
        raise ValueError(f"{what} lacks {key!r}")
    if not KINDS[kind](d[key]):
        raise ValueError(f"{what} {key!r} must be {kind}, got {d[key]!r}")


def check_anchor(anchor: dict[str, Any] | None) -> None:
    """ValueError naming what an anchor (see latency.lut_measure) lacks."""
    for what, d, name in (("anchor", anchor, "unit"),
                          ("anchor network", (anchor or {}).get("network"), "arch")):
        if d is None:
            continue
        if not isinstance(d, dict):
            raise ValueError(f"{what} must be an object, got {d!r}")
        need(d, name, what, "a string")
        need(d, "ms", what, "a positive number")

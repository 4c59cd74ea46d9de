"""Field checks of a lookup-table file (:class:`latency.lut.LatencyTable`): a damaged or
hand-edited table is one line naming the field, not a KeyError when it first predicts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from latency.measurement import MeasureSettings


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


#: what a MeasureSettings field of each default's type holds
_SETTING_KINDS = {int: "an integer", float: "a number", str: "a string"}


def check_settings(settings: Any, clock: str) -> dict[str, Any]:
    """A table's measure settings as a dict (``clock`` filled in: tables written before
    MeasureSettings had one kept it beside them) once they make a MeasureSettings, else
    ValueError naming the field. Checked at load, so the error names the table's file
    (``lut eval`` used to fail as it measured, naming none)."""
    if not isinstance(settings, Mapping):
        raise ValueError(f"settings must be an object, got {type(settings).__name__}")
    out = {"clock": clock or "wall", **settings}
    defaults = {f.name: f.default for f in dataclasses.fields(MeasureSettings)}
    for key, value in out.items():
        if key not in defaults:
            raise ValueError(f"settings has an unknown field {key!r}; valid: "
                             f"{', '.join(defaults)}")
        kind = type(defaults[key])
        if kind is str:
            ok = isinstance(value, str)
        else:   # an int is a float setting's value too
            ok = finite(value) and (kind is float or isinstance(value, int))
        if not ok:
            raise ValueError(f"settings {key!r} must be {_SETTING_KINDS[kind]}, got {value!r}")
    try:
        MeasureSettings(**out)
    except ValueError as e:
        raise ValueError(f"settings: {e}") from None
    return out

"""Shared CLI helpers: ``KEY=VALUE`` options typed from a constructor's defaults."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from typing import Any


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``; ``child`` → ``children``, ``class`` → ``classes``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'ren' if noun == 'child' else 'es' if noun.endswith('s') else 's'}"


def doc_help(doc: str | None, skip_first: bool = False) -> str | None:
    """A module docstring as ``--help`` text: reST markup (double backticks, ``:mod:``
    roles) read on a terminal as noise, so it goes; ``skip_first`` drops the summary
    paragraph (the parser's own ``help`` says it)."""
    if not doc:
        return None
    if skip_first:
        doc = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
    doc = re.sub(r":[a-z]+:`([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def parse_kv(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict; a key given twice is refused (the last would
    silently win)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} option {item!r} is not KEY=VALUE")
        key = key.strip().replace("-", "_")
        if key in out:
            raise ValueError(f"{what} option {key!r} is given twice ({out[key]!r} and "
                             f"{value.strip()!r}); give it once")
        out[key] = value.strip()
    return out


def _json_object(value: str, key: str) -> dict[str, Any]:
    """A dict-typed option's value: a JSON object, the one format a shell passes whole."""
    example = f"""--opt '{key}={{"name": value}}'"""
    try:
        obj = json.loads(value)
    except ValueError as e:
        raise ValueError(f"option {key}={value!r} is not JSON ({e.msg}); give a JSON object, "
                         f"e.g. {example}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"option {key}={value!r}: expected a JSON object, e.g. {example}")
    return obj


def _convert(value: str, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {key}={value!r}: expected true or false")
    if default is None:  # untyped: try int, float, then keep the string
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
        return None if value.lower() == "none" else value
    try:
        return type(default)(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"option {key}={value!r}: expected {type(default).__name__}") from e


def typed_options(factory: Callable[..., Any], raw: dict[str, str], what: str,
                  skip: Sequence[str] = ("self", "space", "seed")) -> dict[str, Any]:
    """Convert ``raw`` strings to the types of ``factory``'s keyword defaults.

    Unknown keys → ValueError listing the valid ones.
    """
    sig = inspect.signature(factory)
    params = {n: p for n, p in sig.parameters.items()
              if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out = {}
    for key, value in raw.items():
        if key not in params:
            valid = ", ".join(sorted(params)) or "(none)"
            raise ValueError(f"unknown {what} option {key!r}; valid: {valid}")
        default = params[key].default
        if str(params[key].annotation).startswith("dict"):
            out[key] = _json_object(value, key)
            continue
        out[key] = _convert(value, None if default is inspect.Parameter.empty else default, key)
    return out

"""Every command's --help reads as plain text: its docstring-made descriptions carry no
reST markup (``double backticks``, :mod: roles), which a terminal shows as noise."""

from __future__ import annotations

import argparse

import pytest

from mnas.cli import build_parser


def _parsers() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        out[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}")

    walk(build_parser(), "mnas")
    return out


PARSERS = _parsers()


def test_every_command_group_is_walked():
    assert {"mnas search", "mnas farm serve", "mnas bench compare", "mnas arch info",
            "mnas lut build", "mnas devices"} <= set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_text(name):
    text = PARSERS[name].format_help()
    assert "``" not in text and ":mod:" not in text and ":class:" not in text, text
    assert "%%" not in text, text       # a percent escaped where argparse does not format

"""Canonical strings of every registered space: what a decoder refuses and how an error
quotes the string."""

from __future__ import annotations

import pytest

from mnas.spaces import get_space, space_names
from mnas.spaces.base import ECHO_CHARS, is_number, shown

#: other scripts' digits: ``int``, ``str.isdigit`` and ``\d`` take them as 0..9
FOREIGN_DIGITS = {"arabic-indic": "٠١٢٣٤٥٦٧٨٩", "fullwidth": "０１２３４５６７８９"}


def _named(name: str) -> str:
    space = get_space(name)
    return next(iter(space.named().values())).encode()


@pytest.mark.parametrize("script", sorted(FOREIGN_DIGITS))
@pytest.mark.parametrize("name", space_names())
def test_digits_of_other_scripts_are_refused(name: str, script: str) -> None:
    space = get_space(name)
    text = _named(name)
    digits = [i for i, c in enumerate(text) if c.isascii() and c.isdigit()]
    assert digits, text
    for i in digits:   # every number of the string, one digit swapped at a time
        bad = text[:i] + FOREIGN_DIGITS[script][int(text[i])] + text[i + 1:]
        with pytest.raises(ValueError):
            space.decode(bad)
            pytest.fail(f"{name} decoded {bad!r}")
    assert space.decode(text).encode() == text


@pytest.mark.parametrize("name", space_names())
def test_numbers_too_long_for_int_are_one_clear_error(name: str) -> None:
    text = _named(name)
    i = next(i for i, c in enumerate(text) if c.isdigit() and not text[i - 1].isalpha())
    bad = text[:i] + "9" * 5000 + text[i + 1:]
    with pytest.raises(ValueError) as e:
        get_space(name).decode(bad)
    assert "4300" not in str(e.value) and len(str(e.value)) < 400, str(e.value)


@pytest.mark.parametrize("name", space_names())
@pytest.mark.parametrize("where", ["whole", "inside"])
def test_a_huge_string_is_quoted_cut_with_its_length(name: str, where: str) -> None:
    text = _named(name)
    if where == "whole":
        bad = "x" * 120_000
    else:   # a well-formed frame, one token blown up
        i = len(text) // 2
        bad = text[:i] + "q" * 120_000 + text[i:]
    with pytest.raises(ValueError) as e:
        get_space(name).decode(bad)
    msg = str(e.value)
    assert len(msg) < 600 and "characters)" in msg and "…" in msg, msg[:600]


def test_shown() -> None:
    assert shown("ab") == "'ab'"
    assert shown("a" * ECHO_CHARS) == repr("a" * ECHO_CHARS)
    long = "a" * ECHO_CHARS + "b" * 200
    assert shown(long) == f"{'a' * ECHO_CHARS!r}… (280 characters)"
    assert shown(5) == "5"


@pytest.mark.parametrize(("text", "ok"), [
    ("0", True), ("123456789", True), ("1234567890", False), ("", False), ("٣", False),
    ("３", False), ("²", False), ("-1", False), ("1 ", False)])
def test_is_number(text: str, ok: bool) -> None:
    assert is_number(text) is ok

"""Fixtures shared by the latency tests."""

from __future__ import annotations

import pytest

import latency.lut_measure
from devices.base import get_device


@pytest.fixture(scope="module")
def fingerprint() -> dict:
    """This host's onnxruntime fingerprint (what a table built here records)."""
    return get_device("local:onnxruntime").fingerprint()


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring fails the test: bad input must be refused before any measurement."""
    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("measured before the inputs were checked")

    monkeypatch.setattr(latency.lut_measure, "evaluate_table", tripwire)
    monkeypatch.setattr(latency.lut_measure, "build_table", tripwire)

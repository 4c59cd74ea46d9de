"""Fixtures shared by the latency tests."""

from __future__ import annotations

import pytest

from devices.base import get_device


@pytest.fixture(scope="module")
def fingerprint() -> dict:
    """This host's onnxruntime fingerprint (what a table built here records)."""
    return get_device("local:onnxruntime").fingerprint()

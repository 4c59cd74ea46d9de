"""Fixtures of the device farm's tests (``test_farm*.py``)."""

from __future__ import annotations

import pytest

from tests.farm_server import TOKEN


@pytest.fixture
def farm_env(tmp_path, monkeypatch):
    """The client's token in the environment; no user device config read."""
    monkeypatch.setenv("MNAS_FARM_TOKEN", TOKEN)
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path / "none.toml"))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A tiny real ONNX model."""
    import torch

    from latency.export import export_onnx
    from tests.latency.tiny import SHAPE, tiny_model

    torch.manual_seed(0)
    return export_onnx(tiny_model().eval(), tmp_path_factory.mktemp("m") / "tiny.onnx", SHAPE)

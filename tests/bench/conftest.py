from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.models import export_conv_net


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``narrow`` (8 channels) and ``wide`` (32 channels, ~12x the MACs; short enough that few samples are hit by time slicing on a loaded host) ONNX files."""
    d = tmp_path_factory.mktemp("bench-models")
    return {"narrow": export_conv_net(8, d / "narrow.onnx"),
            "wide": export_conv_net(32, d / "wide.onnx")}

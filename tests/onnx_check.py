"""Shared check: a built child exported by the product's own exporter runs in ONNX Runtime
with the same outputs as in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latency.export import export_onnx


def assert_onnx_matches(model: torch.nn.Module, path: Path, resolution: int = 32,
                        rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Export ``model`` (eval mode) to ``path`` with :func:`export_onnx`, run it in ONNX
    Runtime on one random image and compare with torch."""
    import onnxruntime as ort

    model.eval()
    x = torch.randn(1, 3, resolution, resolution)
    with torch.no_grad():
        want = model(x).numpy()
    export_onnx(model, path, input_shape=tuple(x.shape))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

"""Export a real small model to ONNX and run it with ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from latency.export import EXPORTERS, check_onnx, export_onnx, file_sha256, get_exporter
from latency.runtimes import RUNTIMES, Runtime, get_runtime, onnxruntime_session_options
from tests.latency.tiny import SHAPE, tiny_model


def test_export_is_static_eval_mode_and_deterministic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    model.train()
    a = export_onnx(model, tmp_path / "a.onnx", input_shape=SHAPE)
    b = export_onnx(model, tmp_path / "sub" / "b.onnx", input_shape=SHAPE)
    assert model.training  # the caller's mode is restored
    assert file_sha256(a) == file_sha256(b)  # same weights -> same bytes -> same cache key
    m = onnx.load(str(a))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(SHAPE)  # static, no symbolic batch
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node)  # eval: folded
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.onnx", "b.onnx", "sub"]


def test_exported_model_matches_torch_output(tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(1)
    model = tiny_model().eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE, opset=13)
    assert onnx.load(str(path)).opset_import[0].version == 13
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    sess = ort.InferenceSession(str(path), onnxruntime_session_options(1),
                                providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_different_weights_give_different_hash(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = export_onnx(tiny_model(), tmp_path / "a.onnx", input_shape=SHAPE)
    torch.manual_seed(1)
    b = export_onnx(tiny_model(), tmp_path / "b.onnx", input_shape=SHAPE)
    assert file_sha256(a) != file_sha256(b)


def test_export_failure_is_runtime_error_and_leaves_nothing(tmp_path: Path) -> None:
    model = tiny_model(in_channels=1)
    model.train()
    # 1 input channel expected, 3 given: the forward itself fails, before any exporter
    with pytest.raises(RuntimeError, match=r"ONNX export failed: the model's forward raised"):
        export_onnx(model, tmp_path / "bad.onnx", input_shape=SHAPE)
    assert list(tmp_path.iterdir()) == []
    assert model.training


_UNEXPORTABLE = """
import torch
from latency.export import export_onnx

class Eig(torch.nn.Module):   # runs in torch; no exporter has linalg_eigvals
    def forward(self, x):
        return torch.linalg.eigvals(x[0, 0]).real

try:
    export_onnx(Eig(), {path!r}, input_shape=(1, 3, 4, 4))
except RuntimeError as e:
    print(f"CAUGHT {{e}}")
    print("NOTE" if any("Torch IR graph" in n for n in getattr(e, "__notes__", [])) else "")
"""


def test_a_failed_export_prints_nothing_of_the_exporters(tmp_path: Path) -> None:
    """A caught failure is the caller's one line: the exporters' graph dump (C++, on
    stdout) and log lines (stderr) are kept in the error's note, not printed. A child
    process: only the real file descriptors show what the C++ side writes."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c",
                           _UNEXPORTABLE.format(path=str(tmp_path / "m.onnx"))],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("CAUGHT ONNX export failed (torchscript: "
                                                    "Exporting the operator "), proc.stdout
    assert lines[1] == "NOTE"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 3, 0, 16)])
def test_bad_shape(tmp_path: Path, shape: tuple) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=shape)


def test_check_onnx_rejects_non_models(tmp_path: Path) -> None:
    text = tmp_path / "x.onnx"
    text.write_text("definitely not a protobuf\n")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        check_onnx(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        check_onnx(empty)
    with pytest.raises(ValueError, match="is not an ONNX model"):
        check_onnx(tmp_path)  # a directory
    with pytest.raises(FileNotFoundError):
        check_onnx(tmp_path / "missing.onnx")
    (tmp_path / "loop.onnx").symlink_to("loop.onnx")
    with pytest.raises(ValueError, match="loop.onnx cannot be resolved: a symbolic link loop"):
        check_onnx(tmp_path / "loop.onnx")
    with pytest.raises(ValueError, match="^model file path is empty$"):
        check_onnx("")
    good = export_onnx(tiny_model(), tmp_path / "good.onnx", input_shape=SHAPE)
    assert check_onnx(good, full=True) == good


def test_exporter_registry() -> None:
    assert get_exporter("onnx") is export_onnx is EXPORTERS["onnx"]
    with pytest.raises(ValueError, match="valid: .*onnx"):
        get_exporter("coreml")


def test_runtime_registry() -> None:
    rt = get_runtime("onnxruntime")
    assert isinstance(rt, Runtime) and rt.available() and rt.version()
    assert "onnxruntime" in RUNTIMES
    with pytest.raises(ValueError, match="valid: .*onnxruntime"):
        get_runtime("tensorrt")


def test_onnxruntime_load_runs_one_inference(tmp_path: Path) -> None:
    path = export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=SHAPE)
    run = get_runtime("onnxruntime").load(path, threads=1)
    assert run() is None
    run()  # callable again: the session stays alive in the closure


def test_session_options_are_the_documented_ones() -> None:
    import onnxruntime as ort

    so = onnxruntime_session_options(3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="threads"):
        onnxruntime_session_options(0)


def test_onnxruntime_load_failure_is_runtime_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_text("not a model")
    with pytest.raises(RuntimeError, match="onnxruntime could not load"):
        get_runtime("onnxruntime").load(bad, threads=1)

"""Model export for latency measurement: PyTorch module -> static-shape ONNX file.

A child is exported on every trial, so export speed matters. Measured on this host
(torch 2.13, MobileNetV2 at 1x3x224x224, one torch thread): the TorchScript exporter
(``dynamo=False``) takes ~0.3-0.6 s (about 0.5 s of CPU for build + export), the dynamo
exporter ~4-7 s (and writes weights to a side ``.data`` file unless told not to); ONNX
Runtime runs both graphs equally fast (7.7 vs 7.5 ms). So the TorchScript path is used
and the dynamo exporter is only a fallback for modules it cannot handle. The model's
forward is tried once first, so a child that cannot run fails in milliseconds instead of
after the dynamo exporter's seconds of set-up. With fixed weights the TorchScript output
is byte-identical across runs and processes, which is what lets the model sha256 key the
measurement cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: opset used when none is given; old enough for mobile ONNX Runtime builds
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be 4 positive ints (N, C, H, W), got {input_shape!r}")
    return shape


def _export_torchscript(model: Any, x: Any, path: str, opset: int) -> None:
    import torch

    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      do_constant_folding=True, export_params=True)


def _export_dynamo(model: Any, x: Any, path: str, opset: int) -> None:
    import torch

    # external_data=False keeps one self-contained file (one hash, one upload)
    torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      external_data=False, optimize=True)


def export_onnx(model: Any, path: str | os.PathLike[str],
                input_shape: Sequence[int] = (1, 3, 224, 224),
                opset: int | None = None) -> Path:
    """Export ``model`` in eval mode with a static ``input_shape`` to ``path``.

    The file is written atomically (temporary file + rename), so concurrent workers never
    see half a model. Raises RuntimeError when neither exporter can handle the module.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    shape = _check_shape(input_shape)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(shape, dtype=torch.float32)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    errors: list[str] = []
    try:
        # A forward that fails on its own would fail every exporter (the dynamo one after
        # seconds of set-up): try it once first, for a fast and exact reason.
        try:
            with torch.no_grad():
                model(x)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"ONNX export failed: the model's forward raised at input "
                               f"{list(shape)} ({_first_line(e)})") from e
        said: list[str] = []
        for exporter in (_export_torchscript, _export_dynamo):
            try:
                # the exporters chat on stdout/stderr/warnings (a failing one dumps its graph
                # and logs): a trial log, or a caught failure's one line, should not fill
                with torch.no_grad(), warnings.catch_warnings(), _quiet(said):
                    warnings.simplefilter("ignore")
                    exporter(model, x, tmp, opset)
                os.replace(tmp, out)
                return out
            except Exception as e:  # noqa: BLE001 - try the next exporter, report all
                errors.append(f"{exporter.__name__.removeprefix('_export_')}: "
                              f"{_first_line(e)}")
        failed = RuntimeError(f"ONNX export failed ({'; '.join(errors)})")
        if "".join(said).strip():   # kept for a traceback (a debugger), not the one line
            failed.add_note("the exporters printed:\n" + "".join(said).rstrip())
        raise failed
    finally:
        model.train(was_training)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with contextlib.suppress(FileNotFoundError):  # dynamo side file, if any
            os.unlink(tmp + ".data")


#: one capture of the process's output at a time (two would restore each other's fds)
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet(said: list[str]) -> Iterator[None]:
    """Everything written to stdout and stderr meanwhile goes to ``said``: Python's streams
    and the file descriptors under them, where torch's C++ graph dump and its logging
    handlers (which hold the original streams) write."""
    with _QUIET_LOCK, tempfile.TemporaryFile() as sink, \
            contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        _flush()
        saved: list[tuple[int, int]] = []
        try:
            for fd in (1, 2):
                with contextlib.suppress(OSError):   # a closed fd (a daemon) stays closed
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
            yield
        finally:
            _flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            said += [out.getvalue(), err.getvalue(),
                     sink.read().decode("utf-8", "replace")]


def _flush() -> None:
    """Push what is buffered to the file descriptors: Python's streams and C's stdio (which
    C++ iostreams write through; a pipe's or file's buffer is flushed only when full)."""
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


#: exporters by the ``model_format`` a device runs; other formats (tflite) add themselves
EXPORTERS: dict[str, Callable[..., Path]] = {"onnx": export_onnx}


def get_exporter(model_format: str) -> Callable[..., Path]:
    """The export function for a device's model format; ValueError naming the valid ones."""
    if model_format not in EXPORTERS:
        raise ValueError(f"no exporter for model format {model_format!r}; "
                         f"valid: {', '.join(sorted(EXPORTERS))}")
    return EXPORTERS[model_format]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (streamed; models can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_onnx(path: str | os.PathLike[str], full: bool = False) -> Path:
    """Verify that ``path`` holds an ONNX model, treating it as untrusted input.

    Only parses the protobuf with ``onnx`` (nothing is executed, external data is not
    followed). ``full=True`` also runs ``onnx.checker`` (slower: ~0.4 s for MobileNetV2).
    FileNotFoundError if missing, ValueError("... is not an ONNX model ...") otherwise.
    """
    import onnx

    from latency.paths import check_input_path

    p = check_input_path(path, "model file")
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "model file not found", str(p))
    if not p.is_file():
        raise ValueError(f"{p} is not an ONNX model (not a regular file)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a model"
        raise ValueError(f"{p} is not an ONNX model ({_first_line(e)})") from None
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node:
        raise ValueError(f"{p} is not an ONNX model (no IR version, opset or graph nodes)")
    if not model.graph.input:
        raise ValueError(f"{p} is not an ONNX model this tool can run (the graph has no inputs)")
    if full:
        try:
            onnx.checker.check_model(str(p))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{p} is not a valid ONNX model ({_first_line(e)})") from None
    return p


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = _ANSI.sub("", str(e)).strip().splitlines()
    line = text[0] if text else e.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."

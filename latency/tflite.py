"""PyTorch -> ``.tflite`` export with litert-torch, cached by model hash.

Conversion is slow (importing litert-torch pulls JAX in: seconds; converting a MnasNet
child: seconds), and a search exports the same child more than once (front export,
re-measurement, another device), so every conversion is stored under
``$MNAS_CACHE_DIR/tflite/<hash>.tflite`` (default ``~/.cache/mnas/tflite``). The hash
covers the module's structure (its ``repr``), every parameter and buffer's bytes, the
input shape, the layout (NCHW or NHWC) and the litert-torch version - anything that
changes the converted file.

``nhwc=True`` wraps the model with ``litert_torch.to_channel_last_io`` so the ``.tflite``
takes ``N x H x W x C`` input, as camera pipelines hand it over; ``input_shape`` is still
given as ``(N, C, H, W)``.

Importing this module registers the exporter for ``model_format == "tflite"`` in
:data:`latency.export.EXPORTERS`; litert-torch itself is imported only when converting.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from latency.export import EXPORTERS

#: flatbuffer file identifier of TFLite models (bytes 4..8)
TFLITE_IDENT = b"TFL3"


def tflite_cache_dir() -> Path:
    """``$MNAS_CACHE_DIR/tflite``, else ``~/.cache/mnas/tflite``."""
    base = os.environ.get("MNAS_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "mnas"
    return root / "tflite"


def litert_torch_version() -> str:
    """Installed litert-torch version; ImportError naming the extra when it is missing."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("litert-torch")
    except PackageNotFoundError:
        raise ImportError("TFLite export needs litert-torch: pip install 'mnas[tflite]'") \
            from None


def model_hash(model: Any, input_shape: Sequence[int], nhwc: bool = False) -> str:
    """sha256 of what determines the converted file: structure, weights, shape, layout."""
    import torch

    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(repr((tuple(int(d) for d in input_shape), bool(nhwc))).encode())
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def is_tflite(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a TFLite flatbuffer (identifier ``TFL3``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == TFLITE_IDENT


@contextlib.contextmanager
def quiet_fds(*fds: int) -> Iterator[None]:
    """Point file descriptors (1 = stdout, 2 = stderr) at /dev/null for a moment: native
    code (LiteRT, the MLIR converter, absl logging) writes there past Python's streams.
    A descriptor that is not open is left alone."""
    saved = []
    try:
        with open(os.devnull, "wb") as null:
            for fd in fds:
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:
                    continue
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)


def _convert(model: Any, shape: tuple[int, ...], nhwc: bool, out: str) -> None:
    import torch

    # importing litert-torch and converting print progress bars, absl logs and warnings
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    with quiet_fds(1, 2), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litert_torch

        x = torch.zeros(shape, dtype=torch.float32)
        module = model
        if nhwc:
            module = litert_torch.to_channel_last_io(model, args=[0])
            x = x.permute(0, 2, 3, 1).contiguous()
        with torch.no_grad():
            edge = litert_torch.convert(module.eval(), (x,))
        edge.export(out)


def export_tflite(model: Any, path: str | os.PathLike[str],
                  input_shape: Sequence[int] = (1, 3, 224, 224), nhwc: bool = False,
                  cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Convert ``model`` (eval mode, static ``input_shape`` NCHW) to a ``.tflite`` at
    ``path``, reusing a cached conversion of an identical model when there is one.

    The file is written atomically. ImportError when litert-torch is not installed,
    RuntimeError with the converter's reason when it cannot convert the module.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export_tflite needs a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be 4 positive ints (N, C, H, W), got {input_shape!r}")
    version = litert_torch_version()
    was_training = model.training
    model.eval()
    try:
        key = hashlib.sha256(
            f"{model_hash(model, shape, nhwc)}|litert-torch=={version}".encode()).hexdigest()
        cache = Path(cache_dir) if cache_dir is not None else tflite_cache_dir()
        cached = cache / f"{key}.tflite"
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not is_tflite(cached):
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".convert.", suffix=".tflite", dir=cache)
            os.close(fd)
            try:
                _convert(model, shape, nhwc, tmp)
                if not is_tflite(tmp):
                    raise RuntimeError("litert-torch wrote no TFLite flatbuffer")
                os.replace(tmp, cached)
            except ImportError:
                raise
            except Exception as e:  # noqa: BLE001 - converter errors are many private types
                lines = str(e).strip().splitlines()
                raise RuntimeError(f"TFLite conversion failed: {e.__class__.__name__}: "
                                   f"{lines[0] if lines else ''}") from e
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            shutil.copyfile(cached, tmp)
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return out
    finally:
        model.train(was_training)


EXPORTERS["tflite"] = export_tflite

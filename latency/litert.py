"""``local:litert``: run ``.tflite`` models on this host with LiteRT (XNNPACK, N threads).

LiteRT's Python package ``ai-edge-litert`` is the maintained successor of
``tflite-runtime``; the latter is only a fallback import (its last release cannot run
under NumPy 2). The interpreter is created with the builtin op resolver, which applies
XNNPACK as the default CPU delegate, and ``num_threads = threads``.

Importing this module registers the runtime (and, through :mod:`latency.tflite`, the
TFLite exporter); the runtime packages themselves are imported only when used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import latency.tflite  # noqa: F401 - registers the "tflite" exporter
from latency.runtimes import INPUT_SEED, Runtime, register_runtime
from latency.tflite import is_tflite, quiet_fds


def _interpreter_module() -> Any:
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter``; ImportError
    naming the extra when neither is installed."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
        except ImportError:
            raise ImportError("local:litert needs ai-edge-litert: pip install 'mnas[tflite]'") \
                from None
    return interpreter


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    _interpreter_module()
    for dist in ("ai-edge-litert", "tflite-runtime"):
        with contextlib.suppress(PackageNotFoundError):
            return f"{dist}=={version(dist)}"
    return "unknown"


def random_inputs(details: list[dict[str, Any]], seed: int = INPUT_SEED) -> list[np.ndarray]:
    """A fixed random array per interpreter input (dynamic dims become 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in details:
        shape = tuple(int(s) if int(s) > 0 else 1 for s in d["shape"])
        dtype = np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(np.bool_))
        else:
            out.append(rng.integers(0, 10, shape).astype(dtype))
    return out


def load_interpreter(path: str | os.PathLike[str], threads: int) -> Any:
    """A LiteRT interpreter for ``path`` with XNNPACK and ``threads`` threads, tensors
    allocated and a fixed random input set. ValueError when the file is no TFLite model,
    RuntimeError when LiteRT cannot load or run it."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    if not is_tflite(p):
        raise ValueError(f"{p} is not a TFLite model (no TFL3 flatbuffer identifier)")
    mod = _interpreter_module()
    try:
        with quiet_fds(2):  # the runtime's one-line banners, thousands of times a search
            it = mod.Interpreter(model_path=str(p), num_threads=int(threads))
            it.allocate_tensors()
    except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError freely
        raise RuntimeError(f"LiteRT could not load {p}: {_first_line(e)}") from e
    for d, x in zip(it.get_input_details(), random_inputs(it.get_input_details()), strict=True):
        it.set_tensor(d["index"], x)
    try:
        it.invoke()
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"LiteRT could not run {p}: {_first_line(e)}") from e
    return it


@register_runtime
class LiteRtRuntime(Runtime):
    """LiteRT (``ai-edge-litert``) with XNNPACK on this host's CPU."""

    name = "litert"
    model_format = "tflite"

    def version(self) -> str:
        return litert_version()

    def load(self, path: str | os.PathLike[str], threads: int) -> Callable[[], None]:
        """A callable running one inference. ValueError when ``path`` is no TFLite file
        (bad input, not a runtime failure); RuntimeError when LiteRT fails on it."""
        return load_interpreter(path, threads).invoke


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else e.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."

"""On-host inference runtimes behind one small interface, and their registry.

A runtime turns a model file into a zero-argument callable that runs one inference on a
fixed random input; the measurement protocol times that callable. Heavy runtime packages
are imported lazily so that listing runtimes never needs them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: seed of the fixed random input (latency must not depend on which input was drawn)
INPUT_SEED = 0


class Runtime(ABC):
    """One way of running a model file on this host."""

    name: str = ""
    #: file format it runs: "onnx" or "tflite"
    model_format: str = "onnx"

    @abstractmethod
    def version(self) -> str:
        """Version of the runtime package; ImportError if it is not installed."""

    @abstractmethod
    def load(self, path: str | os.PathLike[str], threads: int) -> Callable[[], None]:
        """Load ``path`` and return a callable running one inference on a fixed random
        input of the model's input shape. RuntimeError with the reason if it cannot."""

    def available(self) -> bool:
        try:
            self.version()
        except ImportError:
            return False
        return True


RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a runtime available by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty `name`")
    RUNTIMES[cls.name] = cls
    return cls


def runtime_names() -> list[str]:
    return sorted(RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """A runtime instance by name; ValueError listing the valid names if unknown."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; valid: {', '.join(runtime_names())}")
    return RUNTIMES[name]()


# -- ONNX Runtime ------------------------------------------------------------------------

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def onnxruntime_session_options(threads: int) -> Any:
    """The session options every ONNX Runtime measurement uses (benchmarks reuse them).

    - ``intra_op_num_threads = threads``: the threads one operator may use (MnasNet
      measured single-threaded, so the default setting is 1 and no pool is created).
    - ``inter_op_num_threads = 1`` and sequential execution: operators run one after
      another, as on a phone; no second pool competes for cores.
    - ``ORT_ENABLE_ALL``: every graph optimisation (constant folding, Conv+BN+activation
      fusion, layout transforms) - what a deployed model gets.
    - spinning off (``session.intra_op.allow_spinning = 0``, same for inter-op): with
      threads > 1, idle pool threads otherwise busy-wait between runs and steal the
      cores other measurements or training on this host need. With one thread there is
      no pool and the setting has no effect.
    - log severity 3 (errors only): no warnings in the middle of a progress bar.
    """
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def random_feeds(inputs: list[Any], seed: int = INPUT_SEED) -> dict[str, np.ndarray]:
    """A fixed random array per ONNX Runtime graph input (symbolic dims become 1)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for inp in inputs:
        if inp.type not in _ORT_DTYPES:
            raise RuntimeError(f"input {inp.name!r} has type {inp.type}, which the latency "
                               f"input generator does not support ({', '.join(_ORT_DTYPES)})")
        dtype = _ORT_DTYPES[inp.type]
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


@register_runtime
class OnnxRuntime(Runtime):
    """ONNX Runtime's CPU execution provider with :func:`onnxruntime_session_options`."""

    name = "onnxruntime"
    model_format = "onnx"

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def load(self, path: str | os.PathLike[str], threads: int) -> Callable[[], None]:
        import onnxruntime as ort

        so = onnxruntime_session_options(threads)
        try:
            sess = ort.InferenceSession(str(Path(path)), sess_options=so,
                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises several private types
            raise RuntimeError(f"onnxruntime could not load {path}: {_first_line(e)}") from e
        feeds = random_feeds(sess.get_inputs())
        outputs = [o.name for o in sess.get_outputs()]
        run = sess.run

        def run_once() -> None:
            run(outputs, feeds)

        try:  # fail here, with the reason, rather than in the middle of the timing loop
            run_once()
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"onnxruntime could not run {path}: {_first_line(e)}") from e
        return run_once


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else e.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."

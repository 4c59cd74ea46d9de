"""Safe reader for the CIFAR python-pickle batches (``cifar10:`` / ``cifar100:`` specs).

The format is Python pickle, which can execute code and build objects of any size
when loaded. :func:`load_cifar_pickle` allows only plain containers and numeric numpy
arrays, rebuilt by checked stand-ins for numpy's own reconstruction helpers: every
array must carry its bytes in the file (CIFAR stores raw pixel bytes), so a tiny file
cannot ask for a huge allocation. Anything else is one-line ValueError naming the file.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# A genuine batch's arrays are its raw bytes, so they add up to less than the file;
# the slack covers pickle framing. More than this is a crafted file asking for memory.
SIZE_FACTOR = 2
_KINDS = "biuf"  # bool, int, uint, float: what image and label arrays can be


class _NdarrayToken:
    """Stands in for ``numpy.ndarray``: not callable, so a file cannot allocate by
    calling the class directly; only :meth:`_ArrayUnpickler._reconstruct` accepts it."""

    __slots__ = ()


_NDARRAY = _NdarrayToken()


class _DtypeArg:
    """Stands in for ``numpy.dtype(...)``: a real dtype's ``__setstate__`` accepts
    crafted flags (e.g. "holds objects"), so only the type code and byte order are
    kept and :func:`_dtype` builds a fresh numeric dtype from them."""

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]


def _dtype(arg: Any) -> np.dtype:
    code, order = (arg.code, arg.order) if isinstance(arg, _DtypeArg) else (arg, "=")
    if isinstance(code, bytes):
        code = code.decode("ascii", "replace")
    try:
        dt = np.dtype(code) if isinstance(code, str) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing array dtype {code!r}: only numeric arrays")
    return dt.newbyteorder(order) if order in "<>" else dt


def _nbytes(shape: Any, dt: np.dtype) -> int:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise pickle.UnpicklingError(f"bad array shape {shape!r}")
    return math.prod(shape) * dt.itemsize


class _Budget:
    """Bytes the arrays of one file may allocate in all (reused data counts again)."""

    def __init__(self, file_size: int) -> None:
        self.file_size, self.left = file_size, SIZE_FACTOR * file_size

    def take(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise pickle.UnpicklingError(
                f"array of {nbytes:,} bytes is implausible for a {self.file_size:,}-byte file")
        self.left -= nbytes


class _LoadedArray(np.ndarray):
    """An array being unpickled: ``__setstate__`` checks the state before numpy sees
    it (numpy crashes on some crafted states, e.g. object dtype with short data)."""

    _budget: _Budget

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("bad array state")
        shape, dt, fortran, raw = state[-4:]
        dt = _dtype(dt)
        n = _nbytes(shape, dt)
        if not isinstance(raw, bytes | bytearray) or len(raw) != n:
            raise pickle.UnpicklingError(f"array data is not the {n:,} bytes its shape needs")
        self._budget.take(n)
        super().__setstate__((1, shape, dt, bool(fortran), raw))


class _ArrayUnpickler(pickle.Unpickler):
    """Only numeric numpy arrays and plain containers; any other global is refused."""

    GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
        ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
        ("numpy", "ndarray"): "_ndarray", ("numpy", "dtype"): "_dtype_arg",
        ("_codecs", "encode"): "_latin1",
    }
    _ndarray, _dtype_arg = _NDARRAY, _DtypeArg

    def __init__(self, file: Any, file_size: int) -> None:
        super().__init__(file, encoding="bytes")
        self.budget = _Budget(file_size)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return getattr(self, self.GLOBALS[module, name])

    def _array(self, arr: np.ndarray) -> _LoadedArray:
        out = arr.view(_LoadedArray)
        out._budget = self.budget  # a later BUILD on it is checked too
        return out

    def _reconstruct(self, cls: Any, shape: Any, dtype: Any) -> _LoadedArray:
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError("only numpy.ndarray arrays can be rebuilt")
        dt = _dtype(dtype)
        self.budget.take(_nbytes(shape, dt))  # before allocating
        return self._array(np.zeros(shape, dt))

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> _LoadedArray:
        dt = _dtype(dtype)
        n = _nbytes(shape, dt)
        if not isinstance(buf, bytes | bytearray) or len(buf) != n or order not in ("C", "F"):
            raise pickle.UnpicklingError(f"array buffer is not the {n:,} bytes its shape needs")
        self.budget.take(n)
        return self._array(np.frombuffer(buf, dt).reshape(shape, order=order))

    @staticmethod
    def _latin1(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        # numpy's protocol-2 pickles spell bytes as encode(str, "latin1"); other codecs
        # (hex, base64...) expand their input and could be chained into a memory bomb
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("refusing _codecs.encode other than latin1 of a str")
        return obj.encode("latin1")


def load_cifar_pickle(path: Path) -> dict:
    """Read one CIFAR python batch file (``encoding="bytes"``: keys are bytes). Arrays
    come back as plain ``numpy.ndarray``; see the module docstring for the checks."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, Path(path).stat().st_size).load()
    except Exception as e:  # MemoryError included: any failure of an untrusted file
        msg = str(e) if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{path} is not a CIFAR python batch: "
                         f"{(msg.splitlines() or [''])[0]}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR python batch: holds {type(obj).__name__}")
    return {k: v.view(np.ndarray) if isinstance(v, _LoadedArray) else v for k, v in obj.items()}


def class_names(path: Path, raw: Any, key: bytes) -> list[str]:
    """The class names stored under ``key`` in a meta file: a list of at least two."""
    if not isinstance(raw, list | tuple) or not all(isinstance(n, bytes | str) for n in raw):
        raise ValueError(f"{path}: {key!r} must be a list of class names, "
                         f"got {type(raw).__name__}")
    if len(raw) < 2:
        raise ValueError(f"{path}: {key!r} names {len(raw)} class(es): need at least 2")
    return [n.decode(errors="replace") if isinstance(n, bytes) else n for n in raw]


def batch_labels(path: Path, raw: Any, key: bytes, n_images: int,
                 num_classes: int) -> np.ndarray:
    """One batch's labels as int64 ``[n_images]``, each in ``0..num_classes-1``."""
    want = f"{key!r} must be a flat list of one integer label per image"
    try:
        labels = np.asarray([] if raw is None else raw)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise ValueError(f"{path}: {want}: {e}") from e
    if labels.ndim != 1:
        raise ValueError(f"{path}: {want}, got shape {labels.shape}")
    if len(labels) != n_images:
        raise ValueError(f"{path}: {len(labels)} labels ({key!r}) for {n_images} images: "
                         "need one per image")
    if labels.size and labels.dtype.kind not in "iu":  # 0.5 would be truncated silently
        raise ValueError(f"{path}: {want}, got {labels.dtype} values like "
                         f"{labels[0].item()!r}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1} "
                         f"(found {labels.min()}..{labels.max()})")
    return labels

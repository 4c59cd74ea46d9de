"""Reading a run folder's strategy checkpoint without running code from it.

``strategy.ckpt`` is a pickle (strategy states hold NumPy arrays, torch tensors, Optuna's
in-memory study). Python's unpickler calls whatever a file names, so a checkpoint in a
run folder someone else wrote — a shared drive, a CI artifact — could run code on
``mnas search --resume``. :func:`loads` reads the same bytes with two limits:

* **globals** — a file may name only containers and values (builtins' plain types,
  ``collections``, ``datetime``), NumPy's array, scalar, dtype and generator
  reconstructors, torch's tensor and dtype rebuilders (tensor bytes go through
  ``torch.load(weights_only=True)``, not the unrestricted load pickled tensors name),
  and the classes and functions ``mnas``, ``search`` and ``optuna`` define (not what
  their modules import);
* **calls** — such a class is only ever *allocated* (``cls.__new__`` and its saved
  ``__dict__``, which is how pickle rebuilds ordinary objects), never called, so no
  constructor runs with the file's arguments; enums (looked up by value), ``random.Random``,
  ``datetime``, ``OrderedDict`` and the reconstructors above are the only calls; only
  instances get attributes set, and only plain lists, dicts and sets are filled.

Anything else is refused with :class:`pickle.UnpicklingError` naming it, before it runs.
The pure-Python unpickler makes this slower than ``pickle.loads``; a checkpoint is read
once per resume.
"""

from __future__ import annotations

import collections
import enum
import importlib
import io
import pickle
import types
from typing import Any

#: packages whose classes a checkpoint may hold (allocated, never called)
CLASS_PACKAGES = ("mnas", "search", "optuna")


def _torch_storage(b: bytes) -> Any:
    """What ``torch.storage._load_from_bytes`` does, through torch's weights-only loader."""
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


#: (module, names) of the reconstructors a checkpoint may call
_CALLS = {
    "builtins": {"list", "dict", "set", "frozenset", "tuple", "int", "float", "complex",
                 "bool", "str", "bytes", "bytearray", "slice", "range", "object"},
    "collections": {"OrderedDict"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "random": {"Random"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.random._pickle": {"__generator_ctor", "__bit_generator_ctor",
                             "__randomstate_ctor"},
    "numpy.random.bit_generator": {"__pyx_unpickle_SeedSequence", "SeedSequence"},
    "numpy.random._mt19937": {"MT19937"},      # bit generators: their ctors take them
    "numpy.random._pcg64": {"PCG64", "PCG64DXSM"},
    "numpy.random._philox": {"Philox"},
    "numpy.random._sfc64": {"SFC64"},
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_parameter"},
    "torch": {"Size", "device"},
}


def _callable(module: str, name: str) -> Any | None:
    """The reconstructor or value a checkpoint may name, or None."""
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        return _torch_storage
    if name in _CALLS.get(module, ()):
        return getattr(importlib.import_module(module), name)
    if module == "torch":                    # dtypes pickle as torch.float32 etc.
        import torch

        value = getattr(torch, name, None)
        return value if isinstance(value, torch.dtype) else None
    return None


class _Unpickler(pickle._Unpickler):  # the Python one: its opcodes can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self.calls: set[int] = {id(_torch_storage)}     # what REDUCE may call

    def find_class(self, module: str, name: str) -> Any:
        found = _callable(module, name)
        if found is not None:
            if callable(found):
                self.calls.add(id(found))
            return found
        if module.partition(".")[0] in CLASS_PACKAGES and "." not in name:
            # a class to allocate, an enum to look up by value, or a function held as a
            # value (Optuna's samplers keep their weighting functions): none is called.
            # Only what those packages define, not what their modules import
            obj = super().find_class(module, name)
            if isinstance(obj, type | types.FunctionType) and \
                    str(obj.__module__).partition(".")[0] in CLASS_PACKAGES:
                return obj
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def load_build(self) -> None:
        # BUILD sets attributes: on an instance, not on a class, function or module
        target = self.stack[-2]
        if isinstance(target, type | types.FunctionType | types.ModuleType |
                      types.BuiltinFunctionType):
            raise pickle.UnpicklingError(f"refusing to set attributes of {target!r}")
        super().load_build()
    dispatch[pickle.BUILD[0]] = load_build

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self.calls and not (isinstance(func, type)
                                               and issubclass(func, enum.Enum)):
            raise pickle.UnpicklingError(
                f"refusing to call {getattr(func, '__module__', '?')}."
                f"{getattr(func, '__qualname__', func)!s} (classes are rebuilt, not called)")
        self.stack[-1] = func(*args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new(cls, args, {}))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list) -> None:   # INST / OBJ (protocols 0-1)
        raise pickle.UnpicklingError("refusing INST/OBJ: a checkpoint is written with "
                                     "protocol 2 or later")

    # APPEND(S), SETITEM(S) and ADDITEMS call the target's own methods: plain containers
    def _container(self, kinds: tuple[type, ...]) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise pickle.UnpicklingError(f"refusing to fill a {type(target).__name__}")
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._container((list,)).append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._container((list,)).extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._container(_DICTS)[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._container(_DICTS)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._container((set,)).update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems


_DICTS = (dict, collections.OrderedDict)


def _new(cls: Any, args: tuple, kwargs: dict) -> Any:
    if not isinstance(cls, type):
        raise pickle.UnpicklingError(f"refusing to allocate {cls!r}: not a class")
    return cls.__new__(cls, *args, **kwargs)


def loads(data: bytes) -> Any:
    """``pickle.loads`` limited to checkpoint contents (see the module docstring)."""
    return _Unpickler(io.BytesIO(data)).load()


def load(f: Any) -> Any:
    """:func:`loads` from a binary file object."""
    return _Unpickler(f).load()

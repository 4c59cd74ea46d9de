"""Device protocol and the device registry.

A device measures a *model file* with a *runtime* and returns a
:class:`latency.Measurement`. Specs look like ``local:onnxruntime``, ``local:litert``,
``adb:<serial>``, ``adb:<host>:<port>``, ``http://<farm>:<port>/<name>`` (a device farm's);
the part before the first ``:`` picks the
registered factory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency.measurement import Measurement, MeasureSettings


class DeviceUnreachable(RuntimeError):
    """The device could not be reached at all, after its own retries (a farm that is
    down, a phone unplugged): no fault of the model, and every later measurement would
    fail the same way. A search stops with a resume hint rather than fail its remaining
    children on it."""


class Device(ABC):
    spec: str
    #: file format the device runs: "onnx" or "tflite"
    model_format: str = "onnx"
    #: whether :meth:`measure_paired` can time two models alternately, inference by
    #: inference (local runtimes, and a farm's local runtimes; not a phone's tool)
    can_pair: bool = False
    #: measurements it can run at once (a farm's pool of identical phones: its size)
    concurrency: int = 1

    @property
    def resource(self) -> str:
        """The hardware this device measures on: devices with the same resource must not
        measure at once (they would time each other). Default: the spec."""
        return self.spec

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the hardware + software measuring (keys the cache)."""

    @abstractmethod
    def measure(self, model_path: str | Path, settings: MeasureSettings) -> Measurement:
        """Measure one model file. Raises RuntimeError with a clear reason on failure."""

    def refresh_fingerprint(self) -> dict[str, Any]:
        """Read the fingerprint again, for a long-lived holder of the device (a farm): a
        phone may have been updated, rebooted with another governor or given another
        tool since. Devices that cache it override this; the default is
        :meth:`fingerprint`."""
        return self.fingerprint()

    def measure_paired(self, model_path: str | Path, reference_path: str | Path | None,
                       settings: MeasureSettings) -> tuple[Measurement, Measurement | None]:
        """Measure a model and, alternately with it, a reference model (so both see the
        same moments of the machine). Devices with :attr:`can_pair` override this; the
        rest measure alone, and refuse a reference with a TypeError."""
        if reference_path is None:
            return self.measure(model_path, settings), None
        raise TypeError(f"{self.spec} times one model at a time; timing two alternately "
                        "needs a local runtime (here or on a device farm)")

    def cancel(self) -> None:  # noqa: B027  (optional hook)
        """Stop the measurements running now, if the device can (their callers get a
        RuntimeError); a farm that is stopping calls it. Default: nothing to stop."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        pass


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two fingerprints, sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two fingerprints: ``sdk '33' -> '34', …``."""
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed_keys(old, new))


def first_line(e: BaseException) -> str:
    """An error's first line (its class name when it says nothing)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def can_pair(device: Any) -> bool:
    """Whether ``device`` times two models alternately (:meth:`Device.measure_paired`)."""
    return bool(getattr(device, "can_pair", False))


DeviceFactory = Callable[[str], Device]
DEVICES: dict[str, tuple[DeviceFactory, str]] = {}


def register_device(scheme: str, example: str) -> Callable[[DeviceFactory], DeviceFactory]:
    """Register a factory for specs ``<scheme>:...``; ``example`` is shown in errors."""

    def deco(factory: DeviceFactory) -> DeviceFactory:
        DEVICES[scheme] = (factory, example)
        return factory

    return deco


def _load_builtin() -> None:
    from devices import adb, local, remote  # noqa: F401
    from latency import litert  # noqa: F401  (registers the local:litert runtime)


def device_schemes() -> list[str]:
    _load_builtin()
    return [ex for _, ex in DEVICES.values()]


def get_device(spec: str) -> Device:
    """Parse a device spec; ValueError naming the valid forms when it is not one."""
    _load_builtin()
    scheme = spec.split(":", 1)[0] if ":" in spec else spec
    if scheme not in DEVICES:
        raise ValueError(f"unknown device {spec!r}; valid: {', '.join(device_schemes())}")
    return DEVICES[scheme][0](spec)

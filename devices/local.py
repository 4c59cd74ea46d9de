"""``local:<runtime>``: this host's CPU, measured with an on-host runtime.

The runtime is any name in :data:`latency.runtimes.RUNTIMES` (``onnxruntime`` built in).
Nothing is pinned: the process's CPU affinity is left as it is, so a caller that wants a
core to itself pins the process (``taskset``) before measuring.

``isolate=True`` measures in a child process stopped after ``timeout_s``
(:mod:`latency.isolated`): for model files nobody here made, such as a farm's uploads,
which could otherwise hang or crash the measuring process. A search's own children are
measured in-process.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import latency.litert  # noqa: F401 - registers local:litert (its packages load lazily)
from devices.base import Device, register_device
from latency.export import file_sha256
from latency.isolated import Live, measure_isolated, time_files
from latency.measurement import Measurement, MeasureSettings
from latency.runtimes import RUNTIMES, get_runtime, runtime_names


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86 ``model name``, ARM ``Hardware``/``CPU part``),
    else what the platform module knows."""
    keys = ("model name", "hardware", "processor name", "cpu model", "cpu part")
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        k = k.strip().lower()
        if sep and k in keys and k not in found and v.strip():
            found[k] = v.strip()
    for k in keys:
        if k in found:
            return found[k]
    return platform.processor() or platform.machine() or "unknown"


class LocalDevice(Device):
    """This host's CPU with one registered runtime."""

    can_pair = True

    @property
    def resource(self) -> str:
        return "local"      # every local runtime measures on this host's CPU

    def __init__(self, spec: str = "local:onnxruntime", *, isolate: bool = False,
                 timeout_s: float = 600.0) -> None:
        if not 0 < timeout_s < float("inf"):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        self.isolate, self.timeout_s = isolate, float(timeout_s)
        self._live = Live()     # isolated children measuring now (cancel stops them)
        scheme, _, name = spec.partition(":")
        valid = ", ".join(f"local:{n}" for n in runtime_names())
        if scheme != "local" or name not in RUNTIMES:
            raise ValueError(f"unknown local runtime in device {spec!r}; valid: {valid}")
        self.spec = spec
        self.runtime = get_runtime(name)
        self.model_format = self.runtime.model_format
        try:
            self.runtime_version = self.runtime.version()
        except ImportError as e:
            raise ValueError(f"device {spec!r}: runtime {name!r} is not installed ({e})") from None
        self._fingerprint: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"LocalDevice({self.spec!r})"

    def fingerprint(self) -> dict[str, Any]:
        """Host CPU model, logical cores, machine, OS and runtime; stable across runs."""
        if self._fingerprint is None:
            self._fingerprint = {
                "kind": "local",
                "cpu": cpu_model(),
                "cores": os.cpu_count() or 0,
                "machine": platform.machine(),
                "os": f"{platform.system()} {platform.release()}",
                "runtime": self.runtime.name,
                "runtime_version": self.runtime_version,
            }
        return dict(self._fingerprint)

    def measure(self, model_path: str | os.PathLike[str],
                settings: MeasureSettings) -> Measurement:
        """Measure one model file with the adaptive protocol.

        FileNotFoundError / ValueError when the file is missing or not a model of this
        device's format; RuntimeError with the reason when the runtime fails on it.
        """
        return self.measure_paired(model_path, None, settings)[0]

    def measure_paired(self, model_path: str | os.PathLike[str],
                       reference_path: str | os.PathLike[str] | None,
                       settings: MeasureSettings) -> tuple[Measurement, Measurement | None]:
        """Measure a model and, alternately inference by inference, a reference model
        (:func:`latency.protocol.measure_interleaved`): the two sample lists saw the same
        moments of the machine, so their ratio cancels its slow episodes. The adaptive
        stopping rule follows the model. ``reference_path=None`` is :meth:`measure`.
        Errors as :meth:`measure`, naming the file that failed."""
        paths = [Path(model_path)] + ([] if reference_path is None else [Path(reference_path)])
        shas = [self._check_file(p) for p in paths]
        if self.isolate:
            samples, noisy = measure_isolated(self.runtime.name, paths, settings,
                                              self.timeout_s, self._live)
        else:
            samples, noisy = time_files(self.runtime, paths, settings)
        out = []
        for sha, x in zip(shas, samples, strict=True):
            m = Measurement.from_samples(
                x, warmup=settings.warmup, threads=settings.threads,
                runtime=self.runtime.name, runtime_version=self.runtime_version,
                model_sha256=sha, device=self.spec, fingerprint=self.fingerprint(),
                rel_ci_goal=settings.rel_ci, clock=settings.clock)
            out.append(m)
        first = out[0].with_(noisy=noisy or out[0].noisy)
        return first, (out[1] if len(out) > 1 else None)

    def cancel(self) -> None:
        """Kill the isolated measurements running now (in-process ones cannot be stopped)."""
        self._live.kill()

    def close(self) -> None:
        self.cancel()

    def _check_file(self, path: Path) -> str:
        """The file's sha256; FileNotFoundError / ValueError when it is no regular file."""
        if not path.is_file():
            if path.exists():
                raise ValueError(f"{path} is not an ONNX model (not a regular file)")
            raise FileNotFoundError(2, "model file not found", str(path))
        return file_sha256(path)


def isolated(device: Device, timeout_s: float) -> Device:
    """``device``, measuring in a child process killed after ``timeout_s`` where it is a
    local runtime: a model file nobody here made (a pull request's, a user's upload) must
    not hang, crash or outlive this process. Other devices measure elsewhere already."""
    if not 0 < timeout_s < float("inf"):
        raise ValueError(f"--measure-timeout must be a positive number of seconds, got "
                         f"{timeout_s}")
    if isinstance(device, LocalDevice):
        device.isolate, device.timeout_s = True, float(timeout_s)
    return device


@register_device("local", "local:onnxruntime | local:litert")
def _local(spec: str) -> Device:
    return LocalDevice(spec)

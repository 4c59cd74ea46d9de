"""Measured latency of search-space children: build full size, export, measure, cache.

The proxy a child trains as (narrow, low resolution) is never what is measured: the
estimator builds the deployable model (width 1.0, the space's deploy classes) and exports
it at the deployment input 1x3xRxR. Weights are initialised from a fixed seed so the same
architecture always exports to the same bytes, and therefore the same cache key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from devices.base import Device, can_pair
from latency.cache import MeasurementCache
from latency.export import file_sha256, get_exporter
from latency.measurement import Measurement, MeasureSettings

#: seed for the weights of measured children (latency does not depend on their values)
BUILD_SEED = 0


def build_deployable(space: Any, arch: Any, num_classes: int | None = None) -> Any:
    """The child as measured: width 1.0, ``num_classes`` (default the space's deployment
    classes), weights from :data:`BUILD_SEED` (the caller's RNG untouched), eval mode."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        model = space.build(arch, num_classes=int(num_classes or space.deploy_classes),
                            width_mult=1.0)
    return model.eval()


def _runtime_of(device: Device, fingerprint: dict[str, Any]) -> tuple[str, str]:
    """Runtime name and version for the cache key: the device's own, else its fingerprint's."""
    runtime = getattr(device, "runtime", None)
    name = getattr(runtime, "name", None) or str(fingerprint.get("runtime", device.spec))
    version = getattr(device, "runtime_version", None) or str(
        fingerprint.get("runtime_version", ""))
    return name, version


def measure_model(device: Device, path: str | os.PathLike[str], settings: MeasureSettings,
                  cache: MeasurementCache | None = None) -> Measurement:
    """Measure a model file on ``device``, answering from ``cache`` when it can.

    A fresh measurement is stored (noisy ones too, with their flag).
    """
    if cache is None:
        return device.measure(path, settings)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    sha = file_sha256(p)
    fp = device.fingerprint()
    runtime, version = _runtime_of(device, fp)
    hit = cache.get(sha, fp, runtime, version, settings)
    if hit is not None:     # the same hardware, perhaps reached another way (a farm)
        return hit if hit.device == device.spec else hit.with_(device=device.spec)
    m = device.measure(p, settings)
    cache.put(m, settings)
    return m


def _context(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {lines[0] if lines else ''}".rstrip(": ")


#: measurements of a reference alone whose median is its nominal latency (anchors)
REFERENCE_ROUNDS = 5


def nominal_latency(device: Device, path: str | os.PathLike[str],
                    settings: MeasureSettings) -> float:
    """A reference model's nominal latency (ms): the median of :data:`REFERENCE_ROUNDS`
    separate measurements, so one slow episode does not set it."""
    return float(np.median([device.measure(path, settings).median_ms
                            for _ in range(REFERENCE_ROUNDS)]))


class MeasuredLatency:
    """``(space, arch) -> Measurement`` by measuring the full-size child on ``device``.

    ``workdir``: where models are exported (kept, named by arch); a temporary folder per
    call when None. ``resolution`` / ``num_classes`` default to the space's deployment
    values. Build, export and runtime failures raise RuntimeError with the reason.

    ``anchor=True`` (local devices): each child is timed alternately, inference by
    inference, with the space's reference network (its first named arch, MobileNetV2 for
    ``mnasnet``) and scaled by ``nominal / reference median``, the nominal being the
    reference's median of :data:`REFERENCE_ROUNDS` measurements taken on first use. A
    shared host's slow episodes then cancel, so children measured minutes apart are
    comparable (``benchmarks/anchor_spread.py``: 0.8–1.3% re-measurement spread where
    raw medians moved 2.4–6.1%). Anchored measurements are always fresh (the cache
    holds unscaled ones).

    ``fingerprint_every_s``: the device's fingerprint is read again before a measurement
    once this long has passed since it was last read (None: never). A phone updated
    during a long search is then measured, recorded and cached as it is now, not under
    the fingerprint it had when the search began.
    """

    def __init__(self, device: Device, settings: MeasureSettings | None = None,
                 cache: MeasurementCache | None = None,
                 workdir: str | os.PathLike[str] | None = None,
                 resolution: int | None = None, num_classes: int | None = None,
                 anchor: bool = False, fingerprint_every_s: float | None = 300.0) -> None:
        if not isinstance(device, Device):
            raise TypeError(f"device must be a devices.Device, got {type(device).__name__}")
        if anchor and not can_pair(device):
            raise ValueError(f"anchored measurement needs a device that can time two models "
                             f"alternately (a local runtime, here or on a device farm); "
                             f"{device.spec} cannot")
        if resolution is not None and int(resolution) < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if fingerprint_every_s is not None and not fingerprint_every_s >= 0:
            raise ValueError(f"fingerprint_every_s must be >= 0 or None, got "
                             f"{fingerprint_every_s}")
        self.device = device
        self.fingerprint_every_s = fingerprint_every_s
        self._fp_read = time.monotonic()
        self.settings = settings if settings is not None else MeasureSettings()
        self.cache = cache
        self.workdir = Path(workdir) if workdir is not None else None
        self.resolution = resolution
        self.num_classes = num_classes
        self._export_fn = get_exporter(device.model_format)
        self.suffix = f".{device.model_format}"
        self.anchor = bool(anchor)
        #: per (space, input shape): the exported reference and its nominal latency (ms)
        self.references: dict[str, tuple[Path, float]] = {}
        self._refdir: Path | None = None
        # building and exporting go one at a time (torch's exporter is not thread-safe);
        # measurements may overlap up to the device's concurrency (a farm's pool)
        self._lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        """Children that may be measured at once: the device's (a farm pool's size)."""
        return max(1, int(getattr(self.device, "concurrency", 1)))

    def __repr__(self) -> str:
        return (f"MeasuredLatency({self.device!r}, {self.settings!r}, cache={self.cache!r}"
                f"{', anchor=True' if self.anchor else ''})")

    def input_shape(self, space: Any) -> tuple[int, int, int, int]:
        r = int(self.resolution or space.deploy_resolution)
        return (1, 3, r, r)

    def build(self, space: Any, arch: Any) -> Any:
        """The deployable child (width 1.0), weights from a fixed seed."""
        try:
            return build_deployable(space, arch, self.num_classes)
        except Exception as e:  # noqa: BLE001 - any builder failure fails the trial
            raise RuntimeError(f"{self._name(space, arch)}: build failed: {_context(e)}") from e

    def export(self, space: Any, arch: Any, path: str | os.PathLike[str]) -> Path:
        """Build the full-size child and export it to ``path`` (e.g. a front model)."""
        model = self.build(space, arch)
        try:
            return self._export_fn(model, path, input_shape=self.input_shape(space))
        except RuntimeError as e:  # the exporter's own reason already says "export failed"
            raise RuntimeError(f"{self._name(space, arch)}: {e}") from e
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(
                f"{self._name(space, arch)}: export failed: {_context(e)}") from e

    def __call__(self, space: Any, arch: Any) -> Measurement:
        if self.workdir is not None:
            return self._measure(space, arch, self.workdir)
        with tempfile.TemporaryDirectory(prefix="mnas-lat-") as tmp:
            return self._measure(space, arch, Path(tmp))

    def _measure(self, space: Any, arch: Any, folder: Path) -> Measurement:
        name = self._name(space, arch)
        digest = hashlib.sha256(
            f"{name}|{self.input_shape(space)}|{self.num_classes}".encode()).hexdigest()[:16]
        with self._lock:
            path = self.export(space, arch, folder / f"{digest}{self.suffix}")
        try:
            self._refresh_fingerprint()
            if self.anchor:
                with self._lock:
                    ref, nominal = self.reference(space)
                m, r = self.device.measure_paired(path, ref, self.settings)
                return m.scaled(nominal / r.median_ms)
            return measure_model(self.device, path, self.settings, self.cache)
        except RuntimeError:
            raise
        except (ValueError, OSError) as e:  # our own export is not bad user input
            raise RuntimeError(f"{name}: measurement failed: {_context(e)}") from e

    def _refresh_fingerprint(self) -> None:
        """Read the device's fingerprint again when it is due (``fingerprint_every_s``)."""
        every = self.fingerprint_every_s
        if every is None:
            return
        with self._lock:
            if time.monotonic() - self._fp_read < every:
                return
            self.device.refresh_fingerprint()
            self._fp_read = time.monotonic()

    def reference(self, space: Any, nominal_ms: float | None = None) -> tuple[Path, float]:
        """(exported reference network, nominal ms) of ``space``, made on first use; the
        nominal is measured then unless ``nominal_ms`` gives it (e.g. a table's)."""
        key = f"{getattr(space, 'name', type(space).__name__)}|{self.input_shape(space)}"
        if key not in self.references:
            named = space.named()
            if not named:
                raise RuntimeError(f"{key}: anchored measurement needs a reference network "
                                   "and the space names none")
            if self._refdir is None:
                if self.workdir is not None:
                    self._refdir = self.workdir / "reference"
                    self._refdir.mkdir(parents=True, exist_ok=True)
                else:
                    self._refdir = Path(tempfile.mkdtemp(prefix="mnas-ref-"))
                    weakref.finalize(self, shutil.rmtree, self._refdir, True)
            path = self.export(space, next(iter(named.values())),
                               self._refdir / f"{len(self.references)}{self.suffix}")
            nominal = (nominal_latency(self.device, path, self.settings)
                       if nominal_ms is None else float(nominal_ms))
            self.references[key] = (path, nominal)
        return self.references[key]

    @staticmethod
    def _name(space: Any, arch: Any) -> str:
        with contextlib.suppress(Exception):
            return str(space.key(arch))
        return repr(arch)

"""Latency scheme ``lut:PATH``: a child's latency predicted from a per-layer lookup table
(``mnas lut build``) instead of measured - for inner loops where measuring every
candidate is too slow. The table's error against real measurement is what
``mnas lut eval`` reports; a prediction is returned as a Measurement with ``runs = 0``
and ``runtime = "lut"`` so nobody mistakes it for a measurement.
"""

from __future__ import annotations

import os
from typing import Any

from latency.export import file_sha256
from latency.lut import LatencyTable
from latency.measurement import Measurement
from mnas.evaluate import register_latency


class LutLatency:
    """``(space, arch) -> Measurement`` predicted by a :class:`LatencyTable`."""

    def __init__(self, path: str | os.PathLike[str], resolution: int | None = None) -> None:
        self.path = str(path)
        self.table = LatencyTable.load(path)
        if resolution is not None and int(resolution) != self.table.resolution:
            raise ValueError(f"lookup table {self.path} was built at resolution "
                             f"{self.table.resolution}, not {resolution}")
        self.version = file_sha256(path)[:16]

    def __repr__(self) -> str:
        return f"LutLatency({self.path!r})"

    def __call__(self, space: Any, arch: Any) -> Measurement:
        if getattr(space, "name", None) != self.table.space:
            raise ValueError(f"lookup table {self.path} is for the {self.table.space!r} space, "
                             f"not {getattr(space, 'name', space)!r}")
        ms = self.table.predict(arch)
        t = self.table
        return Measurement(
            samples_ms=(ms,), median_ms=ms, p10_ms=ms, p90_ms=ms, mad_ms=0.0, ci_low_ms=ms,
            ci_high_ms=ms, runs=0, warmup=0, threads=int(t.settings.get("threads", 1)),
            runtime="lut", runtime_version=self.version, model_sha256="", device=t.device,
            fingerprint=t.fingerprint)


@register_latency("lut", "lut:PATH")
def lut(arg: str, *, resolution: int | None = None, device: str | None = None,
        **_: Any) -> LutLatency:
    """``lut:PATH`` - PATH is a table written by ``mnas lut build``. ``device`` (the
    search's ``--device``) must have the table's fingerprint, as ``mnas lut eval``
    requires: a table predicts the device it was measured on, no other."""
    if not arg:
        raise ValueError("latency scheme 'lut' needs the table's path: lut:PATH "
                         "(build one with 'mnas lut build')")
    est = LutLatency(arg, resolution)
    if device is not None:
        from devices.base import get_device

        dev = get_device(device)
        try:
            est.table.check_fingerprint(dev.fingerprint(), device)
        finally:
            dev.close()
    return est

"""Latency scheme ``measured``: every child's full-size model measured on ``--device``."""

from __future__ import annotations

import os
from typing import Any

from devices.base import get_device
from latency.cache import MeasurementCache
from latency.estimate import MeasuredLatency
from latency.measurement import MeasureSettings
from mnas.evaluate import register_latency


@register_latency("measured", "measured[:anchored]")
def measured(arg: str, *, device: str, settings: MeasureSettings | None = None,
             cache: MeasurementCache | str | os.PathLike[str] | bool | None = None,
             workdir: str | os.PathLike[str] | None = None, resolution: int | None = None,
             num_classes: int | None = None, **_: Any) -> MeasuredLatency:
    """``measured`` or ``measured:anchored`` (each child timed alternately with the
    space's reference network and scaled to its nominal latency: see
    :class:`latency.estimate.MeasuredLatency`; local devices). ``cache``: a
    MeasurementCache, a path to one, None for the default cache file
    (``$MNAS_CACHE_DIR`` or ``~/.cache/mnas``), or False for no cache."""
    if arg not in ("", "anchored"):
        raise ValueError(f"latency scheme 'measured' takes no argument or 'anchored' (got "
                         f"{arg!r}); the device comes from --device, e.g. local:onnxruntime")
    if cache is None or cache is True:
        store: MeasurementCache | None = MeasurementCache()
    elif cache is False:
        store = None
    elif isinstance(cache, MeasurementCache):
        store = cache
    else:
        store = MeasurementCache(cache)
    return MeasuredLatency(get_device(device), settings=settings, cache=store,
                           workdir=workdir, resolution=resolution, num_classes=num_classes,
                           anchor=arg == "anchored")

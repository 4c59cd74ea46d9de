"""Fast latency estimates for ENAS's inner loop (thousands of children, none measured).

* ``lut:PATH`` — a per-layer lookup table built by ``mnas lut build`` (``mnasnet``
  only): the calibrated sum of measured layer latencies on the table's device.
  Labelled ``"lut:<path>"``.
* otherwise a **MAC-count proxy**, labelled ``"macs-proxy (no LUT)"``: the deployable
  child's multiply-accumulates (exactly as :func:`mnas.counting.count_macs` counts the
  built model) times ``ms_per_mmac``. The default 0.25 ms per million MACs is MnasNet-A1's
  published point (78 ms for 312M MACs on a Pixel 1, ../shared/SEEDS.md §5), so the
  proxy reads as Pixel-1 milliseconds at that point; MobileNetV2 (300.8M) comes out at
  75.2 ms. It is not a measurement: MACs rank mobile latency only roughly (MnasNet's
  own argument for measuring), which is why every ENAS candidate still gets a real
  measurement from the loop's latency evaluator.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

MACS_LABEL = "macs-proxy (no LUT)"
#: MnasNet-A1 on a Pixel 1: 78 ms / 312M MACs
DEFAULT_MS_PER_MMAC = 78.0 / 312.0
#: the named point whose estimate is the default inner-loop target, per space
REFERENCE_POINTS = {"mnasnet": "mobilenetv2", "nasnet": "nasnet-a",
                    "nb201": "best_cifar100"}  # as `--target-ms auto` picks


def mac_counter(space: Any) -> Any:
    """``arch -> MACs`` at deployment size for the spaces with a supernet."""
    name = getattr(space, "name", None)
    if name == "mnasnet":
        from search.supernet.mnasnet import MnasnetMacs

        return MnasnetMacs(space)
    if name == "nasnet":
        from search.supernet.nasnet import NasnetMacs

        return NasnetMacs(space)
    if name == "nb201":
        from search.supernet.nb201 import Nb201Macs

        return Nb201Macs(space)
    raise ValueError(f"no MAC counter for space {name!r}; valid: mnasnet, nasnet, nb201")


class FastLatency:
    """``arch -> ms``: the lookup table at ``lut`` when given, else the MAC proxy.

    ``label`` says which (it goes into every candidate's meta). Results are cached per
    arch string.
    """

    def __init__(self, space: Any, lut: str | os.PathLike[str] | None = None,
                 ms_per_mmac: float = DEFAULT_MS_PER_MMAC, cache_size: int = 4096) -> None:
        if not (isinstance(ms_per_mmac, int | float) and ms_per_mmac > 0):
            raise ValueError(f"ms_per_mmac must be a positive number, got {ms_per_mmac!r}")
        self.space = space
        self.ms_per_mmac = float(ms_per_mmac)
        self.table: Any = None
        self.macs: Any = None
        if lut:
            from latency.lut import LatencyTable

            if not os.path.isfile(lut):
                raise FileNotFoundError(2, "latency lookup table not found", str(lut))
            self.table = LatencyTable.load(lut)
            if self.table.space != space.name:
                raise ValueError(f"lookup table {lut} is for the {self.table.space!r} space, "
                                 f"not {space.name!r}")
            self.label = f"lut:{lut}"
        else:
            self.macs = mac_counter(space)
            self.label = MACS_LABEL
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.cache_size = int(cache_size)

    def __call__(self, arch: Any) -> float:
        text = arch.encode()
        ms = self._cache.get(text)
        if ms is None:
            if self.table is not None:
                ms = float(self.table.predict(arch))
            else:
                ms = self.macs(arch) / 1e6 * self.ms_per_mmac
            self._cache[text] = ms
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return ms

    def reference_ms(self) -> float:
        """The estimate of the space's reference point (the default target)."""
        name = REFERENCE_POINTS.get(self.space.name, "")
        point = self.space.named().get(name)
        if point is None:
            raise ValueError(f"space {self.space.name!r} has no reference point {name!r}; "
                             "give target_ms explicitly")
        return self(point)

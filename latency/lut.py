"""Per-layer latency lookup table: measure each distinct layer once, predict a network as
the calibrated sum of its layers.

For the ``mnasnet`` space a network is ``stem -> layers -> head`` and every layer is fixed
by (op, kernel, SE, effective skip, input channels, output channels, stride, input size).
:class:`MnasnetUnits` enumerates every such *unit* the space can produce at one input
resolution (about 3,000 at 224: most of the space's 10^30 networks share them) and splits
an arch into its units. :func:`latency.lut_measure.build_table` measures each unit once
as a tiny one-layer model, built with the same block classes the space builds from, on
the device, then
measures a few full networks and fits ``measured ~ a * sum + b * units + c`` by least
squares (``b`` absorbs the per-inference overhead each tiny model paid and a network pays
once). Prediction is a lookup and a sum: :meth:`LatencyTable.predict_choices` does it for
a whole batch of decision tuples in NumPy, :meth:`LatencyTable.predict` for one arch from
per-block precomputed sums.

The error against real measurement is measured by
:func:`latency.lut_measure.evaluate_table`, never assumed (docs/lut.md has the numbers).

Clock: the table's :class:`MeasureSettings` (``clock`` included) measure the units and
the networks alike. On a host shared with other jobs use ``clock="cpu"`` (local devices,
one thread): wall time inflates a 30 ms network, which is preempted, more than a 0.1 ms
layer, which rarely is, and no calibration undoes that.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latency.lut_fields import check_anchor as _check_anchor
from latency.lut_fields import check_settings as _check_settings
from latency.lut_fields import need as _need
from latency.measurement import MeasureSettings
from latency.paths import check_input_path

FORMAT_VERSION = 1
#: seed of the weights of every unit (latency does not depend on their values)
UNIT_SEED = 0
#: the largest model a table may describe: the limits of ``mnas arch info`` (a bigger
#: one fails in torch's allocator, with a traceback, when a unit or network is built)
MAX_RESOLUTION = 2048
MAX_CLASSES = 100_000
#: a table is a few MB (about 3,000 units); a bigger file is not one, and reading it
#: would take seconds and gigabytes before saying so
MAX_TABLE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Unit:
    """One measurable piece of a network: ``stem``, a ``layer`` or the ``head``."""

    kind: str
    in_ch: int
    out_ch: int
    size: int           # input height = width
    stride: int = 1
    op: str = ""
    kernel: int = 0
    se: float = 0.0
    skip: str = "none"  # effective skip: "identity" only where it adds a shortcut

    @property
    def key(self) -> str:
        if self.kind != "layer":
            return f"{self.kind}|{self.in_ch}>{self.out_ch}|{self.size}"
        return (f"layer|{self.op}|k{self.kernel}|se{self.se:g}|{self.skip}|"
                f"{self.in_ch}>{self.out_ch}|s{self.stride}|{self.size}")

    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_ch, self.size, self.size)


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # "same" padding: ceil


class MnasnetUnits:
    """The units of the ``mnasnet`` space at one deployment resolution."""

    def __init__(self, resolution: int = 224, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        from mnas.spaces import mnasnet as sp

        if not 32 <= int(resolution) <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be in [32, {MAX_RESOLUTION}], got {resolution}")
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
        self.sp = sp
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.block_sizes: list[int] = []   # input size of each block
        size = _out(self.resolution, 2)
        for _, _, _, s in sp.SKELETON:
            self.block_sizes.append(size)
            size = _out(size, s)
        self.head_size = size
        # input channels each block (and the head) can see: an empty block passes its input on
        self.block_inputs: list[tuple[int, ...]] = []
        prev = (sp.STEM_CHANNELS,)
        for i in range(sp.NUM_BLOCKS):
            self.block_inputs.append(prev)
            outs = sp.filter_options(i)
            prev = tuple(sorted(set(outs) | (set(prev) if 0 in sp.layer_options(i) else set())))
        self.head_inputs = prev

    # -- units -------------------------------------------------------------------------
    def stem(self) -> Unit:
        return Unit("stem", 3, self.sp.STEM_CHANNELS, self.resolution, 2)

    def head(self, in_ch: int) -> Unit:
        return Unit("head", in_ch, self.sp.HEAD_CHANNELS, self.head_size)

    def layer(self, block: int, first: bool, op: str, kernel: int, se: float, skip: str,
              in_ch: int, out_ch: int) -> Unit:
        stride = self.sp.SKELETON[block][3] if first else 1
        size = self.block_sizes[block] if first else _out(self.block_sizes[block],
                                                          self.sp.SKELETON[block][3])
        if skip == "identity" and not (stride == 1 and in_ch == out_ch):
            skip = "none"  # the blocks add no shortcut there: the same module as "none"
        return Unit("layer", in_ch, out_ch, size, stride, op, kernel, float(se), skip)

    def block_units(self, block: int, spec: Any, in_ch: int) -> list[Unit]:
        out = []
        for j in range(spec.layers):
            out.append(self.layer(block, j == 0, spec.op, spec.kernel, spec.se, spec.skip,
                                  in_ch if j == 0 else spec.filters, spec.filters))
        return out

    def units(self, arch: Any) -> list[Unit]:
        """The units of one arch, in network order."""
        units = [self.stem()]
        ch = self.sp.STEM_CHANNELS
        for i, b in enumerate(arch.blocks):
            units += self.block_units(i, b, ch)
            if b.layers:
                ch = b.filters
        units.append(self.head(ch))
        return units

    def enumerate(self) -> list[Unit]:
        """Every distinct unit the space can produce (deduplicated by key)."""
        sp = self.sp
        found: dict[str, Unit] = {}

        def add(u: Unit) -> None:
            found.setdefault(u.key, u)

        add(self.stem())
        for i in range(sp.NUM_BLOCKS):
            for op in sp.CONV_OPS:
                for k in sp.KERNELS:
                    for se in sp.SE_RATIOS:
                        for skip in sp.SKIPS:
                            for f in sp.filter_options(i):
                                for c in self.block_inputs[i]:
                                    add(self.layer(i, True, op, k, se, skip, c, f))
                                if max(sp.layer_options(i)) > 1:
                                    add(self.layer(i, False, op, k, se, skip, f, f))
        for c in self.head_inputs:
            add(self.head(c))
        return list(found.values())

    def module(self, unit: Unit) -> Any:
        """The unit as a torch module, weights from a fixed seed (eval mode)."""
        import torch

        from mnas import blocks as bl

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNIT_SEED)
            if unit.kind == "stem":
                m = bl.ConvBnAct(unit.in_ch, unit.out_ch, 3, unit.stride)
            elif unit.kind == "head":
                m = bl.ClassifierHead(unit.in_ch, unit.out_ch, self.num_classes, self.dropout)
            else:
                kw = {"kernel": unit.kernel, "stride": unit.stride, "se_ratio": unit.se,
                      "skip": unit.skip}
                if unit.op == "conv":
                    m = bl.RegularConv(unit.in_ch, unit.out_ch, **kw)
                elif unit.op == "dsconv":
                    m = bl.DepthwiseSeparable(unit.in_ch, unit.out_ch, **kw)
                else:
                    m = bl.MBConv(unit.in_ch, unit.out_ch,
                                  expand=int(unit.op.removeprefix("mbconv")), **kw)
            bl.init_weights(m)
        return m.eval()


#: the spaces lookup tables can be built for (a unit enumerator each)
LUT_SPACES = ("mnasnet",)


def units_for(space: Any, resolution: int, num_classes: int) -> MnasnetUnits:
    """The unit enumerator of ``space``; ValueError for spaces without one."""
    name = getattr(space, "name", space)
    if name not in LUT_SPACES:
        raise ValueError(f"lookup tables support the space 'mnasnet' only, got {name!r}")
    dropout = getattr(space, "dropout", 0.2)
    return MnasnetUnits(resolution, num_classes, dropout if isinstance(dropout, float) else 0.2)


# -- the table ---------------------------------------------------------------------------

class LatencyTable:
    """Unit latencies (ms) of one space on one device, plus the calibration."""

    def __init__(self, *, space: str, resolution: int, num_classes: int, device: str,
                 fingerprint: dict[str, Any], settings: dict[str, Any], clock: str = "",
                 entries: dict[str, float], noisy: Sequence[str] = (),
                 calibration: dict[str, Any] | None = None, created: float = 0.0,
                 anchor: dict[str, Any] | None = None,
                 passes: dict[str, Sequence[float]] | None = None) -> None:
        self.space = space
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.device = device
        self.fingerprint = dict(fingerprint)
        self.settings = _check_settings(settings, clock)   # the file's name is added at load
        self.clock = str(self.settings["clock"])
        if not isinstance(entries, Mapping):
            raise ValueError(f"entries must be an object of unit latencies (ms), got "
                             f"{type(entries).__name__}")
        for k in entries:
            _need(entries, k, "entry", "a number")
        self.entries = dict(entries)
        self.noisy = sorted(set(noisy))
        self.calibration = dict(calibration or {"a": 1.0, "b": 0.0, "c": 0.0, "points": 0})
        for k in ("a", "b", "c"):   # every prediction uses them
            _need(self.calibration, k, "calibration", "a number")
        self.created = created or time.time()
        #: {"unit": key, "ms": nominal} when every entry was timed alternately with that
        #: unit and scaled to its nominal latency (latency.lut_measure, "Anchor")
        self.anchor = dict(anchor) if anchor else None
        _check_anchor(self.anchor)
        #: every measurement of each unit, one per build pass (entries are their medians);
        #: tables written before passes had one measurement per unit
        passes = passes or {}
        self.passes = {k: [float(x) for x in passes.get(k) or (v,)]
                       for k, v in self.entries.items()}
        self.units = units_for(space, self.resolution, self.num_classes)
        self._tables: _Compiled | None = None
        #: the file it was loaded from (named in errors), None for a table made in memory
        self.source: str | None = None

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "space": self.space, "resolution": self.resolution,
                "num_classes": self.num_classes, "device": self.device,
                "fingerprint": self.fingerprint, "clock": self.clock,
                "settings": self.settings, "created": self.created,
                "calibration": self.calibration, "noisy": self.noisy, "anchor": self.anchor,
                "entries": dict(sorted(self.entries.items())),
                "passes": dict(sorted(self.passes.items()))}

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        p = check_input_path(path, "lookup table")
        if p.is_dir():
            raise ValueError(f"lookup table {p} is a directory, expected a table file "
                             "written by 'mnas lut build'")
        if not p.exists():
            raise FileNotFoundError(f"lookup table not found: {p}")
        if not p.is_file():
            raise ValueError(f"lookup table {p} is not a regular file, expected a table file "
                             "written by 'mnas lut build'")
        if (size := p.stat().st_size) > MAX_TABLE_BYTES:   # refused unread
            raise ValueError(f"lookup table {p} is {size / 2**20:,.0f} MiB, over the "
                             f"{MAX_TABLE_BYTES // 2**20} MiB limit: a table is a few MiB")
        try:
            d = json.loads(p.read_text())
            if d.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT_VERSION}")
            keys = ("space", "resolution", "num_classes", "device", "fingerprint",
                    "settings", "entries", "noisy", "calibration", "created")
            table = cls(**{k: d[k] for k in keys}, clock=d.get("clock", ""),
                        anchor=d.get("anchor"), passes=d.get("passes"))
        except KeyError as e:   # str(KeyError) is only the quoted key
            raise ValueError(f"{p} is not a mnas lookup table (it lacks {e})") from None
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{p} is not a mnas lookup table ({e})") from None
        table.source = str(p)
        return table

    def check_fingerprint(self, fingerprint: dict[str, Any], spec: str) -> None:
        """ValueError naming the keys where device ``spec``'s ``fingerprint`` differs from
        the table's: its entries would not predict that device's latency."""
        from devices.base import describe_change

        if fingerprint != self.fingerprint:
            raise ValueError(f"the lookup table was built on {self.device}; {spec} has another "
                             f"fingerprint ({describe_change(self.fingerprint, fingerprint)}): "
                             f"use the table's device or build a table for {spec}")

    def measure_settings(self) -> MeasureSettings:
        """The settings the table was measured with (clock included)."""
        return MeasureSettings(**self.settings)

    # -- prediction ----------------------------------------------------------------------
    def missing(self, passes: int = 1) -> list[Unit]:
        """Units measured fewer than ``passes`` times (not at all, by default)."""
        return [u for u in self.units.enumerate() if len(self.passes.get(u.key, ())) < passes]

    def check_complete(self) -> None:
        """ValueError unless every unit has an entry: a partial table (what an
        interrupted build leaves) cannot predict, nor be evaluated."""
        units = self.units.enumerate()
        if n := sum(u.key not in self.entries for u in units):
            name = f"lookup table {self.source}" if self.source else "the lookup table"
            raise ValueError(f"{name} lacks {n} of the {len(units)} units its networks need: "
                             "it is partial (an interrupted build); finish it with `mnas lut "
                             f"build --out {self.source or 'FILE'}` and the options it was "
                             "started with")

    def add_measurement(self, key: str, ms: float, flagged: bool = False,
                        tolerance: float = 0.05) -> None:
        """Record one more measurement of a unit: its entry becomes the median of all of
        them. It is *noisy* when its only measurement was ``flagged`` (confidence
        interval wider than asked), or when no two of several agree within
        ``tolerance``."""
        vals = self.passes.setdefault(key, [])
        vals.append(float(ms))
        self.entries[key] = float(np.median(vals))
        s = sorted(vals)
        noisy = flagged if len(s) == 1 else not any(
            b <= a * (1 + tolerance) for a, b in zip(s, s[1:], strict=False))
        keep = set(self.noisy) - {key}
        self.noisy = sorted(keep | {key} if noisy else keep)

    def disputed(self, tolerance: float = 0.05) -> list[str]:
        """Units measured more than once whose measurements spread beyond ``tolerance``
        and that no third measurement has settled (at most two so far)."""
        return [k for k, v in self.passes.items()
                if len(v) == 2 and max(v) > min(v) * (1 + tolerance)]

    def raw(self, arch: Any) -> tuple[float, int]:
        """(sum of unit latencies in ms, number of units) of one arch."""
        us = self.units.units(arch)
        try:
            return sum(self.entries[u.key] for u in us), len(us)
        except KeyError as e:
            raise ValueError(f"lookup table has no entry {e.args[0]!r}: it was built for "
                             "another resolution or is incomplete") from None

    def calibrated(self, raw_ms: Any, n_units: Any) -> Any:
        c = self.calibration
        return c["a"] * raw_ms + c["b"] * n_units + c["c"]

    def _compile(self) -> _Compiled:
        """Per-block sums for every (input channels, block choice), calibrated; built on
        first use and again after :meth:`fit` (or :meth:`invalidate` after editing
        ``entries`` by hand)."""
        if self._tables is None:
            try:
                self._tables = _Compiled(self)
            except KeyError:   # a unit without an entry: one line saying so
                self.check_complete()
                raise
        return self._tables

    def invalidate(self) -> None:
        self._tables = None

    def predict_choices(self, choices: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Predicted latency (ms) of each row of decision indices of the *full* ``mnasnet``
        space (``[n, 42]``; a subspace's indices differ: use :meth:`predict`), in NumPy:
        one gather per block from precomputed per-block sums."""
        t = self._compile()
        c = np.asarray(choices, dtype=np.int64)
        if c.ndim != 2 or c.shape[1] != 6 * len(t.strides):
            raise ValueError(f"choices must have shape [n, {6 * len(t.strides)}], got {c.shape}")
        tables = t.cal if calibrated else t.raw
        cols = np.ascontiguousarray(c.T)  # one decision per row: contiguous arithmetic
        total = np.full(c.shape[0], t.base[calibrated])
        state = np.zeros(c.shape[0], dtype=np.int64)  # index into the block's input widths
        for i, strides in enumerate(t.strides):
            o, k, se, sk, f, ly = cols[6 * i: 6 * i + 6]
            idx = state * t.in_stride[i]
            for col, stride in zip((o, k, se, sk, f, ly), strides, strict=True):
                idx += col * int(stride)
            total += tables[i][idx]
            state = np.where(t.empty[i][ly], t.next_from_in[i][state], t.next_from_f[i][f])
        total += (t.head_cal if calibrated else t.head_raw)[state]
        return total

    def predict(self, arch: Any, calibrated: bool = True) -> float:
        """Predicted latency (ms) of one arch."""
        t = self._compile()
        total, units = t.stem, 2
        ch = self.units.sp.STEM_CHANNELS
        try:
            for d, b in zip(t.dicts, arch.blocks, strict=True):
                # a plain tuple key: a dataclass __eq__ per lookup would cost 3x the time
                ms, n = d[(ch, b.op, b.kernel, b.se, b.skip, b.filters, b.layers)]
                total += ms
                units += n
                if n:
                    ch = b.filters
        except (KeyError, AttributeError, TypeError, ValueError):
            raise ValueError(f"{arch!r} is not an arch of the {self.space} space") from None
        total += t.head_by_ch[ch]
        return float(self.calibrated(total, units)) if calibrated else float(total)

    def fit(self, rows: Iterable[tuple[float, int, float]]) -> dict[str, Any]:
        """Least-squares ``measured ~ a * raw + b * units + c`` over (raw, units, measured)
        rows; with fewer than 4 rows only ``measured ~ a * raw``."""
        r = np.asarray(list(rows), dtype=float)
        if r.ndim != 2 or len(r) < 1:
            raise ValueError("calibration needs at least one measured network")
        if len(r) >= 4:
            x = np.column_stack([r[:, 0], r[:, 1], np.ones(len(r))])
            (a, b, c), *_ = np.linalg.lstsq(x, r[:, 2], rcond=None)
        else:
            a, b, c = float(r[:, 2].sum() / r[:, 0].sum()), 0.0, 0.0
        pred = a * r[:, 0] + b * r[:, 1] + c
        mape = float(np.mean(np.abs(pred - r[:, 2]) / r[:, 2]))
        self.calibration = {"a": float(a), "b": float(b), "c": float(c), "points": len(r),
                            "fit_mape": mape, "rows": r.tolist()}
        self.invalidate()
        return self.calibration


class _Compiled:
    """A table's per-block sums as flat arrays (batched prediction) and dicts (one arch).

    Block ``i``'s flat index is ``in_index * in_stride + choices @ strides`` (choices =
    op, kernel, SE, skip, filters, layers indices); ``next_from_*`` map to the next
    block's input-width index (an empty block passes its input on)."""

    def __init__(self, table: LatencyTable) -> None:
        sp, U, e = table.units.sp, table.units, table.entries
        c = table.calibration
        a, b, c0 = float(c["a"]), float(c["b"]), float(c["c"])
        self.raw, self.cal, self.strides, self.in_stride = [], [], [], []
        self.empty, self.next_from_in, self.next_from_f, self.dicts = [], [], [], []
        ins_all = [*U.block_inputs, U.head_inputs]
        for i in range(sp.NUM_BLOCKS):
            ins, f_opts, l_opts = ins_all[i], sp.filter_options(i), sp.layer_options(i)
            shape = (len(ins), len(sp.CONV_OPS), len(sp.KERNELS), len(sp.SE_RATIOS),
                     len(sp.SKIPS), len(f_opts), len(l_opts))
            ms, cnt = np.zeros(shape), np.zeros(shape)
            d: dict[tuple[Any, ...], tuple[float, int]] = {}
            for idx in np.ndindex(*shape):
                ci, oi, ki, si, ski, fi, li = idx
                spec = sp.BlockSpec(sp.CONV_OPS[oi], sp.KERNELS[ki], sp.SE_RATIOS[si],
                                    sp.SKIPS[ski], f_opts[fi], l_opts[li])
                us = U.block_units(i, spec, ins[ci])
                ms[idx], cnt[idx] = sum(e[u.key] for u in us), len(us)
                d[(ins[ci], spec.op, spec.kernel, spec.se, spec.skip, spec.filters,
                   spec.layers)] = (float(ms[idx]), len(us))
            st = np.array([int(np.prod(shape[j + 1:])) for j in range(len(shape))])
            self.raw.append(ms.ravel())
            self.cal.append((a * ms + b * cnt).ravel())
            self.in_stride.append(int(st[0]))
            self.strides.append(st[1:])
            self.dicts.append(d)
            nxt = ins_all[i + 1]
            self.empty.append(np.array([n == 0 for n in l_opts]))
            self.next_from_in.append(np.array([nxt.index(ch) if ch in nxt else -1
                                               for ch in ins]))
            self.next_from_f.append(np.array([nxt.index(f) for f in f_opts]))
        self.stem = e[U.stem().key]
        self.head_by_ch = {ch: e[U.head(ch).key] for ch in U.head_inputs}
        self.head_raw = np.array([self.head_by_ch[ch] for ch in U.head_inputs])
        self.head_cal = a * self.head_raw
        # the stem and head are two units: b per unit, plus the intercept
        self.base = {False: self.stem, True: a * self.stem + 2 * b + c0}


# -- building and evaluating -------------------------------------------------------------

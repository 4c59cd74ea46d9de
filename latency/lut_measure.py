"""Building and evaluating lookup tables on a device: :func:`build_table` measures every
unit of a space and calibrates on full networks, :func:`evaluate_table` measures random
networks against the table's predictions (the numbers ``mnas lut eval`` prints),
:func:`prediction_speed` times the predictor. The table itself is :mod:`latency.lut`.

**Anchor.** On a device that can time two models alternately (a local runtime:
``measure_paired``), every measurement is timed alternately, inference by inference, with
a fixed reference and reported as ``median × nominal / reference median``, ``nominal``
being the reference's latency measured when the table was built. Units are timed with
the *unit anchor* (an MBConv-6 layer of MobileNetV2); calibration and evaluation
networks with the *network anchor*, the space's reference network itself (MobileNetV2 at
the table's resolution). A shared host slows down in episodes of seconds to minutes; the
reference sees the same episodes, so the scaled number is what the model would have
taken at build time. A reference of the same kind matters: a whole network reuses its
caches differently from a 1 ms layer. Measured here (``benchmarks/anchor_spread.py``,
three runs, quiet, log SD within a network): raw 2.4–6.1%, timed with the unit anchor
1.0–2.4%, with the network anchor 0.8–1.3%. A phone's tool times one model per call, so
``adb:`` tables are built unanchored.

**Passes.** A job on the other core slows layers by different amounts, which no anchor
cancels: :func:`build_table` measures every unit in ``passes`` passes (minutes apart),
keeps the median, and settles a unit whose two passes disagree by more than 5% with a
third measurement."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from devices.base import can_pair
from latency.lut import LatencyTable
from latency.measurement import Measurement, MeasureSettings


def measure_file(device: Any, path: str | os.PathLike[str], settings: MeasureSettings,
                 cache: Any = None) -> Measurement:
    """Measure a model file on ``device`` with ``settings`` (clock included), via the cache."""
    from latency.estimate import measure_model

    return measure_model(device, path, settings, cache)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample_archs(space: Any, n: int, seed: int, exclude: Iterable[str] = ()) -> list[Any]:
    """``n`` distinct random archs (uniform decisions), none of whose keys is excluded."""
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[Any] = []
    if n <= 0:
        return out
    for _ in range(100 * n + 100):
        a = space.sample(rng)
        k = space.key(a)
        if k not in seen:
            seen.add(k)
            out.append(a)
            if len(out) == n:
                break
    return out


def export_arch(space: Any, arch: Any, device: Any, settings: MeasureSettings,
                resolution: int, num_classes: int, workdir: Path) -> Path:
    from latency.estimate import MeasuredLatency

    est = MeasuredLatency(device, settings, None, workdir, resolution, num_classes)
    return est.export(space, arch, workdir / f"net.{device.model_format}")


def measure_arch(space: Any, arch: Any, device: Any, settings: MeasureSettings,
                 resolution: int, num_classes: int, workdir: Path, cache: Any = None
                 ) -> Measurement:
    path = export_arch(space, arch, device, settings, resolution, num_classes, workdir)
    return measure_file(device, path, settings, cache)


#: the anchor: this unit of the space's first named arch (MobileNetV2: MBConv-6, 24 ch, 56x56)
ANCHOR_INDEX = 3


class Anchor:
    """Times models alternately with a reference and scales them to its nominal latency
    (see the module docstring): :meth:`measure` with the unit anchor, :meth:`measure_network`
    with the network anchor. A nominal of ``None`` is measured on first use."""

    def __init__(self, device: Any, table: LatencyTable, space: Any, settings: MeasureSettings,
                 workdir: Path, nominal_ms: float | None = None,
                 network_ms: float | None = None) -> None:
        from latency.export import get_exporter

        if not can_pair(device):
            raise ValueError(f"device {device.spec} cannot time two models alternately; "
                             "build the table without an anchor")
        self.reference = next(iter(space.named().values()))
        units = table.units.units(self.reference)
        self.unit = units[min(ANCHOR_INDEX, len(units) - 1)]
        self.device, self.settings, self.space = device, settings, space
        self.path = get_exporter(device.model_format)(
            table.units.module(self.unit), workdir / f"anchor.{device.model_format}",
            input_shape=self.unit.input_shape())
        from latency.estimate import MeasuredLatency, nominal_latency

        self.nominal_ms = (nominal_latency(device, self.path, settings) if nominal_ms is None
                           else float(nominal_ms))
        self.network_ms = None if network_ms is None else float(network_ms)
        # the network anchor is measured:anchored's reference, exported on first use
        self._network = MeasuredLatency(device, settings, None, workdir / "network-anchor",
                                        table.resolution, table.num_classes, anchor=True)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"unit": self.unit.key, "ms": self.nominal_ms}
        if self.network_ms is not None:
            d["network"] = {"arch": self.space.encode(self.reference), "ms": self.network_ms}
        return d

    def measure(self, path: str | os.PathLike[str]) -> tuple[Measurement, float]:
        """(the raw measurement, its median scaled to the unit anchor's nominal latency)."""
        m, a = self.device.measure_paired(path, self.path, self.settings)
        return m, m.median_ms * self.nominal_ms / a.median_ms

    def measure_network(self, path: str | os.PathLike[str]) -> tuple[Measurement, float]:
        """(the raw measurement, its median scaled to the network anchor's nominal)."""
        ref, self.network_ms = self._network.reference(self.space, self.network_ms)
        m, a = self.device.measure_paired(path, ref, self.settings)
        return m, m.median_ms * self.network_ms / a.median_ms


def build_table(device: Any, space: Any, out: str | os.PathLike[str], *,
                resolution: int | None = None, num_classes: int | None = None,
                settings: MeasureSettings | None = None,
                calibrate: int = 30, seed: int = 1_000_003, resume: bool = True,
                cache: Any = None, workdir: str | os.PathLike[str] | None = None,
                anchor: bool | None = None, passes: int = 2,
                log: Callable[[str], None] = _log) -> LatencyTable:
    """Measure every unit of ``space`` on ``device`` (resuming a compatible partial table
    at ``out``), calibrate on ``calibrate`` measured networks, save to ``out``.
    ``anchor`` (default: where the device can) times units alternately with the unit
    anchor and networks with the network anchor; anchored measurements are always fresh
    (no cache). ``passes``: each
    pass measures every unit once, minutes apart from the last; an entry is the median
    of its unit's measurements, and a unit whose two passes disagree by more than 5%
    gets a third (see docs/lut.md for why)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    import tempfile

    from latency.export import get_exporter

    settings = settings or MeasureSettings()
    if anchor is None:
        anchor = can_pair(device)
    # 0 is refused (by MnasnetUnits), not read as "the default"
    res = int(space.deploy_resolution if resolution is None else resolution)
    classes = int(space.deploy_classes if num_classes is None else num_classes)
    fp = device.fingerprint()
    table = LatencyTable(space=space.name, resolution=res, num_classes=classes,
                         device=device.spec, fingerprint=fp, settings=asdict(settings),
                         entries={})
    outp = Path(out)
    if resume and outp.is_file():
        old = LatencyTable.load(outp)
        same = (old.space, old.resolution, old.num_classes, old.fingerprint,
                old.settings) == (table.space, res, classes, fp, table.settings)
        if not same:
            raise ValueError(f"{outp} holds a table for another device, space, resolution, "
                             "clock or settings; pass another --out or remove it")
        if old.entries and (old.anchor is not None) != anchor:
            raise ValueError(f"{outp} holds a partial table built "
                             f"{'with' if old.anchor else 'without'} an anchor; resume it "
                             f"{'with' if old.anchor else 'without'} one or remove it")
        table.entries, table.noisy, table.passes = old.entries, old.noisy, old.passes
        # the saves every 25 units keep what the table had until it is recomputed below:
        # an interrupted extra pass must leave a usable (if older) calibration
        table.calibration, table.created = old.calibration, old.created
        old_anchor = old.anchor if old.entries else None
    else:
        old_anchor = None
    export = get_exporter(device.model_format)
    todo = sum(len(table.missing(p)) for p in range(1, passes + 1))
    log(f"lut: {len(table.entries)} units measured, {todo} measurements to go "
        f"({passes} pass{'es' if passes > 1 else ''})")
    t0 = time.monotonic()
    done = 0
    with tempfile.TemporaryDirectory(prefix="mnas-lut-", dir=workdir) as tmp:
        folder = Path(tmp)
        anc = None
        if anchor:
            # the network anchor's nominal is measured afresh with the calibration below
            anc = Anchor(device, table, space, settings, folder,
                         old_anchor["ms"] if old_anchor else None)
            table.anchor = {**(old_anchor or {}), **anc.to_dict()}  # the old network's too
            log(f"lut: anchor {anc.unit.key}, nominal {anc.nominal_ms:.4f} ms")

        def measure(path: Path, fresh: bool = False) -> tuple[Measurement, float]:
            if anc is not None:
                return anc.measure(path)
            # a later pass must not be answered by the first pass's cached measurement
            m = measure_file(device, path, settings, None if fresh else cache)
            return m, m.median_ms

        def run(units: list[Any], what: str) -> None:
            nonlocal done
            for j, u in enumerate(units, 1):
                path = export(table.units.module(u), folder / f"unit.{device.model_format}",
                              input_shape=u.input_shape())
                m, ms = measure(path, fresh=u.key in table.passes)
                table.add_measurement(u.key, ms, m.noisy)
                done += 1
                if j % 25 == 0 or j == len(units):
                    table.save(outp)
                    rate = (time.monotonic() - t0) / done
                    log(f"lut: {what} {j}/{len(units)} units, {rate:.2f} s/unit, "
                        f"~{rate * max(0, todo - done) / 60:.1f} min left")

        for p in range(1, passes + 1):
            run(table.missing(p), f"pass {p}/{passes}")
        if passes > 1:  # a third measurement settles units whose passes disagree
            disputed = set(table.disputed())
            run([u for u in table.units.enumerate() if u.key in disputed], "settling")
        archs = list(space.named().values())[:1]
        archs += sample_archs(space, max(0, calibrate - len(archs)), seed,
                              exclude=[space.key(a) for a in archs])
        rows = []
        for a in archs:
            path = export_arch(space, a, device, settings, res, classes, folder)
            _, ms = anc.measure_network(path) if anc is not None else measure(path)
            raw, n = table.raw(a)
            rows.append((raw, n, ms))
            log(f"lut: calibration {len(rows)}/{len(archs)}: sum {raw:.2f} ms, "
                f"measured {ms:.2f} ms{' (anchored)' if anc else ''}")
    if anc is not None:
        table.anchor = anc.to_dict()
    table.fit(rows)
    table.calibration["archs"] = [space.encode(a) for a in archs]
    table.created = time.time()
    table.save(outp)
    return table


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def evaluate_table(table: LatencyTable, device: Any, space: Any, n: int = 100, seed: int = 0,
                   settings: MeasureSettings | None = None, cache: Any = None,
                   workdir: str | os.PathLike[str] | None = None,
                   log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Measure ``n`` random archs (none used for calibration) and compare with the table.

    For an anchored table the networks are timed alternately with its anchor and the
    metrics compare predictions with the anchored numbers (fresh measurements, no cache);
    ``raw`` holds the same metrics against the unscaled medians."""
    import tempfile

    table.check_complete()   # before minutes of measuring, not at the first prediction
    table.check_fingerprint(device.fingerprint(), device.spec)
    settings = settings or table.measure_settings()
    calib = {space.key(space.decode(s)) for s in table.calibration.get("archs", [])}
    archs = sample_archs(space, n, seed, exclude=calib)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnas-luteval-", dir=workdir) as tmp:
        folder = Path(tmp)
        net = (table.anchor or {}).get("network")
        anc = (Anchor(device, table, space, settings, folder, table.anchor["ms"],
                      net["ms"] if net else None) if table.anchor else None)
        if net and anc is not None and net["arch"] != space.encode(anc.reference):
            raise ValueError("the table's network anchor is not this version's reference "
                             "network; rebuild the table")
        if anc is not None and anc.unit.key != table.anchor["unit"]:
            raise ValueError(f"the table's anchor {table.anchor['unit']!r} is not this "
                             f"version's ({anc.unit.key!r}); rebuild the table")
        for a in archs:
            path = export_arch(space, a, device, settings, table.resolution,
                               table.num_classes, folder)
            if anc is not None:  # tables built before the network anchor: the unit one
                m, ms = anc.measure_network(path) if net else anc.measure(path)
            else:
                m = measure_file(device, path, settings, cache)
                ms = m.median_ms
            rows.append({"arch": space.encode(a), "measured_ms": ms, "raw_ms": m.median_ms,
                         "predicted_ms": table.predict(a), "raw_sum_ms": table.raw(a)[0],
                         "noisy": m.noisy})
            if len(rows) % 10 == 0:
                log(f"lut eval: {len(rows)}/{len(archs)} networks measured")
    pred = np.array([r["predicted_ms"] for r in rows])
    out = _errors(pred, np.array([r["measured_ms"] for r in rows]))
    out.update({"n": len(rows), "anchored": anc is not None,
                "raw": _errors(pred, np.array([r["raw_ms"] for r in rows])),
                "noisy_measurements": int(sum(r["noisy"] for r in rows)),
                "predictions_per_s": prediction_speed(table, space), "rows": rows})
    return out


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    err = (pred - meas) / meas
    return {"within_5pct": float(np.mean(np.abs(err) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "mape": float(np.mean(np.abs(err))), "spearman": spearman(pred, meas)}


def prediction_speed(table: LatencyTable, space: Any, n: int = 100_000, seed: int = 0
                     ) -> dict[str, float]:
    """Predictions per second: batched decision tuples, and one arch object at a time."""
    rng = np.random.default_rng(seed)
    sizes = [d.size for d in space.decisions()]
    choices = np.column_stack([rng.integers(0, s, n) for s in sizes])
    table.predict_choices(choices[:10])  # compile outside the timing
    archs = [space.from_choices(tuple(int(v) for v in row)) for row in choices[:20_000]]
    batch = single = 0.0
    for _ in range(3):  # best of three, as timeit: the host is shared with other work
        t0 = time.perf_counter()
        table.predict_choices(choices)
        batch = max(batch, n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for a in archs:
            table.predict(a)
        single = max(single, len(archs) / (time.perf_counter() - t0))
    return {"batch": batch, "single": single}

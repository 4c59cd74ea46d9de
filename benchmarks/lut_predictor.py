"""Lookup-table predictor speed: predictions per second, against measuring on this host.

Goal (issue 5): >= 10^5 predictions per second. Prints, best of three:

* batched: ``LatencyTable.predict_choices`` over ``--n`` random decision tuples;
* one arch at a time: ``LatencyTable.predict(arch)`` (what ``--latency lut:PATH`` calls);
* the reference, measured in the same process: one child *measured* on
  ``local:onnxruntime`` (export + adaptive protocol), as ``--latency measured`` does -
  the ratio is how many predictions one measurement costs.

Accuracy is ``mnas lut eval``'s job (it needs a table measured on the device); speed does
not depend on the values, so a table with random entries is used unless ``--lut`` is given.

    .venv/bin/python benchmarks/lut_predictor.py [--lut PATH] [--n 100000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", default=None, help="a table from 'mnas lut build' (default: random)")
    ap.add_argument("--n", type=int, default=100_000, help="decision tuples per batch")
    ap.add_argument("--no-reference", action="store_true", help="skip the measured child")
    args = ap.parse_args()

    from latency.lut import LatencyTable, MnasnetUnits
    from latency.lut_measure import prediction_speed
    from mnas.spaces.mnasnet import MnasNetSpace

    space = MnasNetSpace()
    if args.lut:
        table = LatencyTable.load(args.lut)
    else:
        rng = np.random.default_rng(0)
        units = MnasnetUnits(224)
        table = LatencyTable(space="mnasnet", resolution=224, num_classes=1000,
                             device="random", fingerprint={}, settings={},
                             entries={u.key: float(rng.uniform(0.01, 3.0))
                                      for u in units.enumerate()})
    t0 = time.perf_counter()
    table.predict_choices(np.zeros((1, 42), dtype=np.int64))
    print(f"table compiled in {time.perf_counter() - t0:.2f} s")
    speed = prediction_speed(table, space, n=args.n)
    print(f"batched:           {speed['batch']:12.4g} predictions/s  (goal >= 1e5: "
          f"{'met' if speed['batch'] >= 1e5 else 'NOT met'})")
    print(f"one arch at a time:{speed['single']:12.4g} predictions/s")
    if args.no_reference:
        return
    import torch

    from devices.base import get_device
    from latency.estimate import MeasuredLatency
    from latency.measurement import MeasureSettings

    torch.set_num_threads(1)
    arch = space.sample(random.Random(0))
    with tempfile.TemporaryDirectory() as tmp:
        est = MeasuredLatency(get_device("local:onnxruntime"), MeasureSettings(), None, tmp)
        t0 = time.perf_counter()
        est(space, arch)
        measured_s = time.perf_counter() - t0
    print(f"reference: measuring one child on local:onnxruntime took {measured_s:.2f} s = "
          f"{1 / measured_s:.3g} per second; batched prediction is "
          f"{speed['batch'] * measured_s:.3g}x, one at a time {speed['single'] * measured_s:.3g}x "
          "faster")


if __name__ == "__main__":
    main()

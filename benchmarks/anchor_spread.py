"""How much does timing a network alternately with a reference steady its measurement?

``--n`` random ``mnasnet`` networks (full size, 224×224, ``local:onnxruntime``, one
thread, CPU clock) are measured in ``--rounds`` rounds, round robin, three ways in each
round:

* **raw**: the median alone (``--latency measured``);
* **unit anchor**: timed alternately, inference by inference, with MobileNetV2's
  MBConv-6 layer (the LUT's unit anchor), scaled by the anchor's median;
* **network anchor**: timed alternately with MobileNetV2 itself (the LUT's network anchor
  and ``--latency measured:anchored``), scaled by its median.

Printed: the log standard deviation of each network's numbers across rounds (mean over
networks) for each way, and each anchored spread as a ratio of the raw one measured in
the same rounds. Nominal latencies are constants per reference, so they do not change a
spread and are left out.

Measured on this 2-core VM, quiet (raw / unit anchor / network anchor):

* 20 networks × 3 rounds (the first version of this script): 5.7% / 2.4% / 1.2%;
* ``--n 12 --rounds 3``: 6.13% / 1.03% / 1.27% (ratios 0.17, 0.21);
* ``--n 20 --rounds 4 --seed 1``: 2.39% / 2.11% / 0.76% (ratios 0.88, 0.32).

The network anchor is the steadier one: 0.8–1.3% in every run, where the unit anchor
gave 1.0–2.4% and raw medians 2.4–6.1%, depending on the host's mood.

    .venv/bin/python benchmarks/anchor_spread.py [--n 12] [--rounds 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="random networks")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each, round robin")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 2:
        ap.error("need --n >= 1 and --rounds >= 2")

    import torch

    from devices.base import get_device
    from latency.export import get_exporter
    from latency.lut import MnasnetUnits
    from latency.lut_measure import ANCHOR_INDEX, export_arch, sample_archs
    from latency.measurement import MeasureSettings
    from mnas.spaces.mnasnet import MnasNetSpace

    torch.set_num_threads(1)
    space, device = MnasNetSpace(), get_device("local:onnxruntime")
    settings = MeasureSettings(clock="cpu")
    res, classes = space.deploy_resolution, space.deploy_classes
    reference = next(iter(space.named().values()))
    units = MnasnetUnits(res, classes)
    unit = units.units(reference)[ANCHOR_INDEX]
    with tempfile.TemporaryDirectory(prefix="mnas-anchor-") as tmp:
        folder = Path(tmp)

        def export(arch: object, name: str) -> Path:
            (folder / name).mkdir()
            return export_arch(space, arch, device, settings, res, classes, folder / name)

        unit_path = get_exporter(device.model_format)(
            units.module(unit), folder / f"unit.{device.model_format}",
            input_shape=unit.input_shape())
        net_path = export(reference, "reference")
        paths = [export(a, str(i)) for i, a in enumerate(sample_archs(space, args.n, args.seed))]
        ways = {"raw": [], "unit anchor": [], "network anchor": []}
        for r in range(args.rounds):
            row = {k: [] for k in ways}
            for p in paths:
                row["raw"].append(device.measure(p, settings).median_ms)
                m, a = device.measure_paired(p, unit_path, settings)
                row["unit anchor"].append(m.median_ms / a.median_ms)
                m, a = device.measure_paired(p, net_path, settings)
                row["network anchor"].append(m.median_ms / a.median_ms)
            for k in ways:
                ways[k].append(row[k])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    spread = {k: float(np.log(np.array(v)).std(axis=0, ddof=1).mean()) for k, v in ways.items()}
    print(f"{args.n} networks x {args.rounds} rounds on {device.spec} (clock cpu): "
          "log SD of a network's latency across rounds, mean over networks")
    for k, s in spread.items():
        print(f"  {k:15s} {s:7.2%}   ratio to raw {s / spread['raw']:.2f}")


if __name__ == "__main__":
    main()

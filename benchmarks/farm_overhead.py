"""What measuring through a device farm costs, and whether it measures the same.

Starts ``mnas farm serve`` (a subprocess on a loopback port, serving
``local:onnxruntime``), then measures each model here and through the farm, alternately,
``--repeats`` times each way with the same settings, and prints per model:

* its size (what each request uploads);
* wall seconds per measurement here and through the farm, and their ratio (the farm's
  cost: upload, model check, the child process it is measured in, HTTP, JSON);
* the median latency each way and their ratio (the farm must measure the same);
* with ``--paired``, the same for a pair (the model timed alternately with a copy of
  itself, ``measure_paired``): a farm's local runtime can anchor, as a local device does.

    .venv/bin/python benchmarks/farm_overhead.py                  # conv net + MobileNetV2
    .venv/bin/python benchmarks/farm_overhead.py --repeats 10 --paired

Both sides share this host's cores, so run it on a quiet machine; the ratios are taken
in one run, measurement for measurement.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def models(work: Path, arch: str | None, conv_only: bool) -> list[tuple[str, Path]]:
    """(label, ONNX file): a small conv net and (unless ``conv_only``) a mnasnet network."""
    import torch
    from torch import nn

    from latency.export import export_onnx
    from mnas.spaces import get_space

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 10))
    out = [("conv net 32ch @ 64x64", export_onnx(conv, work / "conv.onnx", (1, 3, 64, 64)))]
    if conv_only:
        return out
    space = get_space("mnasnet")
    name = arch or next(iter(space.named()))
    r = space.deploy_resolution
    net = space.build(space.parse(name)).eval()
    out.append((f"mnasnet:{name} @ {r}", export_onnx(net, work / "net.onnx", (1, 3, r, r))))
    return out


def start_farm(token: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "MNAS_FARM_TOKEN": token}
    p = subprocess.Popen([sys.executable, "-m", "mnas", "farm", "serve", "--port", "0",
                          "--device", "cpu=local:onnxruntime", "--log-level", "warning"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    head = p.stdout.readline()
    if not head.startswith("mnas farm: http"):
        p.kill()
        raise SystemExit(f"the farm did not start: {head!r}")
    return p, head.split()[2] + "/cpu"


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="measurements each way per model")
    ap.add_argument("--arch", default=None, help="mnasnet network (default: its reference)")
    ap.add_argument("--paired", action="store_true", help="also time measure_paired")
    ap.add_argument("--runs", type=int, default=50, help="timed inferences a measurement")
    ap.add_argument("--conv-only", action="store_true", help="only the small conv net")
    args = ap.parse_args()
    if args.repeats < 1 or args.runs < 1:
        ap.error("--repeats and --runs must be >= 1")

    from devices.base import get_device
    from devices.local import LocalDevice
    from latency.measurement import MeasureSettings

    settings = MeasureSettings(warmup=5, runs=args.runs, max_runs=args.runs)
    token = secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="farm-overhead-"))
    proc, spec = start_farm(token)
    try:
        os.environ["MNAS_FARM_TOKEN"] = token
        for _ in range(100):    # the socket listens before uvicorn serves
            try:
                remote = get_device(spec)
                break
            except ValueError:
                time.sleep(0.1)
        else:
            raise SystemExit("the farm did not answer")
        local = LocalDevice()
        print(f"farm {spec} (a subprocess here); {args.repeats} measurements each way, "
              f"{args.runs} runs each")
        for label, path in models(work, args.arch, args.conv_only):
            copy = Path(shutil.copyfile(path, work / f"copy-{path.name}"))
            rows = {"single": ([], []), "paired": ([], [])}
            for _ in range(args.repeats):
                for dev, i in ((local, 0), (remote, 1)):
                    s, m = timed(lambda d=dev, p=path: d.measure(p, settings))
                    rows["single"][i].append((s, m.median_ms))
                    if args.paired:
                        s, (m, ref) = timed(lambda d=dev, p=path, c=copy: d.measure_paired(
                            p, c, settings))
                        rows["paired"][i].append((s, m.median_ms / ref.median_ms))
            print(f"\n{label}: {path.stat().st_size / 1e6:.2f} MB uploaded a request")
            for kind, (here, farm) in rows.items():
                if not here:
                    continue
                sh = statistics.median(s for s, _ in here)
                sf = statistics.median(s for s, _ in farm)
                vh = statistics.median(v for _, v in here)
                vf = statistics.median(v for _, v in farm)
                what = "median ms" if kind == "single" else "model / copy"
                print(f"  {kind:<6} wall {sh:.3f} s here, {sf:.3f} s through the farm "
                      f"(x{sf / sh:.2f}, +{sf - sh:.3f} s); {what} {vh:.4g} here, "
                      f"{vf:.4g} there (farm / here {vf / vh:.3f})")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

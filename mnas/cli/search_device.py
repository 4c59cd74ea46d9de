"""``mnas search``'s device handling: what a run is "on", whether its latency can be
measured while children train, and the fingerprint and model format it records."""

from __future__ import annotations

import argparse
from typing import Any


def elsewhere(cfg: dict[str, Any], farm_spec: str | None = None) -> bool:
    """Whether latency can be measured while children train: it is not timed on this
    host's CPU (a phone, a farm on another host or a farm here serving phones — its
    device's own spec is ``farm_spec`` —, or a table), which the training would slow."""
    from devices.remote import on_this_host

    device = str(cfg["device"])
    scheme = device.partition(":")[0]
    if cfg["latency"].partition(":")[0] != "measured":
        return True
    if scheme in ("http", "https") and on_this_host(device):
        return farm_spec is not None and farm_spec.partition(":")[0] != "local"
    return scheme != "local"


def farm_spec(latency: Any) -> str | None:
    """The spec a farm device has on its farm (``adb:…``, ``local:…``), if ``latency``
    measures on one."""
    spec = getattr(getattr(latency, "device", None), "info", {}).get("spec")
    return spec if isinstance(spec, str) else None


def device_of(args: argparse.Namespace, latency: str) -> str:
    """What the run's latencies are of: the --device it measures on; a table's spec (its
    latencies were measured elsewhere); a lookup table's own device, or the --device it
    is checked against (same fingerprint) — checked here, once, as the device may be a
    phone the search itself never needs."""
    scheme, _, arg = latency.partition(":")
    if scheme == "table":
        return latency
    if scheme == "lut":
        from mnas.evaluate import make_latency

        if args.device is None:
            return str(make_latency(latency).table.device)
        make_latency(latency, device=args.device)   # ValueError: another fingerprint
    return args.device if args.device is not None else "local:onnxruntime"


def move_device(cfg: dict[str, Any], spec: str) -> str:
    """Point a resumed run at ``spec``; its fingerprint is checked against the run's once
    the latency evaluator has built it (:func:`record_fingerprint`). Returns the old spec."""
    if cfg["latency"].partition(":")[0] != "measured":
        raise ValueError(f"--device is not used by this run's latency ({cfg['latency']})")
    if not cfg.get("device_fingerprint"):
        raise ValueError("this run recorded no device fingerprint (it predates them), so "
                         "--resume cannot tell whether --device is its device")
    old, cfg["device"] = cfg["device"], spec
    return old


def format_offline(spec: str) -> str:
    """The model format of device ``spec`` where it is known without reaching the device
    (a local runtime; a phone's tool, by its spec): else ONNX, the default."""
    from devices.base import get_device

    if spec.partition(":")[0] not in ("local", "adb"):
        return "onnx"       # a farm would have to be asked
    device = get_device(spec)   # connects on first use, not here
    try:
        return device.model_format
    finally:
        device.close()


def record_fingerprint(cfg: dict[str, Any], latency: Any, moved_from: str | None) -> None:
    """Record the measuring device's fingerprint (what ``--resume --device`` checks); a
    resumed run moved to another spec must have found the same device there: the run's
    own reached another way (a farm that moved, a phone on Wi-Fi instead of USB)."""
    from devices.base import Device, changed_keys

    device = getattr(latency, "device", None)
    if not isinstance(device, Device):
        if cfg["latency"].partition(":")[0] == "lut":    # a phone's table: its format
            cfg.setdefault("model_format", format_offline(cfg["device"]))
        return
    new = device.fingerprint()
    # the front's model files and `mnas train`'s export need the format, not the device
    cfg.setdefault("model_format", device.model_format)
    old = cfg.setdefault("device_fingerprint", new)
    differ = changed_keys(old, new)
    if moved_from is not None and differ:
        raise ValueError(f"--device {cfg['device']} is not this run's device {moved_from}: "
                         f"their fingerprints differ in {', '.join(differ)}; latencies "
                         "measured on two devices do not compare, so start a new run")

"""``mnas devices``: the devices this host can measure on, with their fingerprints.

Lists the local runtimes that are installed (``local:<runtime>``), the Android devices
the local adb server knows (``adb devices -l``, when an ``adb`` binary is on the PATH),
the TCP addresses of ``[[adb.device]]`` entries in ``~/.config/mnas/devices.toml`` and the
devices of its ``[[farm.server]]`` entries (device farms: ``mnas farm serve``).
Each phone is fingerprinted (getprop, cpufreq, benchmark tool sha256); one that cannot be
is listed with the reason instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from typing import Any

from mnas.cli.options import doc_help


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list usable devices with their fingerprints",
                       description=doc_help(__doc__, skip_first=True))
    p.add_argument("--json", action="store_true", help='print JSON: {"devices": [...], "notes": [...]}')
    p.add_argument("--adb-key", default=None, metavar="PATH",
                   help="ADB private key (default ~/.android/adbkey, created if missing)")
    p.add_argument("--no-fingerprint", action="store_true",
                   help="list only; do not connect to phones")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for each phone (default 10)")
    p.set_defaults(func=run)


def parse_adb_devices(text: str) -> list[dict[str, str]]:
    """``adb devices -l`` output -> [{"serial", "state", <key>: <value> ...}]."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        # the serial may hold spaces only in pathological cases; the state never does
        parts = line.split()
        states = ("device", "offline", "unauthorized", "recovery", "sideload", "bootloader",
                  "no permissions", "authorizing", "connecting", "host", "rescue")
        idx = next((i for i, p in enumerate(parts) if p in states), None)
        if idx is None or idx == 0:
            continue
        entry = {"serial": " ".join(parts[:idx]), "state": parts[idx]}
        for attr in parts[idx + 1:]:
            k, sep, v = attr.partition(":")
            if sep:
                entry[k] = v
        out.append(entry)
    return out


def adb_server_devices(timeout: float) -> tuple[list[dict[str, str]], str | None]:
    """Devices from the adb server, or ([], reason) when there is no adb binary/server."""
    exe = shutil.which("adb")
    if exe is None:
        return [], "no adb binary on PATH"
    try:
        p = subprocess.run([exe, "devices", "-l"], capture_output=True, text=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"adb devices failed: {e}"
    if p.returncode != 0:
        return [], f"adb devices failed: {(p.stderr or p.stdout).strip()}"
    return parse_adb_devices(p.stdout), None


def _fingerprint(spec: str, fields: dict[str, Any], fingerprint: bool,
                 **options: Any) -> dict[str, Any]:
    from devices.adb import make_adb_device

    row = {"spec": spec, "kind": "adb", "can_pair": False, **fields}
    if not fingerprint:
        row["usable"] = None
        return row
    dev = None
    try:
        dev = make_adb_device(spec, **options)
        row["fingerprint"] = dev.fingerprint()
        row["model_format"] = dev.model_format
        row["usable"] = True
    except (RuntimeError, ValueError, OSError) as e:
        row["usable"], row["error"] = False, str(e)
    finally:
        if dev is not None:
            dev.close()
    return row


def list_devices(adb_key: str | None = None, fingerprint: bool = True,
                 timeout: float = 10.0) -> tuple[list[dict[str, Any]], list[str]]:
    """All devices (rows) and notes on sources that could not be read."""
    from devices.adb import is_tcp
    from devices.base import device_schemes
    from devices.config import adb_entries, load_config
    from devices.local import LocalDevice
    from devices.remote import farm_devices
    from latency.runtimes import RUNTIMES, runtime_names

    device_schemes()  # loads the built-in devices and runtimes (local:litert)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name in runtime_names():
        rt = RUNTIMES[name]()
        if rt.available():
            dev = LocalDevice(f"local:{name}")
            rows.append({"spec": dev.spec, "kind": "local", "usable": True, "can_pair": True,
                         "model_format": dev.model_format, "fingerprint": dev.fingerprint()})
        else:
            notes.append(f"local:{name}: runtime not installed")
    opts: dict[str, Any] = {"retries": 0, "connect_timeout_s": timeout,
                            "command_timeout_s": max(timeout, 30.0)}
    if adb_key:
        opts["key"] = adb_key
    seen = set()
    server, why = adb_server_devices(timeout)
    if why:
        notes.append(f"adb server: {why}")
    for d in server:
        seen.add(d["serial"])
        spec = f"adb:{d['serial']}"
        fields = {"source": "adb server", **{k: v for k, v in d.items() if k != "serial"}}
        if d["state"] != "device":
            rows.append({"spec": spec, "kind": "adb", "usable": False,
                         "error": f"adb state {d['state']}", **fields})
            continue
        transport = "adb-shell" if is_tcp(d["serial"]) else "server"
        rows.append(_fingerprint(spec, fields, fingerprint, transport=transport, **opts))
    for e in adb_entries():
        target = e.get("address")
        if not target or target in seen:
            continue
        seen.add(target)
        rows.append(_fingerprint(f"adb:{target}", {"source": "config"}, fingerprint,
                                 transport="adb-shell", **opts))
    for entry in load_config().get("farm", {}).get("server", []):
        try:
            for r in farm_devices(str(entry["url"]), timeout):
                rows.append({"kind": "farm", "usable": True, "can_pair": r.get("can_pair") is True,
                             "members": list(r.get("members") or [r["farm_spec"]]),
                             "retired": list(r.get("retired") or []),
                             **{k: r.get(k) for k in ("spec", "farm_spec", "model_format",
                                                      "fingerprint", "queued")}})
        except (RuntimeError, ValueError) as e:
            notes.append(f"farm {entry['url']}: {e}")
    return rows, notes


def run(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 86400:     # inf overflowed the adb subprocess's timeout
        raise ValueError(f"--timeout must be in (0, 86400] seconds, got {args.timeout}")
    rows, notes = list_devices(args.adb_key, not args.no_fingerprint, args.timeout)
    from devices.config import config_path

    if os.environ.get("MNAS_DEVICES_CONFIG") and not config_path().exists():  # a typo?
        notes.append(f"MNAS_DEVICES_CONFIG={config_path()} does not exist: no configured "
                     "adb devices or farms")
    if args.json:
        print(json.dumps({"devices": rows, "notes": notes}, indent=1, sort_keys=True))
        return 0
    for r in rows:
        fp = r.get("fingerprint") or {}
        if fp.get("kind") == "local":
            what = f"{fp.get('cpu')} ({fp.get('cores')} cores), {fp.get('runtime_version')}"
        elif fp:
            khz = fp.get("cpu_max_khz") or [0]
            what = (f"{fp.get('model')} [{fp.get('board')}] SDK {fp.get('sdk')}, "
                    f"{len(khz)} cores up to {max(khz) / 1e6:.2f} GHz, "
                    f"{fp.get('runtime')} {fp.get('runtime_version')}")
        else:
            what = r.get("error") or r.get("state", "")
        if r["kind"] == "farm":
            pairs = ", times pairs" if r["can_pair"] else ""
            n, out = len(r["members"]), len(r["retired"])
            pool = f" (a pool of {n}{f', {out} retired' if out else ''})" if n > 1 else ""
            what = f"{r['farm_spec']}{pool} on a farm{pairs}, {r['queued']} queued: {what}"
        status = {True: "ok", False: "UNUSABLE", None: "listed"}[r["usable"]]
        print(f"{r['spec']:<32} {status:<9} {what}")
    for n in notes:
        print(f"  note: {n}")
    return 0

"""The user's device configuration: ``~/.config/mnas/devices.toml``.

``$MNAS_DEVICES_CONFIG`` points elsewhere. The file is optional; an example::

    [adb]                          # defaults for every adb:<...> device
    key = "~/.android/adbkey"      # adb's own key (created if missing)
    benchmark_binary = "~/android/benchmark_model"   # pushed when a phone lacks it
    max_temp_c = 45.0
    retries = 3

    [[adb.device]]                 # listed by `mnas devices`; overrides the defaults
    address = "192.168.1.20:5555"  # Wi-Fi ADB (TCP)

    [[adb.device]]
    serial = "R58M1234ABC"         # USB
    tool = "onnxruntime_perf_test"
    benchmark_binary = "~/android/onnxruntime_perf_test"

    [[farm.server]]                # a device farm (`mnas farm serve`; devices.remote)
    url = "http://lab-mac:8470"
    token_file = "~/.config/mnas/lab-token"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any


def config_path() -> Path:
    env = os.environ.get("MNAS_DEVICES_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".config"
    return root / "mnas" / "devices.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The parsed file, or ``{}`` when there is none. ValueError naming the file when it
    is not valid TOML or its ``[adb]`` table has the wrong shape."""
    p = Path(path) if path is not None else config_path()
    if not p.is_file():
        if p.is_dir():      # a missing file is no configured devices; a folder is a mistake
            raise ValueError(f"device config {p} is a folder: point MNAS_DEVICES_CONFIG at "
                             "a devices.toml file")
        return {}
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"device config {p} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"adb", "farm"})
    if unknown:     # a typo would otherwise drop its devices without a word
        raise ValueError(f"device config {p}: unknown table [{unknown[0]}]; valid: [adb], "
                         "[[adb.device]], [[farm.server]]")
    adb = data.get("adb", {})
    if not isinstance(adb, dict) or not isinstance(adb.get("device", []), list):
        raise ValueError(f"device config {p}: [adb] must be a table and [[adb.device]] a "
                         "list of tables")
    for entry in adb.get("device", []):
        if not isinstance(entry, dict) or not any(
                isinstance(entry.get(k), str) and entry[k] for k in ("address", "serial")):
            raise ValueError(f"device config {p}: every [[adb.device]] needs an address "
                             "(\"host:port\") or a serial, as a string")
    farm = data.get("farm", {})
    if isinstance(farm, dict) and set(farm) - {"server"}:
        raise ValueError(f"device config {p}: unknown key farm.{sorted(set(farm) - {'server'})[0]}"
                         "; valid: [[farm.server]]")
    if not isinstance(farm, dict) or not isinstance(farm.get("server", []), list) or not all(
            isinstance(e, dict) and str(e.get("url", "")).startswith(("http://", "https://"))
            for e in farm.get("server", [])):
        raise ValueError(f"device config {p}: every [[farm.server]] needs a url "
                         "(http://HOST:PORT or https://...)")
    return data


def adb_entries(config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The ``[[adb.device]]`` entries (each with ``address`` or ``serial``)."""
    cfg = load_config() if config is None else config
    return [dict(e) for e in cfg.get("adb", {}).get("device", [])]


def adb_options(target: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options for one ADB target (serial or host:port): ``[adb]`` defaults overridden by
    its ``[[adb.device]]`` entry."""
    cfg = load_config() if config is None else config
    adb = cfg.get("adb", {})
    out = {k: v for k, v in adb.items() if k != "device"}
    for entry in adb.get("device", []):
        if target in (entry.get("address"), entry.get("serial")):
            out.update({k: v for k, v in entry.items() if k not in ("address", "serial")})
    return out

"""``adb:<serial>`` / ``adb:<host>:<port>``: an Android phone measured with its own tools.

A measurement pushes the model to the device folder (``/data/local/tmp``), pushes the
``benchmark_model`` binary too when the phone lacks it (``benchmark_binary=PATH``), pins
the run to the fastest cores with ``taskset`` (clusters from
``/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq``, enough cores for the thread
count), runs::

    taskset MASK /data/local/tmp/benchmark_model --graph=MODEL --num_threads=1
        --warmup_runs=W --num_runs=R

(or ``onnxruntime_perf_test -e cpu -m times -r R -x 1 -I -s MODEL`` for ``.onnx`` with
``tool=onnxruntime_perf_test``), parses the output (:mod:`devices.android`) and removes
what it pushed. Every command line is built with :func:`shlex.join`: serials, paths and
file names never reach the phone's shell unquoted.

Samples: the tools print only summaries, never per-inference times, so a Measurement's
``samples_ms`` holds one value per tool *invocation* - that invocation's median (its mean
when the tool prints no median) - and ``sample_kind`` says so (``invocation_median`` /
``invocation_mean``); ``runs`` counts the timed inferences of all invocations. At least
``min_invocations`` invocations of ``ceil(settings.runs / min_invocations)`` runs are
made, then more until the invocations' median is pinned to ±``settings.rel_ci`` (order
statistic CI, as on the host) or ``max_runs`` / ``max_seconds`` is reached; otherwise the
result is flagged noisy.

Transport: ``adb-shell`` - TCP for ``host:port``, USB (libusb) for a serial - with adb's
own RSA key (``~/.android/adbkey``, created with adb-shell's keygen when missing) unless
``key=PATH``; for a serial that the local adb server holds, the ``adb`` binary is used
instead (``transport=server``; arguments as a list, never a shell string).

Hygiene: the fingerprint is getprop's model / board / SDK, every core's max frequency and
governor, and the tool's sha256, so cached results never cross phones, governors or tool
builds. Before each measurement the hottest ``/sys/class/thermal/thermal_zone*/temp`` is
read; above ``max_temp_c`` it waits (at most ``cool_timeout_s``) for the phone to cool and
flags the result noisy if it did not. A dropped connection is retried ``retries`` times
with exponential back-off from ``backoff_s``; then RuntimeError with the reason (the
search records a failed trial and goes on).

Options come from the constructor, the spec's query (``adb:host:5555?retries=1&key=K``)
and ``~/.config/mnas/devices.toml`` (:mod:`devices.config`), in that order of precedence.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from devices import android
from devices.base import Device, DeviceUnreachable, register_device
from devices.config import adb_options
from latency.export import file_sha256
from latency.measurement import Measurement, MeasureSettings
from latency.protocol import rel_halfwidth

TOOLS = {"benchmark_model": "tflite", "onnxruntime_perf_test": "onnx"}
_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\s]+):(?P<port>\d{1,5})$")
#: option -> type, for values from the spec query or the config file
OPTIONS: dict[str, type] = {
    "key": str, "benchmark_binary": str, "device_dir": str, "tool": str, "retries": int,
    "backoff_s": float, "max_temp_c": float, "cool_timeout_s": float, "cool_poll_s": float,
    "min_invocations": int, "cores": str, "command_timeout_s": float,
    "connect_timeout_s": float, "transport": str}


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``adb:TARGET[?k=v&...]`` -> (TARGET, options). ValueError when malformed."""
    if not spec.startswith("adb:"):
        raise ValueError(f"not an adb device spec: {spec!r}; valid: adb:<serial>, "
                         "adb:<host>:<port>")
    target, _, query = spec[4:].partition("?")
    if not target:
        raise ValueError(f"adb device spec {spec!r} names no device; valid: adb:<serial>, "
                         "adb:<host>:<port>")
    opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    return target, opts


def is_tcp(target: str) -> bool:
    return bool(_HOSTPORT.match(target))


def default_key_path() -> Path:
    return Path.home() / ".android" / "adbkey"


def load_signer(key: str | Path | None = None) -> Any:
    """adb-shell signer for ``key`` (default ``~/.android/adbkey``), creating the pair
    with adb-shell's keygen when the file does not exist (as adb does)."""
    from adb_shell.auth.keygen import keygen, write_public_keyfile
    from adb_shell.auth.sign_cryptography import CryptographySigner

    path = Path(key).expanduser() if key else default_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        keygen(str(path))
        path.chmod(0o600)
    elif not Path(f"{path}.pub").exists():
        write_public_keyfile(str(path), f"{path}.pub")
    return CryptographySigner(str(path))


def _connection_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, EOFError, ConnectionError, socket.timeout]
    with contextlib.suppress(ImportError):
        from adb_shell import exceptions as ex

        errs += [ex.AdbConnectionError, ex.AdbTimeoutError, ex.TcpTimeoutException,
                 ex.InvalidResponseError, ex.InvalidCommandError, ex.InvalidChecksumError,
                 ex.UsbReadFailedError, ex.UsbWriteFailedError, ex.DeviceAuthError,
                 ex.PushFailedError, ex.UsbDeviceNotFoundError]
    return tuple(errs)


class _ShellConn:
    """adb-shell connection (TCP or USB); closed sockets raise instead of spinning."""

    def __init__(self, target: str, signer: Any, connect_timeout_s: float,
                 command_timeout_s: float) -> None:
        from adb_shell.adb_device import AdbDevice as _Dev
        from adb_shell.transport.tcp_transport import TcpTransport

        class _EofTcp(TcpTransport):
            def connect(self, transport_timeout_s: Any) -> None:
                super().connect(transport_timeout_s)
                # header and payload are separate writes: without this, Nagle's algorithm
                # and the peer's delayed ACK add ~40 ms to every command
                self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def bulk_read(self, numbytes: int, transport_timeout_s: Any) -> bytes:
                data = super().bulk_read(numbytes, transport_timeout_s)
                if numbytes and not data:
                    raise ConnectionResetError("the device closed the connection")
                return data

        self.timeout = command_timeout_s
        if is_tcp(target):
            m = _HOSTPORT.match(target)
            assert m is not None
            transport: Any = _EofTcp(m.group("host").strip("[]"), int(m.group("port")))
            self.dev = _Dev(transport, default_transport_timeout_s=command_timeout_s)
        else:
            from adb_shell.adb_device import AdbDeviceUsb

            self.dev = AdbDeviceUsb(serial=target, default_transport_timeout_s=command_timeout_s)
        self.dev.connect(rsa_keys=[signer], transport_timeout_s=connect_timeout_s,
                         auth_timeout_s=connect_timeout_s, read_timeout_s=connect_timeout_s)

    def shell(self, argv: list[str]) -> str:
        return self.dev.shell(shlex.join(argv), read_timeout_s=self.timeout,
                              timeout_s=self.timeout)

    def push(self, local: Path, remote: str, mode: int) -> None:
        self.dev.push(str(local), remote, st_mode=0o100000 | mode, read_timeout_s=self.timeout)

    def pull(self, remote: str, local: Path) -> None:
        self.dev.pull(remote, str(local), read_timeout_s=self.timeout)

    def exists(self, remote: str) -> bool:
        return self.dev.stat(remote)[0] != 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dev.close()


class _ServerConn:
    """The local adb server via the ``adb`` binary (argument lists, no local shell)."""

    def __init__(self, target: str, command_timeout_s: float) -> None:
        exe = shutil.which("adb")
        if exe is None:
            raise ConnectionError("no adb binary on PATH")
        self.base, self.timeout = [exe, "-s", target], command_timeout_s
        state = self._run(["get-state"]).strip()
        if state != "device":
            raise ConnectionError(f"adb server reports {target!r} as {state or 'absent'}")

    def _run(self, args: list[str]) -> str:
        p = subprocess.run(self.base + args, capture_output=True, text=True,
                           timeout=self.timeout, check=False)
        if p.returncode != 0 and args[0] != "shell":
            raise ConnectionError(f"adb {args[0]} failed: {(p.stderr or p.stdout).strip()}")
        return p.stdout + p.stderr

    def shell(self, argv: list[str]) -> str:
        return self._run(["shell", shlex.join(argv)])  # adb sends this one string as is

    def push(self, local: Path, remote: str, mode: int) -> None:
        self._run(["push", str(local), remote])

    def pull(self, remote: str, local: Path) -> None:
        self._run(["pull", remote, str(local)])

    def exists(self, remote: str) -> bool:
        return "No such file" not in self.shell(["ls", remote])

    def close(self) -> None:
        pass


class AdbDevice(Device):
    """An Android phone over ADB (see the module doc for the protocol and options)."""

    def __init__(self, target: str, *, key: str | None = None,
                 benchmark_binary: str | None = None, device_dir: str = "/data/local/tmp",
                 tool: str = "benchmark_model", retries: int = 3, backoff_s: float = 1.0,
                 max_temp_c: float | None = 45.0, cool_timeout_s: float = 120.0,
                 cool_poll_s: float = 5.0, min_invocations: int = 3, cores: str | None = None,
                 command_timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 transport: str = "auto") -> None:
        if not target or any(c in target for c in "\0\n"):
            raise ValueError(f"invalid adb target {target!r}")
        if tool not in TOOLS:
            raise ValueError(f"tool {tool!r} invalid; valid: {', '.join(TOOLS)}")
        if transport not in ("auto", "adb-shell", "server"):
            raise ValueError(f"transport {transport!r} invalid; valid: auto, adb-shell, server")
        if retries < 0 or backoff_s < 0 or min_invocations < 1:
            raise ValueError("retries and backoff_s must be >= 0, min_invocations >= 1")
        if not device_dir.startswith("/"):
            raise ValueError(f"device_dir must be an absolute device path, got {device_dir!r}")
        self.target, self.spec = target, f"adb:{target}"
        self.tool, self.model_format = tool, TOOLS[tool]
        self.key, self.transport = key, transport
        self.benchmark_binary = Path(benchmark_binary).expanduser() if benchmark_binary else None
        if self.benchmark_binary is not None and not self.benchmark_binary.is_file():
            raise FileNotFoundError(2, "benchmark binary not found", str(self.benchmark_binary))
        self.device_dir = device_dir.rstrip("/") or "/"
        self.remote_tool = f"{self.device_dir}/{tool}"
        self.retries, self.backoff_s = retries, backoff_s
        self.max_temp_c, self.cool_timeout_s, self.cool_poll_s = max_temp_c, cool_timeout_s, \
            cool_poll_s
        self.min_invocations = min_invocations
        self.cores = [int(c) for c in re.split(r"[,\s]+", cores.strip())] if cores else None
        self.command_timeout_s, self.connect_timeout_s = command_timeout_s, connect_timeout_s
        self._conn: Any = None
        self._fp: dict[str, Any] | None = None
        self._freqs: dict[int, int] = {}
        self._zones: list[int] | None = None
        self._pushed_tool = False
        self.last_temperature_c: float | None = None

    def __repr__(self) -> str:
        return f"AdbDevice({self.target!r})"

    # -- connection --------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is None:
            if self.transport == "server" or (self.transport == "auto" and not is_tcp(
                    self.target) and _usb_unavailable()):
                self._conn = _ServerConn(self.target, self.command_timeout_s)
                return self._conn
            try:
                self._conn = _ShellConn(self.target, load_signer(self.key),
                                        self.connect_timeout_s, self.command_timeout_s)
            except ImportError as e:
                raise RuntimeError(f"adb device {self.target}: adb-shell is not usable here "
                                   f"({e}); pip install 'mnas[adb]'") from None
            except _connection_errors():
                # a USB phone the local adb server holds cannot be claimed: go through it
                if self.transport != "auto" or is_tcp(self.target) or not shutil.which("adb"):
                    raise
                self._conn = _ServerConn(self.target, self.command_timeout_s)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _retrying(self, what: str, fn: Any) -> Any:
        errors = _connection_errors()
        last: BaseException | None = None
        connecting = False
        for attempt in range(self.retries + 1):
            try:
                connecting = True
                conn = self._connect()
                connecting = False
                return fn(conn)
            except errors as e:
                last = e
                self._disconnect()
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2 ** attempt)
        # no connection: the phone is gone; lost mid-command: maybe the model's doing
        error = DeviceUnreachable if connecting else RuntimeError
        raise error(f"adb device {self.target}: {what} failed after "
                           f"{self.retries + 1} attempts (unreachable or connection lost): "
                           f"{last.__class__.__name__}: {last}") from last

    def shell(self, argv: list[str]) -> str:
        """Run one command on the phone (every argument quoted), with retries."""
        return self._retrying(f"'{argv[0]}'", lambda c: c.shell(list(argv)))

    def close(self) -> None:
        if self._pushed_tool and self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.shell(["rm", "-f", self.remote_tool])
            self._pushed_tool = False
        self._disconnect()

    # -- fingerprint -------------------------------------------------------------------
    def _read_cpus(self, c: Any) -> tuple[dict[int, int], dict[int, str]]:
        base = "/sys/devices/system/cpu"
        freqs, govs = {}, {}
        for cpu in android.parse_cpu_list(c.shell(["ls", base])):
            f = android.parse_int(c.shell(["cat", f"{base}/cpu{cpu}/cpufreq/cpuinfo_max_freq"]))
            if f is not None:
                freqs[cpu] = f
                govs[cpu] = c.shell(["cat", f"{base}/cpu{cpu}/cpufreq/scaling_governor"]).strip()
        return freqs, govs

    def _tool_sha256(self, c: Any) -> str:
        out = c.shell(["sha256sum", self.remote_tool])
        m = re.match(r"^([0-9a-f]{64})\s", out.strip())
        if m:
            return m.group(1)
        with tempfile.TemporaryDirectory(prefix="mnas-adb-") as tmp:  # no sha256sum: pull
            local = Path(tmp) / "tool"
            c.pull(self.remote_tool, local)
            return file_sha256(local)

    def _ensure_tool(self, c: Any) -> None:
        if c.exists(self.remote_tool):
            return
        if self.benchmark_binary is None:
            raise RuntimeError(f"adb device {self.target} has no {self.remote_tool}; give "
                               f"benchmark_binary=PATH (a {self.tool} built for the phone's "
                               "ABI) to push it")
        c.push(self.benchmark_binary, self.remote_tool, 0o755)
        c.shell(["chmod", "755", self.remote_tool])
        self._pushed_tool = True

    def fingerprint(self) -> dict[str, Any]:
        """getprop model/board/SDK, per-core max kHz and governor, the tool's sha256."""
        if self._fp is None:
            def read(c: Any) -> dict[str, Any]:
                props = android.parse_getprop(c.shell(["getprop"]))
                freqs, govs = self._read_cpus(c)
                self._ensure_tool(c)
                sha = self._tool_sha256(c)
                self._freqs = freqs
                return {"kind": "android", "model": props.get("ro.product.model", ""),
                        "board": props.get("ro.board.platform")
                        or props.get("ro.product.board", ""),
                        "sdk": props.get("ro.build.version.sdk", ""),
                        "cpu_max_khz": [freqs[k] for k in sorted(freqs)],
                        "governors": [govs[k] for k in sorted(govs)],
                        "runtime": self.tool, "runtime_version": sha[:16], "tool_sha256": sha}
            self._fp = self._retrying("reading the fingerprint", read)
        return dict(self._fp)

    def refresh_fingerprint(self) -> dict[str, Any]:
        self._fp = None
        return self.fingerprint()

    # -- thermal -----------------------------------------------------------------------
    def temperature_c(self) -> float | None:
        """The hottest plausible thermal zone reading (°C), None when none is readable."""
        def read(c: Any) -> float | None:
            if self._zones is None:
                self._zones = android.parse_thermal_zones(c.shell(["ls", "/sys/class/thermal"]))
            if not self._zones:
                return None
            paths = [f"/sys/class/thermal/thermal_zone{z}/temp" for z in self._zones]
            return android.max_temperature_c(c.shell(["cat", *paths]))
        return self._retrying("reading the temperature", read)

    def wait_cool(self) -> bool:
        """Wait (bounded) until the phone is at most ``max_temp_c``; False if it stayed hot."""
        if self.max_temp_c is None:
            return True
        deadline = time.monotonic() + self.cool_timeout_s
        while True:
            t = self.last_temperature_c = self.temperature_c()
            if t is None or t <= self.max_temp_c:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.cool_poll_s, max(0.0, deadline - time.monotonic())))

    # -- measuring ---------------------------------------------------------------------
    def _argv(self, remote_model: str, mask: str, threads: int, warmup: int, runs: int
              ) -> list[str]:
        if self.tool == "benchmark_model":
            cmd = [self.remote_tool, f"--graph={remote_model}", f"--num_threads={threads}",
                   f"--warmup_runs={warmup}", f"--num_runs={runs}"]
        else:
            cmd = [self.remote_tool, "-e", "cpu", "-m", "times", "-r", str(runs), "-x",
                   str(threads), "-I", "-s", remote_model]
        return ["taskset", mask, *cmd]

    def _check_model(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(2, "model file not found", str(path))
        if self.model_format == "tflite":
            from latency.tflite import is_tflite

            if not is_tflite(path):
                raise ValueError(f"{path} is not a TFLite model; {self.tool} runs .tflite files")
        else:
            from latency.export import check_onnx

            check_onnx(path)

    def measure(self, model_path: str | Path, settings: MeasureSettings) -> Measurement:
        if settings.clock != "wall":
            raise ValueError(f"adb devices are timed by {self.tool} on the phone: clock "
                             f"must be 'wall', got {settings.clock!r}")
        path = Path(model_path)
        self._check_model(path)
        sha = file_sha256(path)
        fp = self.fingerprint()
        cool = self.wait_cool()
        remote = f"{self.device_dir}/mnas-{sha[:12]}-{path.name}"
        per = max(1, math.ceil(settings.runs / self.min_invocations))
        cores = self.cores or android.big_cores(self._freqs, settings.threads)
        mask = android.cpu_mask(cores)
        parse = (android.parse_benchmark_model if self.tool == "benchmark_model"
                 else android.parse_ort_perf_test)

        def run(c: Any) -> list[android.BenchmarkResult]:
            self._ensure_tool(c)
            c.push(path, remote, 0o644)
            results: list[android.BenchmarkResult] = []
            t0 = time.monotonic()
            try:
                while True:
                    out = c.shell(self._argv(remote, mask, settings.threads, settings.warmup, per))
                    try:
                        results.append(parse(out))
                    except ValueError as e:
                        raise RuntimeError(f"{self.tool} failed on adb device {self.target}: "
                                           f"{e}") from None
                    centers = [r.center_ms for r in results]
                    total = sum(r.count or per for r in results)
                    if len(results) >= self.min_invocations and (
                            rel_halfwidth(centers) <= settings.rel_ci
                            or total >= settings.max_runs
                            or time.monotonic() - t0 >= settings.max_seconds):
                        return results
            finally:
                with contextlib.suppress(*_connection_errors()):
                    c.shell(["rm", "-f", remote])

        results = self._retrying(f"measuring {path.name}", run)
        kinds = {r.center_kind for r in results}
        m = Measurement.from_samples(
            [r.center_ms for r in results], warmup=settings.warmup, threads=settings.threads,
            runtime=self.tool, runtime_version=fp["runtime_version"], model_sha256=sha,
            device=self.spec, fingerprint=fp, rel_ci_goal=settings.rel_ci)
        return m.with_(runs=sum(r.count or per for r in results),
                       sample_kind="invocation_median" if kinds == {"median"}
                       else "invocation_mean", noisy=m.noisy or not cool)


def _usb_unavailable() -> bool:
    """True when USB through adb-shell cannot work here (no libusb) but an adb binary can."""
    try:
        import usb1  # noqa: F401
    except ImportError:
        return shutil.which("adb") is not None
    return False


def make_adb_device(spec: str, **overrides: Any) -> AdbDevice:
    """An :class:`AdbDevice` from a spec, the config file and ``overrides``."""
    target, query = split_spec(spec)
    opts: dict[str, Any] = adb_options(target)
    opts.update(query)
    opts.update(overrides)
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown adb option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(OPTIONS))}")
    typed: dict[str, Any] = {}
    for k, v in opts.items():
        if k == "max_temp_c" and str(v).lower() in ("none", ""):
            typed[k] = None
            continue
        try:
            typed[k] = OPTIONS[k](v)
        except (TypeError, ValueError):
            raise ValueError(f"adb option {k}={v!r}: expected {OPTIONS[k].__name__}") from None
    return AdbDevice(target, **typed)


@register_device("adb", "adb:<serial> | adb:<host>:<port>")
def _adb(spec: str) -> Device:
    return make_adb_device(spec)

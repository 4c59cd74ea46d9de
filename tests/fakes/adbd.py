"""A loopback ADB daemon for tests: the real wire protocol on a TCP port, a phone's shell.

Speaks ADB's transport protocol as ``adbd`` does over TCP (24-byte headers; CNXN, AUTH,
OPEN, OKAY, WRTE, CLSE; one WRTE in flight per stream), the legacy ``shell:`` service and
the ``sync:`` service (STAT, LIST, SEND/DATA/DONE, RECV, QUIT; replies OKAY/FAIL/DATA/DONE).
Debian's ``adb`` client and ``adb-shell`` both talk to it.

AUTH (``auth=``): ``"verify"`` (default) answers CNXN with an AUTH token, verifies
signatures against the keys it knows, and accepts a new public key as if the user tapped
"Always allow" (so the first connection goes token -> signature rejected -> public key ->
CNXN, the next one token -> signature -> CNXN, as on a phone); ``"lenient"`` accepts any
signature; ``"none"`` skips AUTH.

The phone: files live in a per-instance folder (``root``) holding ``/sys`` cpufreq and
thermal files and ``/data/local/tmp``. The shell parses the command line with
:mod:`shlex` and runs only whitelisted commands in Python - ``getprop``, ``cat``, ``ls``,
``rm``, ``mkdir``, ``chmod``, ``echo``, ``sha256sum``, ``taskset MASK CMD...`` and the
pushed ``benchmark_model`` / ``onnxruntime_perf_test``, which time the pushed model on
this host with LiteRT / ONNX Runtime and print the real tools' output. A command line
with an *unquoted* shell metacharacter (``; | & $ ` < > ( )`` or a newline) is refused
and recorded in :attr:`FakeAdbd.refused`: a client that builds shell strings from
unquoted input fails the tests instead of being silently "injected".

``drop_benchmarks=N`` closes the connection in the middle of the first N benchmark
invocations (a cable pulled mid-measurement).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import queue
import shlex
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

A_CNXN, A_AUTH, A_OPEN, A_OKAY = b"CNXN", b"AUTH", b"OPEN", b"OKAY"
A_WRTE, A_CLSE = b"WRTE", b"CLSE"
VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_CHUNK = 64 * 1024

PROPS = {"ro.product.model": "Fake Pixel", "ro.product.manufacturer": "Google",
         "ro.product.board": "fakeboard", "ro.board.platform": "fake8150",
         "ro.build.version.sdk": "33", "ro.build.version.release": "13",
         "ro.product.cpu.abi": "arm64-v8a"}
#: a 1+3+4 phone (kHz)
CPUS = {0: 1785600, 1: 1785600, 2: 1785600, 3: 1785600,
        4: 2419200, 5: 2419200, 6: 2419200, 7: 2841600}
_META = set(";|&$`<>()\n")


def unquoted_metachar(cmd: str) -> str | None:
    """The first shell metacharacter that ``sh`` would interpret in ``cmd``, or None."""
    quote = None
    i = 0
    while i < len(cmd):
        ch = cmd[i]
        if quote == "'":
            if ch == "'":
                quote = None
        elif ch == "\\":
            i += 1
        elif quote == '"':
            if ch == '"':
                quote = None
            elif ch in "$`":
                return ch
        elif ch in "'\"":
            quote = ch
        elif ch in _META:
            return ch
        i += 1
    return None


def _header(cmd: bytes, arg0: int, arg1: int, data: bytes) -> bytes:
    c = struct.unpack("<I", cmd)[0]
    return struct.pack("<6I", c, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                       c ^ 0xFFFFFFFF) + data


def parse_android_pubkey(blob: bytes) -> Any:
    """An ``adbkey.pub`` (base64 of Android's RSAPublicKey struct) -> a cryptography key."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    raw = base64.b64decode(blob.split(b"\0")[0].split()[0])
    words = struct.unpack_from("<I", raw, 0)[0]
    n = int.from_bytes(raw[8:8 + 4 * words], "little")
    e = struct.unpack_from("<I", raw, 8 + 8 * words)[0]
    return RSAPublicNumbers(e, n).public_key()


def _verify(key: Any, token: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    try:  # adb signs the token as if it were a SHA-1 digest
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False


class _Dropped(Exception):
    """The daemon cut the connection on purpose."""


class _Stream:
    def __init__(self, conn: _Connection, local: int, remote: int) -> None:
        self.conn, self.local, self.remote = conn, local, remote
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.okay = threading.Semaphore(0)
        self.closed = False
        self._buf = b""

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), self.conn.max_payload):
            if self.closed:
                return
            self.conn.send(A_WRTE, self.local, self.remote, data[i:i + self.conn.max_payload])
            if not self.okay.acquire(timeout=30):
                raise ConnectionError("host did not acknowledge WRTE")

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.inbox.get(timeout=60)
            if chunk is None:
                raise EOFError("stream closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.send(A_CLSE, self.local, self.remote, b"")


class _Connection:
    def __init__(self, daemon: FakeAdbd, sock: socket.socket) -> None:
        self.d, self.sock = daemon, sock
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.token = b""
        self.online = False

    def send(self, cmd: bytes, a0: int, a1: int, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(_header(cmd, a0, a1, data))

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def serve(self) -> None:
        try:
            while True:
                cmd, a0, a1, length, _, _ = struct.unpack("<6I", self.recv_exact(24))
                data = self.recv_exact(length) if length else b""
                self.handle(struct.pack("<I", cmd), a0, a1, data)
        except (EOFError, OSError, _Dropped):
            pass
        finally:
            for s in list(self.streams.values()):
                s.closed = True
                s.inbox.put(None)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _banner(self) -> bytes:
        p = self.d.props
        return (f"device::ro.product.name={p['ro.product.board']};ro.product.model="
                f"{p['ro.product.model']};ro.product.device={p['ro.product.board']};"
                "features=").encode()

    def _online(self) -> None:
        self.online = True
        self.send(A_CNXN, VERSION, MAX_PAYLOAD, self._banner())

    def _challenge(self) -> None:
        self.token = os.urandom(20)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def handle(self, cmd: bytes, a0: int, a1: int, data: bytes) -> None:
        d = self.d
        if cmd == A_CNXN:
            self.max_payload = max(4096, min(a1, MAX_PAYLOAD))
            d.events.append(("cnxn", data.split(b"\0")[0].decode(errors="replace")))
            if d.auth == "none":
                self._online()
            else:
                self._challenge()
        elif cmd == A_AUTH:
            if a0 == AUTH_SIGNATURE:
                if d.auth == "lenient" or any(_verify(k, self.token, data) for k in d.known_keys):
                    d.events.append(("auth", "signature"))
                    self._online()
                else:
                    self._challenge()  # unknown key: the host then offers its public key
            elif a0 == AUTH_RSAPUBLICKEY:
                with contextlib.suppress(Exception):
                    d.known_keys.append(parse_android_pubkey(data))
                d.events.append(("auth", "publickey"))
                self._online()
        elif not self.online:
            return  # nothing before the connection is up, as adbd
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode(errors="replace")
            local, self.next_id = self.next_id, self.next_id + 1
            s = _Stream(self, local, a0)
            self.streams[local] = s
            self.send(A_OKAY, local, a0, b"")
            threading.Thread(target=self.d._service, args=(self, s, service),
                             daemon=True).start()
        elif cmd == A_OKAY:
            s = self.streams.get(a1)
            if s is not None:
                s.okay.release()
        elif cmd == A_WRTE:
            s = self.streams.get(a1)
            if s is not None and not s.closed:
                s.inbox.put(data)
                self.send(A_OKAY, s.local, s.remote, b"")
        elif cmd == A_CLSE:
            s = self.streams.pop(a1, None)
            if s is not None:
                s.inbox.put(None)
                s.close()  # replies CLSE unless this side closed first


class FakeAdbd:
    """The daemon. ``with FakeAdbd() as d: ... d.port ...`` or :func:`fake_adbd`.

    Options: ``props`` (getprop), ``cpus`` (core -> max kHz), ``governor``,
    ``temps_c`` (per thermal zone), ``cool_per_read_c`` (a zone cools by this much each
    time it is read), ``benchmark_format`` (``modern`` | ``no_percentiles`` | ``legacy`` |
    ``summary``), ``preinstalled`` (a ``benchmark_model`` already in /data/local/tmp),
    ``drop_benchmarks``, ``auth``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, auth: str = "verify", props: dict[str, str] | None = None,
                 cpus: dict[int, int] | None = None, governor: str = "schedutil",
                 temps_c: tuple[float, ...] = (36.5, 38.0), cool_per_read_c: float = 0.0,
                 benchmark_format: str = "modern", preinstalled: bool = False,
                 drop_benchmarks: int = 0) -> None:
        if auth not in ("verify", "lenient", "none"):
            raise ValueError(f"auth {auth!r} invalid; valid: verify, lenient, none")
        if benchmark_format not in ("modern", "no_percentiles", "legacy", "summary"):
            raise ValueError(f"benchmark_format {benchmark_format!r} invalid")
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="adbd-")
        self.root = Path(root if root is not None else self._tmp.name).resolve()
        self.host, self.auth = host, auth
        self.props = {**PROPS, **(props or {})}
        self.cpus = dict(CPUS if cpus is None else cpus)
        self.cool_per_read_c = cool_per_read_c
        self.benchmark_format = benchmark_format
        self.drop_benchmarks = drop_benchmarks
        self.known_keys: list[Any] = []
        self.events: list[tuple[str, str]] = []
        self.commands: list[list[str]] = []  # every shell argv run, in order
        self.refused: list[str] = []         # command lines refused (unquoted metachar)
        self.benchmarks = 0
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self._conns: list[_Connection] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._make_fs(governor, temps_c, preinstalled)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeAdbd:
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # a closed listener does not wake accept() on Linux
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        for c in self._conns:
            c.drop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FakeAdbd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the virtual filesystem ------------------------------------------------------------
    def path(self, device_path: str) -> Path:
        """Host path of a device path; ValueError for paths outside the device."""
        if not device_path.startswith("/"):
            device_path = "/data/local/tmp/" + device_path  # the shell's working directory
        norm = posixpath.normpath(device_path)
        p = (self.root / norm.lstrip("/")).resolve()
        if p != self.root and self.root not in p.parents:
            raise ValueError(f"{device_path}: outside the device")
        return p

    def _make_fs(self, governor: str, temps_c: tuple[float, ...], preinstalled: bool) -> None:
        for c, khz in self.cpus.items():
            base = self.path(f"/sys/devices/system/cpu/cpu{c}/cpufreq")
            base.mkdir(parents=True, exist_ok=True)
            (base / "cpuinfo_max_freq").write_text(f"{khz}\n")
            (base / "scaling_governor").write_text(f"{governor}\n")
        for d in ("cpufreq", "cpuidle"):
            self.path(f"/sys/devices/system/cpu/{d}").mkdir(parents=True, exist_ok=True)
        self.path("/sys/devices/system/cpu/online").write_text(f"0-{max(self.cpus)}\n")
        for z, t in enumerate(temps_c):
            zone = self.path(f"/sys/class/thermal/thermal_zone{z}")
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "temp").write_text(f"{int(t * 1000)}\n")
            (zone / "type").write_text(f"zone{z}\n")
        self.path("/sys/class/thermal/cooling_device0").mkdir(parents=True, exist_ok=True)
        self.path("/data/local/tmp").mkdir(parents=True, exist_ok=True)
        if preinstalled:
            b = self.path("/data/local/tmp/benchmark_model")
            b.write_bytes(b"\x7fELF fake benchmark_model build 2.16\n")
            b.chmod(0o755)

    # -- services --------------------------------------------------------------------------
    def _service(self, conn: _Connection, s: _Stream, service: str) -> None:
        try:
            if service.startswith("shell:"):
                s.write(self.shell(service[len("shell:"):], conn).encode())
            elif service.startswith("sync:"):
                self._sync(s)
            else:
                s.write(f"FAIL: unknown service {service}".encode())
            s.close()
        except _Dropped:
            conn.drop()
        except (EOFError, OSError, ConnectionError, queue.Empty):
            with contextlib.suppress(OSError):
                s.close()

    def _sync(self, s: _Stream) -> None:
        while True:
            try:
                head = s.read(8)
            except EOFError:
                return
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"QUIT":
                return
            arg = s.read(n) if n and cmd != b"DONE" else b""
            if cmd == b"STAT":
                self.events.append(("sync", f"STAT {arg.decode()}"))
                s.write(b"STAT" + struct.pack("<3I", *self._stat(arg.decode())))
            elif cmd == b"LIST":
                s.write(self._list(arg.decode()))
            elif cmd == b"SEND":
                self._recv_file(s, arg.decode())
            elif cmd == b"RECV":
                self.events.append(("sync", f"RECV {arg.decode()}"))
                self._send_file(s, arg.decode())
            else:
                s.write(b"FAIL" + struct.pack("<I", 15) + b"unknown request")
                return

    def _stat(self, path: str) -> tuple[int, int, int]:
        try:
            st = self.path(path).stat()
        except (OSError, ValueError):
            return (0, 0, 0)
        return (st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime))

    def _list(self, path: str) -> bytes:
        out = b""
        with contextlib.suppress(OSError, ValueError):
            for child in sorted(self.path(path).iterdir()):
                st = child.stat()
                name = child.name.encode()
                out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size, int(st.st_mtime),
                                             len(name)) + name
        return out + b"DONE" + struct.pack("<4I", 0, 0, 0, 0)

    def _recv_file(self, s: _Stream, spec: str) -> None:
        path, _, mode = spec.rpartition(",")
        data = b""
        while True:
            head = s.read(8)
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"DATA":
                data += s.read(n)
            elif cmd == b"DONE":
                break
            else:
                s.write(b"FAIL" + struct.pack("<I", 16) + b"protocol failure")
                return
        try:
            target = self.path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(int(mode or "420") & 0o777)
        except (OSError, ValueError) as e:
            msg = f"{path}: {e}".encode()
            s.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            return
        self.events.append(("sync", f"SEND {path}"))
        s.write(b"OKAY" + struct.pack("<I", 0))

    def _send_file(self, s: _Stream, path: str) -> None:
        try:
            data = self.path(path).read_bytes()
        except (OSError, ValueError):
            msg = f"open failed: No such file or directory: {path}".encode()
            s.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            return
        for i in range(0, len(data), SYNC_CHUNK):
            chunk = data[i:i + SYNC_CHUNK]
            s.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        s.write(b"DONE" + struct.pack("<I", 0))

    # -- the shell -------------------------------------------------------------------------
    def shell(self, line: str, conn: _Connection | None = None) -> str:
        """Run one command line as the phone's ``sh -c`` would (whitelisted commands)."""
        bad = unquoted_metachar(line)
        if bad is not None:
            self.refused.append(line)
            return f"/system/bin/sh: refused: unquoted {bad!r} in command line\n"
        try:
            argv = shlex.split(line)
        except ValueError as e:
            return f"/system/bin/sh: syntax error: {e}\n"
        if not argv:
            return ""
        self.commands.append(argv)
        return self._run(argv, conn)

    def _run(self, argv: list[str], conn: _Connection | None) -> str:
        name, args = argv[0], argv[1:]
        if name == "taskset":
            if len(args) < 2 or not all(c in "0123456789abcdefABCDEF" for c in args[0]):
                return "taskset: usage: taskset MASK COMMAND...\n"
            mask = int(args[0], 16)
            if mask == 0 or mask >> (max(self.cpus) + 1):
                return f"taskset: sched_setaffinity: Invalid argument (mask {args[0]})\n"
            return self._run(args[1:], conn)
        simple = {"getprop": self._getprop, "cat": self._cat, "ls": self._ls, "rm": self._rm,
                  "mkdir": self._mkdir, "chmod": self._chmod, "sha256sum": self._sha256sum,
                  "echo": lambda a: " ".join(a) + "\n"}
        if name in simple:
            return simple[name](args)
        base = posixpath.basename(name)
        if base in ("benchmark_model", "onnxruntime_perf_test") and "/" in name:
            try:
                exe = self.path(name)
            except ValueError:
                exe = None
            if exe is None or not exe.is_file():
                return f"/system/bin/sh: {name}: inaccessible or not found\n"
            if not os.access(exe, os.X_OK):
                return f"/system/bin/sh: {name}: can't execute: Permission denied\n"
            self.benchmarks += 1
            if self.benchmarks <= self.drop_benchmarks:
                raise _Dropped
            if base == "benchmark_model":
                return self._benchmark_model(args)
            return self._ort_perf_test(args)
        return f"/system/bin/sh: {name}: inaccessible or not found\n"

    def _getprop(self, args: list[str]) -> str:
        if args:
            return self.props.get(args[0], args[1] if len(args) > 1 else "") + "\n"
        return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items()))

    def _cat(self, args: list[str]) -> str:
        out = []
        for a in args:
            try:
                p = self.path(a)
                text = p.read_text()
            except (OSError, ValueError):
                out.append(f"cat: {a}: No such file or directory\n")
                continue
            out.append(text)
            if p.name == "temp" and self.cool_per_read_c:
                p.write_text(f"{int(int(text) - self.cool_per_read_c * 1000)}\n")
        return "".join(out)

    def _ls(self, args: list[str]) -> str:
        out = []
        for a in args or ["/data/local/tmp"]:
            try:
                p = self.path(a)
            except ValueError:
                p = None
            if p is None or not p.exists():
                out.append(f"ls: {a}: No such file or directory\n")
            elif p.is_dir():
                out += [c.name + "\n" for c in sorted(p.iterdir())]
            else:
                out.append(a + "\n")
        return "".join(out)

    def _rm(self, args: list[str]) -> str:
        out = []
        force = any(a.startswith("-") and "f" in a for a in args)
        for a in (a for a in args if not a.startswith("-")):
            try:
                self.path(a).unlink()
            except (OSError, ValueError):
                if not force:
                    out.append(f"rm: {a}: No such file or directory\n")
        return "".join(out)

    def _mkdir(self, args: list[str]) -> str:
        for a in (a for a in args if not a.startswith("-")):
            with contextlib.suppress(OSError, ValueError):
                self.path(a).mkdir(parents=True, exist_ok=True)
        return ""

    def _chmod(self, args: list[str]) -> str:
        if len(args) < 2 or not all(c in "01234567" for c in args[0]):
            return "chmod: usage: chmod OCTAL FILE...\n"
        out = []
        for a in args[1:]:
            try:
                self.path(a).chmod(int(args[0], 8))
            except (OSError, ValueError):
                out.append(f"chmod: {a}: No such file or directory\n")
        return "".join(out)

    def _sha256sum(self, args: list[str]) -> str:
        out = []
        for a in args:
            try:
                out.append(f"{hashlib.sha256(self.path(a).read_bytes()).hexdigest()}  {a}\n")
            except (OSError, ValueError):
                out.append(f"sha256sum: {a}: No such file or directory\n")
        return "".join(out)

    # -- the benchmark tools ---------------------------------------------------------------
    def _benchmark_model(self, args: list[str]) -> str:
        flags = dict(a[2:].partition("=")[::2] for a in args if a.startswith("--"))
        graph = flags.get("graph", "")
        try:
            threads = int(flags.get("num_threads", "1"))
            warmup = int(flags.get("warmup_runs", "1"))
            runs = int(flags.get("num_runs", "50"))
            path = self.path(graph)
        except ValueError as e:
            return f"ERROR: bad flag: {e}\nBenchmarking failed.\n"
        head = (f"INFO: STARTING!\nINFO: Num threads: [{threads}]\nINFO: Graph: [{graph}]\n"
                f"INFO: #threads used for CPU inference: [{threads}]\n")
        if not path.is_file():
            return head + f"ERROR: Could not open '{graph}'.\nERROR: Failed to load model\n"
        from latency.litert import load_interpreter

        t0 = time.perf_counter()
        try:
            it = load_interpreter(path, threads)
        except (ValueError, RuntimeError) as e:
            return head + f"ERROR: {e}\nERROR: Failed to load model\n"
        init_us = (time.perf_counter() - t0) * 1e6
        warm = self._time(it.invoke, max(1, warmup))
        timed = self._time(it.invoke, max(1, runs))
        fmt = self.benchmark_format
        if fmt == "legacy":
            return (f"Graph: [{graph}]\nTimings (microseconds): count={len(timed)} "
                    f"{self._stats(timed, False)}\n")
        lines = [head, f"INFO: Loaded model {graph}\n",
                 f"INFO: Initialized session in {init_us / 1000:.3f}ms.\n"]
        pct = fmt == "modern"
        if fmt != "summary":
            lines += [f"INFO: count={len(warm)} {self._stats(warm, pct)}\n\n",
                      f"INFO: count={len(timed)} {self._stats(timed, pct)}\n\n"]
        lines.append(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: "
                     f"{warm[0]:.0f}, Warmup (avg): {np.mean(warm):.6g}, Inference (avg): "
                     f"{np.mean(timed):.6g}\n")
        return "".join(lines)

    @staticmethod
    def _time(fn: Any, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e6)
        return out

    @staticmethod
    def _stats(us: list[float], percentiles: bool) -> str:
        x = np.asarray(us)
        s = (f"first={x[0]:.0f} curr={x[-1]:.0f} min={x.min():.0f} max={x.max():.0f} "
             f"avg={x.mean():.6g} std={x.std():.0f}")
        if not percentiles:
            return s
        p5, med, p95 = np.percentile(x, [5, 50, 95])
        return s + f" p5={p5:.0f} median={med:.0f} p95={p95:.0f}"

    def _ort_perf_test(self, args: list[str]) -> str:
        opts: dict[str, str] = {}
        it = iter(args)
        model = ""
        for a in it:
            if a in ("-e", "-m", "-r", "-x"):
                opts[a] = next(it, "")
            elif a.startswith("-"):
                continue
            else:
                model = a
        try:
            reps, threads = int(opts.get("-r", "1000")), int(opts.get("-x", "1"))
            path = self.path(model)
            from latency.runtimes import get_runtime

            run = get_runtime("onnxruntime").load(path, threads)
        except (ValueError, RuntimeError, OSError) as e:
            return f"Error: {e}\n"
        first = self._time(run, 1)[0] / 1e3
        t = np.asarray(self._time(run, max(1, reps))) / 1e6  # seconds
        lines = [f"Session creation time cost: 0.01 s\nFirst inference time cost: {first:.0f} ms\n",
                 f"Total inference time cost: {t.sum():.6g} s\n",
                 f"Total inference requests: {len(t)}\n",
                 f"Average inference time cost: {t.mean() * 1e3:.6g} ms\n"]
        lines += [f"{name} Latency: {v:.6g} s\n" for name, v in
                  (("Min", t.min()), ("Max", t.max()))]
        lines += [f"P{name} Latency: {np.percentile(t, q):.6g} s\n" for name, q in
                  (("50", 50), ("90", 90), ("95", 95), ("99", 99), ("999", 99.9))]
        return "".join(lines)


@contextlib.contextmanager
def fake_adbd(**options: Any) -> Iterator[FakeAdbd]:
    """Start a :class:`FakeAdbd` on a free port, yield it (``.port``, ``.address``), stop it."""
    d = FakeAdbd(**options)
    d.start()
    try:
        yield d
    finally:
        d.stop()


if __name__ == "__main__":  # python -m tests.fakes.adbd --port 5555 (manual end-to-end runs)
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=5555)
    ap.add_argument("--preinstalled", action="store_true")
    ap.add_argument("--drop-benchmarks", type=int, default=0)
    ns = ap.parse_args()
    with fake_adbd(port=ns.port, preinstalled=ns.preinstalled,
                   drop_benchmarks=ns.drop_benchmarks) as daemon:
        print(f"fake adbd on {daemon.address} (files in {daemon.root})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)

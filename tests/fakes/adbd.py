"""A loopback ADB daemon for tests: the real wire protocol on a TCP port, a phone behind it.

Speaks ADB's transport protocol as ``adbd`` does over TCP (24-byte headers; CNXN, AUTH,
OPEN, OKAY, WRTE, CLSE; one WRTE in flight per stream), the legacy ``shell:`` service and
the ``sync:`` service (STAT, LIST, SEND/DATA/DONE, RECV, QUIT; replies OKAY/FAIL/DATA/DONE).
Debian's ``adb`` client and ``adb-shell`` both talk to it. The phone - filesystem, shell,
benchmark tools - is :class:`tests.fakes.phone.FakePhone`; its options pass through.

AUTH (``auth=``): ``"verify"`` (default) answers CNXN with an AUTH token, verifies
signatures against the keys it knows, and accepts a new public key as if the user tapped
"Always allow" (so the first connection goes token -> signature rejected -> public key ->
CNXN, the next one token -> signature -> CNXN, as on a phone); ``"lenient"`` accepts any
signature; ``"none"`` skips AUTH.

``drop_benchmarks=N`` closes the connection in the middle of the first N benchmark
invocations (a cable pulled mid-measurement).
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from tests.fakes.phone import Dropped, FakePhone, unquoted_metachar

__all__ = ["FakeAdbd", "FakePhone", "fake_adbd", "unquoted_metachar"]

A_CNXN, A_AUTH, A_OPEN, A_OKAY = b"CNXN", b"AUTH", b"OPEN", b"OKAY"
A_WRTE, A_CLSE = b"WRTE", b"CLSE"
VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_CHUNK = 64 * 1024

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
        except (EOFError, OSError):
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

    ``auth``: see the module doc; every other keyword goes to :class:`FakePhone`, whose
    state (``commands``, ``refused``, ``benchmarks``, ``path()``, ``props``, ``cpus``) is
    also reachable on the daemon.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, auth: str = "verify", **phone: Any) -> None:
        if auth not in ("verify", "lenient", "none"):
            raise ValueError(f"auth {auth!r} invalid; valid: verify, lenient, none")
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="adbd-")
        self.phone = FakePhone(root if root is not None else self._tmp.name, **phone)
        self.root = self.phone.root
        self.host, self.auth = host, auth
        self.known_keys: list[Any] = []
        self.events: list[tuple[str, str]] = []
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self._conns: list[_Connection] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __getattr__(self, name: str) -> Any:  # the phone's state: commands, refused, path...
        if name == "phone":
            raise AttributeError(name)
        return getattr(self.phone, name)

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

    # -- services --------------------------------------------------------------------------
    def _service(self, conn: _Connection, s: _Stream, service: str) -> None:
        try:
            if service.startswith("shell:"):
                s.write(self.phone.shell(service[len("shell:"):]).encode())
            elif service.startswith("sync:"):
                self._sync(s)
            else:
                s.write(f"FAIL: unknown service {service}".encode())
            s.close()
        except Dropped:
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

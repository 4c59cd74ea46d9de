"""Run the real device farm (Starlette under uvicorn) on a free loopback port in a thread."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices.base import Device
from devices.local import LocalDevice
from latency.measurement import MeasureSettings

TOKEN = "test-token-0123456789abcdef"
FAST = MeasureSettings(warmup=2, runs=5, max_runs=10, max_seconds=3.0)


class Gated(Device):
    """A real local device standing in for a phone: its measurements count how many ran
    at once (``most``; ``shared`` counts across devices that share one tally) and can
    wait for a gate, so a test can see the queues. Each is its own hardware unless
    ``resource`` says otherwise."""

    model_format = "onnx"

    def __init__(self, gate: threading.Event | None = None,
                 opens: threading.Event | None = None, spec: str = "local:onnxruntime",
                 resource: str | None = None, shared: dict[str, int] | None = None,
                 fingerprint: dict[str, Any] | None = None) -> None:
        self.inner, self.spec = LocalDevice(), spec
        self.gate, self.opens = gate, opens
        self._resource = resource or f"gated-{id(self)}"
        self._fp = fingerprint
        self.active = self.most = 0
        self.shared = shared if shared is not None else {"active": 0, "most": 0}
        self.lock = _TALLY

    @property
    def resource(self) -> str:
        return self._resource

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fp) if self._fp is not None else self.inner.fingerprint()

    def measure(self, model_path: Any, settings: MeasureSettings) -> Any:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.shared["active"] += 1
            self.shared["most"] = max(self.shared["most"], self.shared["active"])
        try:
            if self.opens is not None:
                self.opens.set()
            if self.gate is not None and not self.gate.wait(20):
                raise RuntimeError("gate never opened")
            m = self.inner.measure(model_path, settings)
            return m.with_(device=self.spec, fingerprint=self.fingerprint())
        finally:
            with self.lock:
                self.active -= 1
                self.shared["active"] -= 1


_TALLY = threading.Lock()


def measure_at_once(specs: list[str], model: Path) -> list[Any]:
    """Measure ``model`` on each farm device spec, all at once (one thread each, no
    retries); each one's Measurement or the exception it raised."""
    from devices.remote import RemoteDevice

    out: list[Any] = [None] * len(specs)

    def one(i: int) -> None:
        try:
            out[i] = RemoteDevice(specs[i], retries=0).measure(model, FAST)
        except Exception as e:  # noqa: BLE001 - collected for the assertions
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@contextlib.contextmanager
def running_farm(devices: dict[str, Any], token: str = TOKEN,
                 tls: tuple[str, str] | None = None, port: int = 0, **options: Any
                 ) -> Iterator[tuple[str, Any]]:
    """Yield ``(base URL, Farm)`` while the farm serves ``devices`` (over https with
    ``tls = (certificate, key)`` PEM files); stops it after."""
    import uvicorn

    from devices.farm import Farm
    from devices.farm_app import create_app

    farm = Farm(devices, token, **options)
    sock = socket.create_server(("127.0.0.1", port))
    ssl = {} if tls is None else {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    # log_config=None: uvicorn's own logging set-up would bind its handlers to whatever
    # sys.stderr is now (a test's capture, closed after it) for the rest of the session
    server = uvicorn.Server(uvicorn.Config(create_app(farm), log_level="warning",
                                           log_config=None, **ssl))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the farm did not start")
        time.sleep(0.02)
    try:
        scheme = "http" if tls is None else "https"
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", farm
    finally:
        server.should_exit = True
        thread.join(30)
        farm.close()
        sock.close()


def self_signed(folder: Path) -> tuple[str, str]:
    """(certificate, key) PEM files of a fresh self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mnas test farm")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    c, k = folder / "farm-cert.pem", folder / "farm-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


def raw(base: str, path: str, *, method: str = "GET", body: bytes | None = None,
        token: str | None = TOKEN, headers: dict[str, str] | None = None
        ) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request, errors included."""
    h = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    req = urllib.request.Request(base + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)

"""``http://HOST:PORT/NAME`` (or ``https://``): a device of a device farm (:mod:`devices.farm`).

The model file is uploaded to the farm, measured there on the named device's queue, and
the farm's :class:`~latency.Measurement` comes back (its ``device`` is this spec; its
fingerprint is the device's own, so the measurement cache treats a phone the same whether
it is reached over ADB here or through a farm).

The bearer token comes from ``$MNAS_FARM_TOKEN``, else from the first ``[[farm.server]]``
entry of ``~/.config/mnas/devices.toml`` whose ``url`` starts the spec::

    [[farm.server]]
    url = "https://lab-mac:8470"
    token_file = "~/.config/mnas/lab-token"   # or token = "..."
    ca_file = "~/.config/mnas/lab-ca.pem"     # trust a farm's own certificate (https)
    timeout_s = 600                            # per measurement, queueing included

``$MNAS_FARM_CA`` names a CA file too. Only the standard library speaks HTTP here: clients
need no extra. Send tokens over ``https://`` (``mnas farm serve --tls-cert/--tls-key``,
or a TLS proxy in front of the farm) anywhere but a trusted network.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import math
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.base import Device, DeviceUnreachable, register_device
from devices.config import load_config
from devices.farm import NAME_RE, SETTINGS
from latency.measurement import Measurement, MeasureSettings

log = logging.getLogger(__name__)

TOKEN_ENV = "MNAS_FARM_TOKEN"
CA_ENV = "MNAS_FARM_CA"
FORM = "http://HOST:PORT/NAME"


def split_spec(spec: str) -> tuple[str, str]:
    """``(farm base URL, device name)``; ValueError naming the valid form."""
    u = urllib.parse.urlsplit(spec)
    name = u.path.rsplit("/", 1)[-1]
    if u.scheme not in ("http", "https") or not u.hostname or not NAME_RE.match(name) \
            or u.query or u.fragment:
        raise ValueError(f"device {spec!r} is not a farm device; valid form: {FORM} "
                         "(NAME as `mnas farm serve` lists it)")
    if u.username or u.password:
        raise ValueError(f"device {spec!r}: put no credentials in the URL; the token comes "
                         f"from ${TOKEN_ENV} or devices.toml")
    try:
        u.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise ValueError(f"device {spec!r}: {e}; valid form: {FORM}") from None
    base = f"{u.scheme}://{u.netloc}{u.path[: -len(name) - 1]}"
    return base, name


def on_this_host(spec: str) -> bool:
    """Whether a farm device spec points at this host (a loopback address or name)."""
    host = urllib.parse.urlsplit(spec).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None, list[str]]:
    u = urllib.parse.urlsplit(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return u.scheme, (u.hostname or "").lower(), port, [p for p in u.path.split("/") if p]


def server_options(base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``[[farm.server]]`` entry for the farm at ``base`` (``{}`` if none): the same
    scheme, host and port, and an entry path that is ``base``'s or a whole-segment prefix
    of it (so a token never goes to a look-alike host)."""
    cfg = load_config() if config is None else config
    scheme, host, port, path = _origin(base)
    for entry in cfg.get("farm", {}).get("server", []):
        e_scheme, e_host, e_port, e_path = _origin(str(entry.get("url", "")))
        if (e_scheme, e_host, e_port) == (scheme, host, port) and e_host \
                and path[: len(e_path)] == e_path:
            return dict(entry)
    return {}


def farm_token(base: str, options: dict[str, Any]) -> str | None:
    """``$MNAS_FARM_TOKEN``, else the entry's ``token`` or the contents of its ``token_file``."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if options.get("token"):
        return str(options["token"]).strip()
    if options.get("token_file"):
        p = Path(str(options["token_file"])).expanduser()
        try:
            return p.read_text().strip()
        except OSError as e:
            raise ValueError(f"token_file {p} for the farm at {base}: {e.strerror}") from None
    return None


def tls_context(base: str, options: dict[str, Any]) -> ssl.SSLContext | None:
    """The context that checks an ``https://`` farm's certificate: the system's CAs, or
    ``$MNAS_FARM_CA`` / the entry's ``ca_file``; None for ``http://``."""
    if not base.startswith("https://"):
        return None
    ca = os.environ.get(CA_ENV) or options.get("ca_file")
    if not ca:
        return ssl.create_default_context()
    p = Path(str(ca)).expanduser()
    try:
        return ssl.create_default_context(cafile=str(p))
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"CA file {p} for the farm at {base}: "
                         f"{getattr(e, 'strerror', None) or e}") from None


class RemoteDevice(Device):
    """One device of a farm, measured over HTTP.

    Args:
        spec: ``http(s)://HOST:PORT/NAME``.
        token: the farm's bearer token (default: see the module's docstring).
        timeout_s: seconds one measurement may take, waiting in the queue included.
        retries: times a measurement is sent again when the queue is full (503, after the
            farm's ``Retry-After``) or the connection was refused or reset (after 1, 2,
            4… s). The first request, at construction, is not retried.
    """

    def __init__(self, spec: str, token: str | None = None, timeout_s: float | None = None,
                 retries: int = 3) -> None:
        self.base, self.name = split_spec(spec)
        self.spec = spec
        options = server_options(self.base)
        self.token = token if token is not None else farm_token(self.base, options)
        self.timeout_s = float(timeout_s if timeout_s is not None
                               else options.get("timeout_s", 600.0))
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        self.retries = int(retries)
        self.tls = tls_context(self.base, options)
        try:
            self.info = call(self.base, f"/devices/{self.name}", self.token, timeout=30.0,
                             what=spec, tls=self.tls)
        except RuntimeError as e:   # nothing measured yet: a wrong address is bad input
            raise ValueError(str(e)) from None
        if not (isinstance(self.info.get("model_format"), str)
                and isinstance(self.info.get("fingerprint"), dict)):
            raise ValueError(f"{spec}: the answer names no model format and fingerprint; "
                             "is this a device farm (mnas farm serve)?")
        self.model_format = self.info["model_format"]
        #: the farm's device times two models alternately (farms before this key: no)
        self.can_pair = self.info.get("can_pair") is True
        #: a pool measures as many at once as it has members in service
        members, retired = self.info.get("members"), self.info.get("retired")
        self.concurrency = max(1, (len(members) if isinstance(members, list) else 1)
                               - (len(retired) if isinstance(retired, list) else 0))
        #: the largest body the farm accepts (farms before this key: None, not known)
        self.max_upload = _cap(self.info)

    def __repr__(self) -> str:
        return f"RemoteDevice({self.spec!r})"

    def fingerprint(self) -> dict[str, Any]:
        return dict(self.info["fingerprint"])

    def measure(self, model_path: str | os.PathLike[str], settings: MeasureSettings
                ) -> Measurement:
        """Upload and measure one model file. FileNotFoundError when it is missing,
        ValueError when the farm refuses it (not a model of the device's format, too
        large), RuntimeError when the farm or its device fails."""
        out = self._post("measure", [model_path], settings)
        return self._measurement(out)

    def measure_paired(self, model_path: str | os.PathLike[str],
                       reference_path: str | os.PathLike[str] | None,
                       settings: MeasureSettings) -> tuple[Measurement, Measurement | None]:
        """Upload a model and a reference model in one request; the farm times them
        alternately on the device (:meth:`devices.local.LocalDevice.measure_paired`).
        TypeError when the farm's device cannot (:attr:`can_pair`); else errors as
        :meth:`measure`."""
        if reference_path is None:
            return self.measure(model_path, settings), None
        if not self.can_pair:
            raise TypeError(f"{self.spec} times one model at a time; timing two "
                            "alternately needs a local runtime (here or on a device farm)")
        out = self._post("measure_paired", [model_path, reference_path], settings)
        if not isinstance(out.get("measurement"), dict):
            raise RuntimeError(f"{self.spec}: the farm's answer is not a pair of measurements")
        return self._measurement(out["measurement"]), self._measurement(out.get("reference"))

    def _post(self, route: str, paths: list[str | os.PathLike[str]],
              settings: MeasureSettings) -> dict[str, Any]:
        files = [Path(p) for p in paths]
        for p in files:
            if not p.is_file():
                raise FileNotFoundError(2, "model file not found", str(p))
        body = [p.read_bytes() for p in files]
        size = sum(len(b) for b in body)
        # refused here: a farm answers 413 before reading a larger body and closes the
        # connection, which a client still sending sees only as a reset
        if self.max_upload is not None and size > self.max_upload:
            raise ValueError(self._too_large(size, len(body)))
        query: dict[str, Any] = {k: getattr(settings, k) for k in SETTINGS}
        if len(body) > 1:
            query["split"] = len(body[0])
        return call(self.base, f"/devices/{self.name}/{route}", self.token, method="POST",
                    body=b"".join(body), query=query, timeout=self.timeout_s,
                    retries=self.retries, what=self.spec, tls=self.tls,
                    refused=lambda sent: self._refused_size(sent, len(body)))

    def _too_large(self, size: int, files: int) -> str:
        what, has = ("the model file is", "it has") if files == 1 else \
            ("the model and reference files are", "they have")
        return (f"{self.spec}: {what} larger than this farm accepts ({self.max_upload} "
                f"bytes; {has} {size})")

    def _refused_size(self, size: int, files: int) -> str | None:
        """After a reset while sending ``size`` bytes: why, when the farm answers and its
        cap (asked again: it may have restarted with another) is below ``size``; else None
        (a farm going away or restarting, or one that does not say its cap)."""
        try:
            info = call(self.base, f"/devices/{self.name}", self.token, timeout=10.0,
                        what=self.spec, tls=self.tls)
        except (ValueError, RuntimeError):
            return None
        cap = _cap(info)
        if cap is None or size <= cap:
            return None
        self.max_upload = cap
        return self._too_large(size, files)

    def _measurement(self, doc: Any) -> Measurement:
        try:
            m = Measurement.from_dict(doc).with_(device=self.spec)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise RuntimeError(f"{self.spec}: the farm's answer is not a measurement "
                               f"({type(e).__name__}: {e})") from None
        if m.fingerprint != self.info["fingerprint"]:
            # the farm read it again (devices.farm.Pool): follow it, so the cache is
            # asked for the device as it is now
            log.warning("%s: the device changed since it was opened (its fingerprint, "
                        "read again by the farm); measuring it as it is now", self.spec)
            self.info["fingerprint"] = dict(m.fingerprint)
        return m


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would carry the token to wherever they point."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _cap(info: dict[str, Any]) -> int | None:
    """A farm device's ``max_upload_bytes``, when it says a valid one."""
    cap = info.get("max_upload_bytes")
    return cap if type(cap) is int and cap > 0 else None


def _opener(tls: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=tls))


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header: 0–60, 5 when absent or a date."""
    try:
        s = float(value or 5)
    except ValueError:
        return 5.0
    return min(max(s, 0.0), 60.0) if math.isfinite(s) else 5.0


def call(base: str, path: str, token: str | None, *, method: str = "GET",
         body: bytes | None = None, query: dict[str, Any] | None = None, timeout: float,
         retries: int = 0, what: str | None = None, tls: ssl.SSLContext | None = None,
         refused: Callable[[int], str | None] | None = None) -> dict[str, Any]:
    """One JSON request to the farm at ``base``; its answer, a JSON object. A full queue
    (503) is retried ``retries`` times after its ``Retry-After``, a refused or reset
    connection after 1, 2, 4… s (a timeout is not: the measurement may still be
    running). Redirects are refused. ValueError for the farm's 4xx (its one-line
    ``detail``, prefixed by ``what``), RuntimeError when it cannot be reached, fails or
    answers something else than JSON. ``refused``, given the size of a body whose
    connection was reset, says when the farm refused it for that size (a ValueError
    then, not a retry: see :meth:`RemoteDevice._refused_size`)."""
    url = base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
    what = what or base
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    opener = _opener(tls)
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with opener.open(req, timeout=timeout) as r:
                out = json.loads(r.read())
            if not isinstance(out, dict):
                raise ValueError("not a JSON object")
            return out
        except urllib.error.HTTPError as e:
            with e:
                detail = _detail(e)
            if e.code == 503 and attempt < retries:
                time.sleep(_retry_after(e.headers.get("Retry-After")))
                continue
            if e.code == 401:
                raise ValueError(f"the farm at {base} refused the token ({detail}); set "
                                 f"${TOKEN_ENV} or token_file in devices.toml") from None
            if 300 <= e.code < 400:
                raise RuntimeError(f"{what}: the farm redirects to {e.headers.get('Location')}"
                                   "; redirects are not followed (the token would go "
                                   "along): name that address instead") from None
            if 400 <= e.code < 500 and e.code != 408:
                raise ValueError(f"{what}: {detail}") from None
            if e.code == 504:   # the farm is up, its device is not (a phone unplugged)
                raise DeviceUnreachable(f"{what}: {detail}") from None
            raise RuntimeError(f"{what}: the farm answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            # reset while sending (refused: nothing was sent)
            if isinstance(why, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) \
                    and body is not None and refused is not None:
                reason = refused(len(body))
                if reason is not None:
                    raise ValueError(reason) from None
            if isinstance(why, ConnectionError) and attempt < retries:
                time.sleep(2.0**attempt)    # refused or reset (a restart, Wi-Fi): again
                continue
            if isinstance(why, TimeoutError):
                raise RuntimeError(f"{what}: no answer from the farm within {timeout:g} s "
                                   "(timeout_s in devices.toml)") from None
            if isinstance(why, ssl.SSLCertVerificationError):
                why = f"its certificate is not trusted ({why.verify_message}); name its " \
                      f"CA with ca_file in devices.toml or ${CA_ENV}"
            if isinstance(why, ssl.SSLError | str):    # reached, but not trusted
                raise RuntimeError(f"cannot reach the device farm at {base}: {why}") from None
            raise DeviceUnreachable(f"cannot reach the device farm at {base}: {why}") from None
        except http.client.HTTPException as e:    # not HTTP at all (another service)
            raise RuntimeError(f"{base} does not answer as a device farm ("
                               f"{type(e).__name__}: {e})") from None
        except ValueError:      # JSON, UTF-8 or shape
            raise RuntimeError(f"{what}: the farm's answer is not a JSON object") from None
    raise AssertionError("unreachable")


def farm_devices(base: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The farm's devices (``GET /devices``), each with its ``spec`` here
    (``BASE/NAME``); errors as :func:`call`."""
    options = server_options(base)
    doc = call(base.rstrip("/"), "/devices", farm_token(base, options), timeout=timeout,
               tls=tls_context(base, options))
    rows = doc.get("devices")
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("spec"), str)
            and isinstance(r.get("name"), str) and NAME_RE.match(r["name"]) for r in rows):
        raise RuntimeError(f"{base} does not answer as a device farm (its /devices is not "
                           "a list of devices with a name and a spec)")
    return [{**r, "farm_spec": r["spec"], "spec": f"{base.rstrip('/')}/{r['name']}"}
            for r in rows]


def _detail(e: urllib.error.HTTPError) -> str:
    try:
        d = json.loads(e.read()).get("detail")
    except (ValueError, OSError, AttributeError):
        d = None
    return str(d) if d else str(e.reason)


@register_device("http", FORM)
def _http(spec: str) -> Device:
    return RemoteDevice(spec)


@register_device("https", "https://HOST:PORT/NAME")
def _https(spec: str) -> Device:
    return RemoteDevice(spec)

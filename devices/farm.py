"""The device farm: an HTTP service that owns attached devices and measures uploaded models.

One host with phones on USB (or Wi-Fi ADB), or a quiet CPU, serves every search and CI
job that needs those devices: clients name a device as ``http://HOST:PORT/NAME``
(:mod:`devices.remote`) and get the same :class:`~latency.Measurement` record a local
device returns. Start it with ``mnas farm serve`` (the ``farm`` extra: Starlette, uvicorn).

API (JSON; every route but ``/health`` needs ``Authorization: Bearer <token>``):

* ``GET /health`` — ``{"ok": true}``.
* ``GET /devices`` — ``{"devices": [info, …]}``; ``GET /devices/NAME`` — one ``info``:
  ``name``, ``spec``, ``model_format``, ``fingerprint`` (read when the farm starts and
  again every ``fingerprint_ttl_s`` while a queue holds the device: :class:`Pool`),
  ``can_pair`` (whether it times two models alternately), ``members`` (the specs of a
  pool's devices; one for a single device), ``retired`` (members whose fingerprint
  no longer matches the pool's; they rejoin when it matches again), ``queued``
  (requests uploading, waiting or measuring), ``max_upload_bytes`` (the largest body
  accepted; :mod:`devices.remote` refuses a larger model before sending it).
* ``POST /devices/NAME/measure?threads=&warmup=&runs=&max_runs=&rel_ci=&max_seconds=&clock=``
  with the model file as the raw body (``application/octet-stream``) — the measurement
  (:meth:`Measurement.to_dict`). Unset settings take :class:`MeasureSettings`' defaults;
  :data:`LIMITS` caps them, so no request holds a device for hours.
* ``POST /devices/NAME/measure_paired?split=N&…`` (devices with ``can_pair``) with the
  model's N bytes and then a reference model's as the body — ``{"measurement": …,
  "reference": …}``: the two timed alternately, inference by inference
  (:meth:`~devices.base.Device.measure_paired`), so their ratio cancels the farm host's
  slow moments, as it does for a local device (``measured:anchored``, a bench entry's
  ``reference``, an anchored lookup table).

One queue per device: a device runs one measurement at a time (two at once would time each
other), while different devices measure in parallel. Several identical devices (the same
fingerprint: phones of one model and build) may share a name as a *pool*: its queue
measures on whichever member is free, as many at once as there are members. Devices on the
same hardware (every local runtime is this host's CPU) take turns even under different
names. A request takes its place in the queue before its upload is read, so uploads are
bounded by the queues too. Uploads are untrusted: the size is capped (``Content-Length``
is checked before reading, the stream while reading, and a stream that stalls is cut off;
a refused body of at most twice the cap is read and dropped before the answer, a larger
one not at all: closing a connection with its body unread resets it, and a client still
sending would see only that), the file goes to a private temporary folder under a name
of ours, is checked to be a self-contained model of the device's format before any
runtime sees it, and is deleted when its measurement ends.

Every bad request is a 4xx whose ``detail`` is one line naming the problem and the valid
choices: 401 (no or wrong token), 404 (unknown device), 400 (empty body), 408 (an upload
that stalls), 413 (too large), 422 (bad setting; not a model of the device's format),
503 (queue full; with ``Retry-After``). A device that fails while measuring is a 502 with
its reason (in a pool, after one other member has tried the model); one the farm cannot
reach at all (unplugged), a 504 (the client raises ``DeviceUnreachable``: a search
stops rather than fail its children); a farm that cannot store an upload, a 507.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from devices.base import Device, can_pair, changed_keys, describe_change, first_line
from latency.measurement import MeasureSettings

log = logging.getLogger(__name__)

#: a device's name in the farm's URLs
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PORT = 8470
SETTINGS = tuple(f.name for f in fields(MeasureSettings))


def default_name(spec: str) -> str:
    """A URL-safe name for a device spec: ``local:onnxruntime`` → ``local-onnxruntime``,
    ``adb:192.168.1.20:5555`` → ``adb-192.168.1.20-5555``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-.")[:64] or "device"


def check_model(path: Path, model_format: str) -> None:
    """ValueError unless ``path`` is a self-contained model of ``model_format`` (parsed,
    never run)."""
    if model_format == "onnx":
        import onnx

        from latency.export import check_onnx

        try:
            check_onnx(path)
        except ValueError:
            raise ValueError("the upload is not an ONNX model") from None
        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in model.graph.initializer):
            raise ValueError("the upload refers to external data files; send a "
                             "self-contained ONNX model")
    elif model_format == "tflite":
        from latency.tflite import is_tflite

        if not is_tflite(path):
            raise ValueError("the upload is not a TFLite model (no TFL3 identifier)")
    else:  # a device of a format this farm cannot check is refused rather than trusted
        raise ValueError(f"this farm cannot check {model_format!r} models")


def pool_fingerprint(name: str, pool: list[Device]) -> dict[str, Any]:
    """The fingerprint every member of ``pool`` shares; ValueError naming the first
    difference (a pool's measurements must be interchangeable) or a device served twice."""
    if not pool:
        raise ValueError(f"device pool {name!r} is empty")
    first = pool[0].fingerprint()
    seen: dict[str, str] = {}
    for d in pool:
        if d.resource in seen:
            raise ValueError(f"device pool {name!r} has {d.spec!r} and {seen[d.resource]!r} "
                             "on the same hardware; a pool needs separate devices")
        seen[d.resource] = d.spec
    for d in pool[1:]:
        if (d.model_format, can_pair(d)) != (pool[0].model_format, can_pair(pool[0])):
            raise ValueError(f"device pool {name!r}: {d.spec!r} runs "
                             f"{d.model_format} models, {pool[0].spec!r} runs "
                             f"{pool[0].model_format}; a pool needs identical devices")
        fp = d.fingerprint()
        differ = changed_keys(first, fp)
        if differ:
            k = differ[0]
            raise ValueError(f"device pool {name!r}: {d.spec!r} differs from "
                             f"{pool[0].spec!r} in {k} ({fp.get(k)!r} vs "
                             f"{first.get(k)!r}); a pool needs identical devices")
    return first


#: the largest value a client may ask for (so no request holds a device for hours)
LIMITS: dict[str, float] = {"threads": 64, "warmup": 1000, "runs": 1000, "max_runs": 10000,
                            "rel_ci": 1.0, "max_seconds": 600.0}
#: the least each accepts (MeasureSettings' own: a median needs 3 runs)
LOWEST: dict[str, float] = {"threads": 1, "runs": 3, "max_runs": 3}


def parse_settings(query: dict[str, str]) -> MeasureSettings:
    """MeasureSettings from query parameters; ValueError naming a bad or unknown one and
    its valid range."""
    unknown = sorted(set(query) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; valid: {', '.join(SETTINGS)}")
    kw: dict[str, Any] = {}
    defaults = MeasureSettings()
    for k, v in query.items():
        kind = type(getattr(defaults, k))
        try:
            kw[k] = kind(v)
        except ValueError:
            raise ValueError(f"setting {k}={v!r} is not {kind.__name__ !s} "
                             f"(e.g. {k}={getattr(defaults, k)})") from None
        low = LOWEST.get(k, 0)
        if k in LIMITS and not (math.isfinite(kw[k]) and low <= kw[k] <= LIMITS[k]):
            raise ValueError(f"setting {k}={v!r} is out of range; valid: {low:g} to "
                             f"{LIMITS[k]:g} on this farm")
    settings = MeasureSettings(**kw)
    if not (settings.rel_ci > 0 and settings.max_seconds > 0):
        raise ValueError("settings rel_ci and max_seconds must be > 0")
    return settings


#: seconds a pool member rests after failing a model another member measured
REST_S = 60.0


class Pool:
    """One name's devices: which are free, the fingerprint they share, the ones retired.

    A device's fingerprint is read again, while the device is held for a measurement,
    once ``ttl_s`` has passed since it was last read (a phone may have been updated or
    rebooted with another governor since the farm started). A lone device's new
    fingerprint becomes the name's; a pool member that no longer matches its pool is
    retired (its measurements would no longer stand for the pool's). A retired member's
    fingerprint is read again by the first request after each ``ttl_s``, and it rejoins
    once it matches again (a governor changed for a while); a pool with none in service
    answers every request with that reason. A member that fails a model another member
    then measures rests for :data:`REST_S` seconds (an unplugged phone would otherwise
    fail every request it is free for).
    """

    def __init__(self, name: str, devices: list[Device], ttl_s: float) -> None:
        self.name, self.devices, self.ttl_s = name, list(devices), float(ttl_s)
        self.fingerprint = pool_fingerprint(name, self.devices)
        self.retired: list[Device] = []
        self._read = {id(d): time.monotonic() for d in self.devices}
        self._free = list(self.devices)
        self._rest_until: dict[int, float] = {}
        self._probing: set[int] = set()     # retired members held to read them again
        self._cond = threading.Condition()

    def _probe_due(self, d: Device, now: float) -> bool:
        return (d in self.retired and id(d) not in self._probing
                and now - self._read[id(d)] >= self.ttl_s
                and self._rest_until.get(id(d), 0.0) <= now)

    def take(self, exclude: Sequence[Device] = ()) -> Device | None:
        """A free member not in ``exclude`` (waits for one); None when no member in service
        is outside ``exclude``; RuntimeError once every member is retired."""
        with self._cond:
            while True:
                now = time.monotonic()
                # a retired member due to be read again goes first: :meth:`current`
                # decides whether it rejoins (else the caller takes another)
                probe = [d for d in self.retired if d not in exclude
                         and self._probe_due(d, now)]
                if probe:
                    self._probing.add(id(probe[0]))
                    return probe[0]
                if len(self.retired) == len(self.devices):
                    if self._probing:       # one being read again may rejoin
                        self._cond.wait()
                        continue
                    raise RuntimeError(f"every device of {self.name!r} has changed since "
                                       "the farm started (see the farm's log); they rejoin "
                                       "when their fingerprints match again, or restart the "
                                       "farm to serve them as they are now")
                if all(d in exclude or d in self.retired for d in self.devices):
                    return None
                ready = [d for d in self._free if d not in exclude
                         and self._rest_until.get(id(d), 0.0) <= now]
                if ready:
                    self._free.remove(ready[0])
                    return ready[0]
                ends = [self._rest_until.get(id(d), 0.0) for d in self._free]
                rests = [t - now for t in ends if t > now]    # wake when the first ends
                self._cond.wait(min(rests) if rests else None)

    def give_back(self, d: Device) -> None:
        with self._cond:
            if id(d) in self._probing:      # read again and failed: still retired
                self._probing.discard(id(d))
            else:
                self._free.append(d)
            self._cond.notify_all()

    def rest(self, d: Device, seconds: float = REST_S) -> None:
        """Keep ``d`` from new requests for ``seconds`` (0: no longer)."""
        with self._cond:
            self._rest_until[id(d)] = time.monotonic() + seconds
            self._cond.notify_all()

    def current(self, d: Device) -> bool:
        """Whether ``d``, held by the caller, is still what this name serves (False: it
        is retired now, and not to be given back)."""
        now = time.monotonic()
        if now - self._read[id(d)] < self.ttl_s and d not in self.retired:
            return True
        fp = d.refresh_fingerprint()    # a failure propagates: the device is kept
        self._read[id(d)] = now
        with self._cond:
            if d in self.retired:       # taken to be read again (:meth:`take`)
                self._probing.discard(id(d))
                self._cond.notify_all()
                if fp != self.fingerprint:
                    return False
                self.retired.remove(d)
                log.warning("farm: %s rejoined pool %s, its fingerprint matches again",
                            d.spec, self.name)
                return True
            if fp == self.fingerprint:
                return True
            what = describe_change(self.fingerprint, fp)
            if len(self.devices) == 1:
                log.warning("farm: %s (%s) changed: %s; serving it as it is now",
                            self.name, d.spec, what)
                self.fingerprint = fp
                return True
            log.warning("farm: %s left pool %s, its fingerprint changed: %s", d.spec,
                        self.name, what)
            self.retired.append(d)
            self._cond.notify_all()
            return False


class Farm:
    """Named devices (or pools of identical ones), one queue each, and the upload rules.

    Args:
        devices: name → device, or name → a pool of identical devices (the same
            fingerprint: e.g. three phones of one model and build), measured by whichever
            member is free; names as in the URLs (see :data:`NAME_RE`).
        token: the bearer token every client must send.
        max_upload_bytes: the largest model file accepted.
        max_queue: requests per name (uploading, waiting or measuring) before a 503.
        workdir: where uploads are kept while measured (a private temporary folder when
            None, removed by :meth:`close`).
        retry_after_s: the ``Retry-After`` of a 503.
        upload_stall_s: seconds an upload may send nothing before it is cut off (408).
        fingerprint_ttl_s: seconds before a device's fingerprint is read again (:class:`Pool`).

    Devices that share hardware (:attr:`Device.resource`: this host's CPU for every local
    runtime) take turns even under different names, so two runtimes never time each other.
    """

    def __init__(self, devices: Mapping[str, Device | Sequence[Device]], token: str,
                 max_upload_bytes: int = 64 << 20, max_queue: int = 32,
                 workdir: str | os.PathLike[str] | None = None, retry_after_s: int = 5,
                 upload_stall_s: float = 60.0, fingerprint_ttl_s: float = 300.0) -> None:
        if not devices:
            raise ValueError("a farm needs at least one device")
        for name in devices:
            if not NAME_RE.match(name):
                raise ValueError(f"device name {name!r} must be 1-64 letters, digits, '.', "
                                 "'_' or '-', starting with a letter or digit")
        if len(token) < 16:
            raise ValueError("the farm's token must be at least 16 characters")
        if max_upload_bytes < 1 or max_queue < 1:
            raise ValueError("max_upload_bytes and max_queue must be >= 1")
        if not fingerprint_ttl_s >= 0:
            raise ValueError(f"fingerprint_ttl_s must be >= 0, got {fingerprint_ttl_s}")
        # fingerprints are read here, then again only while a queue holds the device:
        # asking a phone beside a measurement would disturb it
        self.pools = {n: Pool(n, [d] if isinstance(d, Device) else list(d), fingerprint_ttl_s)
                      for n, d in devices.items()}
        #: each name's first device: its format and abilities are the pool's
        self.devices = {n: p.devices[0] for n, p in self.pools.items()}
        self.token = token
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_queue = int(max_queue)
        self.retry_after_s = max(int(retry_after_s), 0)
        self.upload_stall_s = float(upload_stall_s)
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="mnas-farm-")) if workdir is None \
            else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        # one worker per pool member; a worker measures on a member it takes from the free
        # list, holding the lock of that member's hardware
        self._queues = {n: ThreadPoolExecutor(len(p.devices), thread_name_prefix=f"farm-{n}")
                        for n, p in self.pools.items()}
        self._hardware = {d.resource: threading.Lock()
                          for p in self.pools.values() for d in p.devices}
        self._queued = dict.fromkeys(self.devices, 0)
        self._files: set[Path] = set()      # uploads queued or measuring
        self._lock = threading.Lock()

    def info(self, name: str) -> dict[str, Any]:
        d = self.devices[name]
        pool = self.pools[name]
        return {"name": name, "spec": d.spec, "model_format": d.model_format,
                "fingerprint": pool.fingerprint, "can_pair": can_pair(d),
                "members": [m.spec for m in pool.devices],
                "retired": [m.spec for m in pool.retired], "queued": self._queued[name],
                "max_upload_bytes": self.max_upload_bytes}

    def unknown(self, name: str) -> str:
        return f"unknown device {name!r}; valid: {', '.join(sorted(self.devices))}"

    def authorised(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode())

    def reserve(self, name: str) -> bool:
        """Take a place in ``name``'s queue (before the upload is read, so uploads too are
        bounded by the queue); False when it is full. :meth:`release` gives it back."""
        with self._lock:
            if self._queued[name] >= self.max_queue:
                return False
            self._queued[name] += 1
            return True

    def release(self, name: str) -> None:
        with self._lock:
            self._queued[name] -= 1

    def submit(self, name: str, paths: list[Path], settings: MeasureSettings) -> Future[Any]:
        """Queue a measurement of ``paths[0]`` on ``name`` (paired with the reference
        ``paths[1]`` when given: the future's result is then the pair), holding a place
        :meth:`reserve` took. The queue owns the files and the place from here: they go
        when the measurement ends, even if the client has gone (the device may still be
        reading a file when a request is cancelled)."""
        pool = self.pools[name]

        def measure(device: Device) -> Any:
            if len(paths) == 1:
                return device.measure(paths[0], settings)
            return device.measure_paired(paths[0], paths[1], settings)

        def run() -> Any:
            tried: list[tuple[Device, BaseException]] = []
            retired: list[Device] = []      # found changed (or still changed) here
            measured = False
            try:
                while True:     # a worker per member
                    device = pool.take([d for d, _ in tried] + retired)
                    if device is None:      # no other member to try: the first's reason
                        raise tried[0][1]
                    try:
                        with self._hardware[device.resource]:
                            if not pool.current(device):
                                retired.append(device)  # another member measures
                                continue
                            out = measure(device)
                    except (RuntimeError, OSError) as e:
                        # rest it at once (an unplugged phone fails instantly, so it would
                        # be free for the next request too) while another member tries
                        pool.rest(device)
                        pool.give_back(device)
                        tried.append((device, e))
                        if len(tried) > 1:  # two failed: most likely the model's fault
                            raise tried[0][1] from None
                        continue
                    except BaseException:   # the model's own fault (a ValueError, a
                        pool.give_back(device)  # MemoryError): the device serves on
                        raise
                    pool.give_back(device)
                    measured = True
                    for d, e in tried:      # another member measured it: d is at fault
                        log.warning("farm: %s failed a model another device of %s measured "
                                    "(%s); resting it %g s", d.spec, name, first_line(e),
                                    REST_S)
                    return out
            finally:
                if tried and not measured:  # nobody measured it: the model's fault
                    for d, _ in tried:
                        pool.rest(d, 0.0)
                with self._lock:
                    self._files.difference_update(paths)
                for p in paths:
                    p.unlink(missing_ok=True)

        with self._lock:
            self._files.update(paths)
        fut = self._queues[name].submit(run)
        fut.add_done_callback(lambda _: self.release(name))
        return fut

    def close(self) -> None:
        """Stop serving: queued measurements are cancelled and running ones stopped where
        the device can (:meth:`Device.cancel`: this host's isolated runtimes), so a model
        that would run for minutes does not hold the farm's shutdown."""
        for q in self._queues.values():
            q.shutdown(wait=False, cancel_futures=True)
        for p in self.pools.values():
            for d in p.devices:
                d.cancel()
        for q in self._queues.values():
            q.shutdown(wait=True)
        for p in self._files:   # cancelled before they ran
            p.unlink(missing_ok=True)
        for p in self.pools.values():
            for d in p.devices:
                d.close()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

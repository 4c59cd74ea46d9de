"""The device farm's HTTP routes (Starlette; the ``farm`` extra). See :mod:`devices.farm`.

DESIGN names FastAPI; these routes are on Starlette, FastAPI's own foundation, because
FastAPI needs pydantic, whose current releases need typing-extensions >= 4.16 while the
``tflite`` extra (litert-torch → xdsl) pins it below 4.13: with both extras pip gave up
resolving (``resolution-too-deep``). The routes validate nothing through pydantic anyway:
every check is here, with its own one-line message.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devices.base import DeviceUnreachable, can_pair, first_line
from devices.farm import Farm, check_model, parse_settings


def _hide(e: BaseException, paths: list[Path], farm: Farm) -> str:
    """An error's first line, the farm's own paths replaced (clients need not see them)."""
    line = first_line(e)
    for p, what in zip(paths, ("the upload", "the reference"), strict=False):
        line = line.replace(str(p), what)
    return line.replace(str(farm.workdir), "the farm")


def _split_file(path: Path, at: int, tail: Path) -> None:
    """Move the bytes of ``path`` from offset ``at`` on into the new file ``tail``."""
    with path.open("r+b") as f:
        f.seek(at)
        fd = os.open(tail, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out)
        f.truncate(at)


#: a byte count in a query or header: ASCII digits only (``str.isdigit`` takes "²"), and
#: few enough for ``int`` (a farm caps uploads far below 10**18 bytes anyway)
COUNT = re.compile(r"[0-9]{1,18}")

#: an answer given before the body is read (413, 503, 422…) first reads and drops the rest
#: of a body of at most this many caps: a connection closed with its body unread is reset
#: by the kernel, and a client still sending (urllib sends it all before reading) sees
#: "connection reset" instead of the answer. A larger body is not read at all (a client
#: learns the cap from GET /devices/NAME and never sends one), and its connection is closed
DRAIN_CAPS = 2


class Body:
    """A request's body, read chunk by chunk, so that what is left can be drained."""

    def __init__(self, request: Request, stall_s: float) -> None:
        self.chunks = request.stream().__aiter__()
        self.length = request.headers.get("content-length")
        self.state = request.state
        self.stall_s = stall_s
        self.read = 0

    async def next(self) -> bytes | None:
        """The next chunk, None at the end; TimeoutError after ``stall_s`` without one,
        ClientDisconnect."""
        try:
            async with asyncio.timeout(self.stall_s):
                chunk = await self.chunks.__anext__()
        except StopAsyncIteration:
            self.state.body_read = True
            return None
        self.read += len(chunk)
        return chunk

    async def drain(self, bound: int) -> None:
        """Read and drop the rest if the whole body is at most ``bound`` bytes, within
        ``stall_s`` in all (what a stalled or slow client leaves is not waited for)."""
        if self.length is not None and (not COUNT.fullmatch(self.length)
                                        or int(self.length) > bound):
            return
        try:
            async with asyncio.timeout(self.stall_s):
                while self.read <= bound and await self.next() is not None:
                    pass
        except (TimeoutError, ClientDisconnect):
            pass


#: the routes, as a 404 names them
ROUTES = ("GET /health", "GET /devices", "GET /devices/NAME", "POST /devices/NAME/measure",
          "POST /devices/NAME/measure_paired?split=BYTES")


def create_app(farm: Farm) -> Starlette:
    """The application serving ``farm``: JSON in and out, every error ``{"detail": …}``."""

    def fail(status: int, detail: str, **headers: str) -> HTTPException:
        return HTTPException(status, detail=detail, headers=headers or None)

    def auth(request: Request) -> None:
        if not farm.authorised(request.headers.get("authorization")):
            raise fail(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                       **{"WWW-Authenticate": "Bearer"})

    def known(request: Request) -> str:
        name = request.path_params["name"]
        if name not in farm.devices:
            raise fail(404, farm.unknown(name))
        return name

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def devices(request: Request) -> JSONResponse:
        auth(request)
        return JSONResponse({"devices": [farm.info(n) for n in sorted(farm.devices)]})

    async def device(request: Request) -> JSONResponse:
        auth(request)
        return JSONResponse(farm.info(known(request)))

    async def receive(body: Body, path: Path, fmt: str) -> int:
        """Stream the body into ``path``; its size. 408 on a stall, 413 past the cap."""
        limit = farm.max_upload_bytes
        size = 0
        with path.open("wb") as f:
            while True:     # a client that stops sending must not hold a place
                try:
                    chunk = await body.next()
                except ClientDisconnect:    # nobody to answer; no traceback in the log
                    raise fail(400, "the client disconnected during the upload") from None
                except TimeoutError:
                    raise fail(408, f"the upload stalled: no data for "
                               f"{farm.upload_stall_s:g} s") from None
                if chunk is None:
                    break
                size += len(chunk)
                if size > limit:
                    raise fail(413, f"the model file is larger than this farm accepts "
                               f"({limit} bytes)")
                f.write(chunk)
        if size == 0:
            raise fail(400, f"empty body: send the {fmt} model file as the request body")
        return size

    async def measure(request: Request, paired: bool = False) -> JSONResponse:
        auth(request)   # no token: nothing read (:func:`error` closes the connection)
        body = Body(request, farm.upload_stall_s)
        try:
            return await measure_body(request, body, paired)
        except HTTPException as e:
            if e.status_code != 408:    # a stalled client is not waited for again
                await body.drain(DRAIN_CAPS * farm.max_upload_bytes)
            raise

    async def measure_body(request: Request, body: Body, paired: bool) -> JSONResponse:
        name = known(request)
        query = dict(request.query_params)
        split = 0
        if paired:
            if not can_pair(farm.devices[name]):
                valid = [n for n in sorted(farm.devices) if can_pair(farm.devices[n])]
                raise fail(422, f"device {name!r} times one model at a time (a phone's "
                           "tool); measure_paired needs one of this farm's local runtimes; "
                           f"valid: {', '.join(valid) or 'none on this farm'}")
            raw = query.pop("split", "")
            if not COUNT.fullmatch(raw) or int(raw) < 1:
                raise fail(422, f"split={raw!r}: give the model's size in bytes "
                           "(split=N), the reference model's bytes following it in the body")
            split = int(raw)
        try:
            settings = parse_settings(query)
        except ValueError as e:
            raise fail(422, str(e)) from None
        limit = farm.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and (not COUNT.fullmatch(length) or int(length) > limit):
            raise fail(413, f"the model file is larger than this farm accepts ({limit} bytes)")
        fmt = farm.devices[name].model_format
        if not farm.reserve(name):      # before the upload: queued uploads count too
            raise fail(503, f"device {name!r} has {farm.max_queue} requests queued; retry "
                       "later", **{"Retry-After": str(farm.retry_after_s)})
        paths: list[Path] = []
        handed = False      # once queued, the queue owns the files and the place
        try:
            fd, tmp = tempfile.mkstemp(suffix=f".{fmt}", dir=farm.workdir)
            os.close(fd)
            paths.append(Path(tmp))
            size = await receive(body, paths[0], fmt)
            if paired:
                if split >= size:
                    raise fail(422, f"split={split} leaves no reference model: the body "
                               f"has {size} bytes (the model's, then the reference's)")
                paths.append(paths[0].with_name(f"{paths[0].stem}-reference.{fmt}"))
                await asyncio.to_thread(_split_file, paths[0], split, paths[1])
            for p, what in zip(paths, ("the upload", "the reference"), strict=False):
                try:   # parsing a large model would hold up every other request: a thread
                    await asyncio.to_thread(check_model, p, fmt)
                except ValueError as e:
                    raise fail(422, f"{str(e).replace('the upload', what)}; device "
                               f"{name!r} runs {fmt} models") from None
            fut = farm.submit(name, paths, settings)
            handed = True
            try:
                m = await asyncio.wrap_future(fut)
            except ValueError as e:     # the device refused a file or the settings
                raise fail(422, f"device {name!r} refused: {_hide(e, paths, farm)}") from None
            except DeviceUnreachable as e:  # the farm cannot reach it (unplugged): a 504
                raise fail(504, f"device {name!r} is unreachable: "
                                f"{_hide(e, paths, farm)}") from None
            except Exception as e:  # noqa: BLE001 - the device failed: its reason, a 502
                raise fail(502, f"device {name!r} failed: {_hide(e, paths, farm)}") from None
        except OSError as e:    # storing the upload: a full disk, say
            raise fail(507, f"the farm could not store the upload: "
                       f"{e.strerror or type(e).__name__}") from None
        finally:
            if not handed:
                for p in paths:
                    p.unlink(missing_ok=True)
                farm.release(name)
        if paired:
            return JSONResponse({"measurement": m[0].to_dict(), "reference": m[1].to_dict()})
        return JSONResponse(m.to_dict())

    async def measure_paired(request: Request) -> JSONResponse:
        return await measure(request, paired=True)

    async def error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        detail = e.detail
        if e.status_code == 405:    # Starlette's bare "Method Not Allowed": name the valid
            allow = (e.headers or {}).get("Allow", "")
            detail = f"{request.method} is not allowed on {request.url.path}; valid: {allow}"
        elif e.status_code == 404 and detail == "Not Found":    # no route matched
            detail = (f"no route {request.url.path}; valid: {', '.join(ROUTES)}")
        headers = dict(e.headers or {})
        sent = request.headers.get("content-length", "0") != "0" \
            or "transfer-encoding" in request.headers
        if sent and not getattr(request.state, "body_read", False):
            # a body left unread: uvicorn would read a keep-alive client's on to its end,
            # however long; closing bounds what the farm reads
            headers["Connection"] = "close"
        return JSONResponse({"detail": detail}, e.status_code, headers=headers)

    return Starlette(routes=[
        Route("/health", health), Route("/devices", devices),
        Route("/devices/{name}", device),
        Route("/devices/{name}/measure", measure, methods=["POST"]),
        Route("/devices/{name}/measure_paired", measure_paired, methods=["POST"])],
        exception_handlers={HTTPException: error})

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
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devices.farm import Farm, check_model, parse_settings


def _hide(e: BaseException, path: Path, farm: Farm) -> str:
    """An error's first line, the farm's own paths replaced (clients need not see them)."""
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else type(e).__name__
    return line.replace(str(path), "the upload").replace(str(farm.workdir), "the farm")


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

    async def measure(request: Request) -> JSONResponse:
        auth(request)
        name = known(request)
        try:
            settings = parse_settings(dict(request.query_params))
        except ValueError as e:
            raise fail(422, str(e)) from None
        limit = farm.max_upload_bytes
        too_big = f"the model file is larger than this farm accepts ({limit} bytes)"
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise fail(413, too_big)
        fmt = farm.devices[name].model_format
        if not farm.reserve(name):      # before the upload: queued uploads count too
            raise fail(503, f"device {name!r} has {farm.max_queue} requests queued; retry "
                       "later", **{"Retry-After": str(farm.retry_after_s)})
        path: Path | None = None
        handed = False      # once queued, the queue owns the file and the place
        try:
            fd, tmp = tempfile.mkstemp(suffix=f".{fmt}", dir=farm.workdir)
            path = Path(tmp)
            size = 0
            with os.fdopen(fd, "wb") as f:
                chunks = request.stream().__aiter__()
                while True:     # a client that stops sending must not hold a place
                    try:
                        async with asyncio.timeout(farm.upload_stall_s):
                            chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise fail(408, f"the upload stalled: no data for "
                                   f"{farm.upload_stall_s:g} s") from None
                    size += len(chunk)
                    if size > limit:
                        raise fail(413, too_big)
                    f.write(chunk)
            if size == 0:
                raise fail(400, f"empty body: send the {fmt} model file as the request body")
            try:   # parsing a large model would hold up every other request: a thread
                await asyncio.to_thread(check_model, path, fmt)
            except ValueError as e:
                raise fail(422, f"{e}; device {name!r} runs {fmt} models") from None
            fut = farm.submit(name, path, settings)
            handed = True
            try:
                m = await asyncio.wrap_future(fut)
            except ValueError as e:     # the device refused the file or the settings
                raise fail(422, f"device {name!r} refused: {_hide(e, path, farm)}") from None
            except Exception as e:  # noqa: BLE001 - the device failed: its reason, a 502
                raise fail(502, f"device {name!r} failed: {_hide(e, path, farm)}") from None
        finally:
            if not handed:
                if path is not None:
                    path.unlink(missing_ok=True)
                farm.release(name)
        return JSONResponse(m.to_dict())

    async def error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        return JSONResponse({"detail": e.detail}, e.status_code, headers=e.headers)

    return Starlette(routes=[
        Route("/health", health), Route("/devices", devices),
        Route("/devices/{name}", device), Route("/devices/{name}/measure", measure,
                                                methods=["POST"])],
        exception_handlers={HTTPException: error})

"""Run the real device farm (FastAPI under uvicorn) on a free loopback port in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

TOKEN = "test-token-0123456789abcdef"


@contextlib.contextmanager
def running_farm(devices: dict[str, Any], token: str = TOKEN, **options: Any
                 ) -> Iterator[tuple[str, Any]]:
    """Yield ``(base URL, Farm)`` while the farm serves ``devices``; stops it after."""
    import uvicorn

    from devices.farm import Farm
    from devices.farm_app import create_app

    farm = Farm(devices, token, **options)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(farm), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the farm did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", farm
    finally:
        server.should_exit = True
        thread.join(30)
        farm.close()
        sock.close()

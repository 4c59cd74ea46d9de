"""``mnas farm serve``: serve this host's devices to other machines (:mod:`devices.farm`).

Searches and CI jobs elsewhere then measure on them as ``--device http://HOST:PORT/NAME``
with the farm's token in ``$MNAS_FARM_TOKEN``. Each ``--device`` is ``SPEC`` or
``NAME=SPEC`` (default name: the spec with each ``:`` made ``-``, e.g. ``local-onnxruntime``);
without one the farm serves ``local:onnxruntime``. The same NAME for several identical
devices (``--device pixel7=adb:A --device pixel7=adb:B``: the same fingerprint) makes a
pool: a request is measured on whichever is free. The token is read from
``--token-file``, else ``$MNAS_FARM_TOKEN``; with neither a new one is made and printed.
The farm listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from mnas.cli import CliError
from mnas.cli.options import doc_help

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def register(sub: Any) -> None:
    p = sub.add_parser("farm", help="serve this host's devices over HTTP (a device farm)",
                       description=doc_help(__doc__, skip_first=True))
    fsub = p.add_subparsers(dest="farm_command", metavar="SUBCOMMAND",
                            parser_class=type(p))
    fsub.required = True
    s = fsub.add_parser("serve", help="measure uploaded models on this host's devices",
                        description=doc_help(__doc__, skip_first=True))
    s.add_argument("--device", action="append", default=None, metavar="[NAME=]SPEC",
                   help="a device to serve (repeatable; default local:onnxruntime; the "
                        "same NAME for identical devices makes a pool)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=None,
                   help="port (default 8470; 0: any free port, printed)")
    s.add_argument("--token-file", default=None, metavar="PATH",
                   help="file holding the bearer token (default: $MNAS_FARM_TOKEN, or a new "
                        "token printed at start)")
    s.add_argument("--max-upload-mb", type=float, default=64.0,
                   help="largest model file accepted, MiB (default 64)")
    s.add_argument("--max-queue", type=int, default=32,
                   help="measurements waiting per device before requests get 503 (default 32)")
    s.add_argument("--fingerprint-every", type=float, default=300.0, metavar="SECONDS",
                   help="read a device's fingerprint again once this long has passed, "
                        "before its next measurement (default 300): an updated phone is "
                        "served as it is now, and leaves a pool it no longer matches (rejoining "
                        "once it matches again)")
    s.add_argument("--measure-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="stop a measurement on this host's CPU after this long and answer "
                        "502 (default 600): uploads are measured in a child process, so a "
                        "model that never finishes, or crashes its runtime, costs one "
                        "request, not the farm")
    s.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="serve https with this certificate (with --tls-key); clients trust it "
                        "through ca_file in devices.toml or $MNAS_FARM_CA")
    s.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's key")
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="uvicorn's log level (default info: one line per request)")
    s.set_defaults(func=serve)


def parse_devices(values: list[str]) -> dict[str, list[str]]:
    """``[NAME=]SPEC`` values → name → specs (a name given several specs is a pool of
    identical devices); ValueError on a bad name or a spec served twice."""
    from devices.farm import NAME_RE, default_name

    out: dict[str, list[str]] = {}
    served: dict[str, str] = {}
    for v in values:
        name, sep, spec = v.partition("=")
        if not sep:
            name, spec = default_name(v), v
        if not NAME_RE.match(name):
            raise ValueError(f"--device {v!r}: name {name!r} must be 1-64 letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit")
        if spec in served:
            raise ValueError(f"--device {v!r}: {spec!r} is already served as "
                             f"{served[spec]!r}; a device is served once")
        if name in out and not sep:
            raise ValueError(f"--device {v!r}: the name {name!r} is already taken by "
                             f"{out[name][0]!r}; give one as NAME=SPEC (the same NAME for "
                             "several identical devices makes a pool)")
        served[spec] = name
        out.setdefault(name, []).append(spec)
    return out


def read_token(path: str | None) -> tuple[str, bool]:
    """(token, made here)."""
    if path is not None:
        p = Path(path).expanduser()
        try:
            token = p.read_text().strip()
        except OSError as e:
            raise ValueError(f"--token-file {p}: {e.strerror}") from None
        if not token:
            raise ValueError(f"--token-file {p} is empty")
        return token, False
    from devices.remote import TOKEN_ENV

    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip(), False
    return secrets.token_urlsafe(32), True


def clear_text_note(host: str, tls: bool) -> str | None:
    """What to say when the token would cross a network in the clear."""
    if tls or ipaddress.ip_address(host).is_loopback:
        return None
    return ("plain http beyond this host sends the token in the clear; serve https with "
            "--tls-cert/--tls-key or behind a TLS proxy")


def check_tls(cert: str, key: str) -> None:
    """ValueError naming the problem unless ``cert`` and ``key`` load as a pair."""
    import ssl

    for what, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise FileNotFoundError(2, f"{what} file not found", path)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ValueError(f"--tls-cert {cert} and --tls-key {key} do not load as a "
                         f"certificate and its key: {e.reason or e}") from None


def serve(args: argparse.Namespace) -> int:
    from devices.farm import DEFAULT_PORT

    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {port}")
    # an upload of at least a byte and at most 64 GiB (a model is megabytes)
    if not 1 / (1 << 20) <= args.max_upload_mb <= 65536 or args.max_queue < 1:
        raise ValueError(f"--max-upload-mb must be in [{1 / (1 << 20):.2g}, 65536] (MiB) and "
                         f"--max-queue >= 1; got {args.max_upload_mb:g} and {args.max_queue}")
    if not 0 < args.measure_timeout <= 86400:
        raise ValueError(f"--measure-timeout must be in (0, 86400] seconds, got "
                         f"{args.measure_timeout:g}")
    if not args.fingerprint_every >= 0:
        raise ValueError(f"--fingerprint-every must be >= 0 seconds, got "
                         f"{args.fingerprint_every:g}")
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise CliError(f"mnas farm needs the farm extra ({e.name} is missing): "
                       "pip install -e '.[farm]'") from None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    tls = {}
    if args.tls_cert is not None:
        tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
        check_tls(args.tls_cert, args.tls_key)
    names = parse_devices(args.device or ["local:onnxruntime"])
    token, made = read_token(args.token_file)
    if len(token) < 16:
        raise ValueError("the farm's token must be at least 16 characters")
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.create_server((args.host, port), family=family)
    except OSError as e:
        raise CliError(f"cannot listen on {args.host}:{port}: {e.strerror or e}") from None
    from devices.base import get_device
    from devices.farm import Farm
    from devices.farm_app import create_app
    from devices.local import LocalDevice

    devices: dict[str, list[Any]] = {}
    try:
        for name, specs in names.items():
            for spec in specs:
                # uploads are untrusted: this host's runtimes measure them in a child process
                # (a phone's commands have their own command_timeout_s)
                d = LocalDevice(spec, isolate=True, timeout_s=args.measure_timeout) \
                    if spec.startswith("local:") else get_device(spec)
                devices.setdefault(name, []).append(d)
        farm = Farm(devices, token, max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                    max_queue=args.max_queue, fingerprint_ttl_s=args.fingerprint_every)
    except BaseException as e:
        sock.close()
        for pool in devices.values():
            for d in pool:
                d.close()
        if isinstance(e, RuntimeError):     # a device it cannot reach: one line
            from devices.base import first_line

            raise CliError(f"cannot serve the devices: {first_line(e)}") from None
        raise
    host, bound = sock.getsockname()[:2]
    url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{bound}"
    print(f"mnas farm: {url} serving {len(devices)} device(s):", flush=True)
    for name, pool in devices.items():
        what = pool[0].spec if len(pool) == 1 else \
            f"a pool of {len(pool)}: {', '.join(d.spec for d in pool)}"
        print(f"  {url}/{name}  {what} ({pool[0].model_format})", flush=True)
    if made:
        print(f"token (clients: export MNAS_FARM_TOKEN=...): {token}", flush=True)
    note = clear_text_note(host, bool(tls))
    if note:
        print(f"mnas farm: note: {note}", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(create_app(farm), log_level=args.log_level,
                                           access_log=args.log_level in ("info", "debug"),
                                           **tls))
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again with the
    # handlers it found: let that end the command here, after the farm's clean-up
    old = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        farm.close()
        sock.close()
    print("mnas farm: stopped", file=sys.stderr)
    return 0


class _Stopped(Exception):
    """SIGTERM, re-raised by uvicorn after its graceful shutdown."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped

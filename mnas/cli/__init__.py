"""The ``mnas`` command line. Each sub-command lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``.

Bad input (ValueError, FileNotFoundError, FileExistsError, TypeError raised at a public
boundary) becomes one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

# One module per command group; keep one entry per line.
COMMANDS = (
    "mnas.cli.search_cmd",
    "mnas.cli.front_cmd",
    "mnas.cli.train_cmd",
    "mnas.cli.arch_cmd",
    "mnas.cli.latency_cmd",
    "mnas.cli.devices_cmd",
    "mnas.cli.lut_cmd",
    "mnas.cli.bench_cmd",
    "mnas.cli.farm_cmd",
)

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_USAGE, f"mnas: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnas", description="Hardware-aware neural architecture search "
                     "for mobile (MnasNet's measured-latency reward).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command group not built yet must not break the rest
            if e.name == name:
                continue
            raise
        mod.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner's or service manager's stop), handled as a Ctrl-C is: what a
    command saves on Ctrl-C it saves here, and the exit status is 143."""


#: signals received while a command runs (see :func:`check_stop`)
_RECEIVED: list[int] = []


def _stop(signum: int, frame: Any) -> None:
    _RECEIVED.append(signum)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def check_stop() -> None:
    """Raise again a Ctrl-C or SIGTERM this process received. Python drops an exception
    raised while a finalizer runs (garbage collection of a database connection, seen:
    a search went on after SIGTERM); a long loop calls this between steps."""
    if _RECEIVED:
        raise Terminated if _RECEIVED[-1] == signal.SIGTERM else KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    import contextlib
    import threading

    with contextlib.ExitStack() as stack:
        _RECEIVED.clear()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue    # e.g. SIGINT for a shell's background job: left ignored
                stack.callback(signal.signal, sig, signal.signal(sig, _stop))
        try:    # a Ctrl-C while the commands import (torch: seconds) is no traceback either
            args = build_parser().parse_args(argv)
        except KeyboardInterrupt as e:
            return _interrupted(e)
        args.resources = stack      # held until the command returns (a run folder's lock)
        return _run(args)


def _interrupted(e: KeyboardInterrupt) -> int:
    # Lightning swallows the handler's Terminated and exits; what comes out of it is a
    # plain KeyboardInterrupt (evaluators.proxy.lightning_interrupts): the record says
    terminated = isinstance(e, Terminated) or _RECEIVED[-1:] == [signal.SIGTERM]
    print(f"mnas: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    return 143 if terminated else 130


def _run(args: argparse.Namespace) -> int:
    from devices.base import DeviceUnreachable

    try:
        rc = args.func(args)
    except (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError, DeviceUnreachable) as e:
        msg = str(e) or e.__class__.__name__
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        print(f"mnas: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `mnas ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        return _interrupted(e)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The ``mnas`` command line. Each sub-command lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``.

Bad input (ValueError, FileNotFoundError, FileExistsError, TypeError raised at a public
boundary) becomes one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except KeyboardInterrupt:
        print("mnas: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

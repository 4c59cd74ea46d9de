"""``mnas arch``: inspect architectures of a search space.

* ``mnas arch info ARCH|NAME [--space S] [--classes N] [--resolution R]`` — JSON with the
  canonical string, space, parameters and MACs of the full-size model.
* ``mnas arch sample [--space S] [--n N] [--seed S]`` — random canonical strings.
* ``mnas arch list`` — registered spaces and their named points.
"""

from __future__ import annotations

import argparse
import json
import random

from mnas.cli.options import doc_help
from mnas.spaces import get_space, space_names

DEFAULT_SPACE = "mnasnet"


def _at_most(limit: int):
    """A positive integer no larger than ``limit`` (a model this host can build)."""
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit}, got {text!r}")
        return value
    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _info(args: argparse.Namespace) -> int:
    from mnas.counting import arch_stats  # torch import only when needed

    space = get_space(args.space)
    arch = space.parse(args.arch)
    stats = arch_stats(space, arch, num_classes=args.classes, resolution=args.resolution)
    out = {"arch": arch.encode(), "space": space.name, "params": stats["params"],
           "macs": stats["macs"],
           "classes": args.classes if args.classes is not None else space.deploy_classes,
           "resolution": (args.resolution if args.resolution is not None
                          else space.deploy_resolution)}
    if args.arch in space.named():
        out["name"] = args.arch
    print(json.dumps(out, indent=2))
    return 0


def _sample(args: argparse.Namespace) -> int:
    space = get_space(args.space)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        print(space.sample(rng).encode())
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in space_names():
        space = get_space(name)
        mark = "  (default)" if name == DEFAULT_SPACE else ""
        print(f"{name}{mark}")
        for point, arch in space.named().items():
            print(f"  {point}: {arch.encode()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("arch", help="inspect architectures (info, sample, list)",
                                   description=doc_help(__doc__),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="arch_command", metavar="ACTION")
    sub.required = True
    spaces = space_names()

    info = sub.add_parser("info", help="canonical string, parameters and MACs of one arch")
    info.add_argument("arch", metavar="ARCH|NAME",
                      help="a canonical arch string or a named point (e.g. mobilenetv2)")
    info.add_argument("--space", default=DEFAULT_SPACE, choices=spaces,
                      help=f"search space (default {DEFAULT_SPACE})")
    info.add_argument("--classes", type=_at_most(100_000), default=None,
                      help="classifier outputs, up to 100000 (default: the space's "
                           "deployment classes)")
    info.add_argument("--resolution", type=_at_most(2048), default=None,
                      help="input side in pixels, up to 2048 (default: the space's "
                           "deployment size)")
    info.set_defaults(func=_info)

    sample = sub.add_parser("sample", help="print random canonical arch strings")
    sample.add_argument("--space", default=DEFAULT_SPACE, choices=spaces,
                        help=f"search space (default {DEFAULT_SPACE})")
    sample.add_argument("--n", type=_positive_int, default=5, help="how many (default 5)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(func=_sample)

    lst = sub.add_parser("list", help="registered spaces and their named points")
    lst.set_defaults(func=_list)

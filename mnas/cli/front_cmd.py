"""``mnas front RUN_DIR``: print the accuracy/latency front and re-export its files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mnas import run as runmod
from mnas.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("front", help="print and re-export a run's Pareto front",
                       description="Reads the run's ledger and rewrites trials.csv, "
                       "pareto.csv/json/png and the front models.")
    p.add_argument("run_dir", help="a folder written by `mnas search`")
    p.add_argument("--no-export", action="store_true",
                   help="skip exporting front models (models/ is left as it is)")
    p.add_argument("--json", action="store_true", help="print pareto.json instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnas.report import device_change_note, print_front
    from mnas.spaces import get_space

    out = runmod.check_run_folder(args.run_dir)
    cfg = runmod.load_config(out)
    trials = runmod.load_trials(out, cfg)
    space = get_space(cfg["space"], **cfg.get("space_options", {}))
    latency = _exporting_latency(cfg, out) if not args.no_export else None
    doc = runmod.write_run_reports(out, cfg, trials, space, export=not args.no_export,
                                   latency=latency)
    changed = device_change_note(trials, cfg.get("device_fingerprint"))
    if changed:
        print(f"mnas: note: {changed}", file=sys.stderr)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_front(doc)
    return 0


def _exporting_latency(cfg: dict[str, Any], out: Path) -> Any:
    """The estimator that exports the front models, where only the run's device can say
    their format: a measured run from before config.json recorded ``model_format``.
    Otherwise None (the recorded format, or ONNX for a table or lookup table), so
    printing the front never waits on a device that has gone."""
    if cfg.get("model_format") or cfg["latency"].partition(":")[0] != "measured":
        return None
    try:
        return runmod.make_latency(cfg, out)
    except (ValueError, RuntimeError, OSError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"the run's config.json predates model_format, so only its device "
                       f"{cfg['device']} can say the front models' format, and it cannot be "
                       f"reached ({why}); --no-export prints the front without them") from None

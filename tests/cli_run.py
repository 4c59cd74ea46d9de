"""Running ``mnas`` as a user does, for the command-line tests: a subprocess, or the
settings of a tiny real search and of a table search."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--budget", "3", "--epochs", "1", "--batch-limit", "2", "--runs", "5", "--warmup", "1",
        "--max-runs", "10", "--no-progress", "--seed", "3"]
NB201 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_dev.csv"
#: a search on the nb201 table: nothing is trained or timed, so no proxy or timing flags
TABLE = ["--budget", "3", "--no-progress", "--seed", "3", "--space", "nb201",
         "--accuracy", f"table:{NB201}#cifar100_acc", "--latency", f"table:{NB201}#raspi4_ms"]


def mnas(*args: str, cache: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNAS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mnas", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)

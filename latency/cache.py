"""SQLite cache of measurements: no model is measured twice on the same device.

Key: (model sha256, device fingerprint hash, runtime + version, ``settings.key()``). A
result measured on other hardware, another runtime version or with other settings never
answers. Several processes (workers of one search, several searches) may share one file:
WAL journaling lets readers run beside a writer and a busy timeout makes writers wait
instead of failing. Noisy measurements are stored with their flag and come back flagged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latency.measurement import Measurement, MeasureSettings
from latency.paths import folder_error

#: seconds a writer waits for another process's lock before giving up
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    model_sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    runtime TEXT NOT NULL,
    settings TEXT NOT NULL,
    noisy INTEGER NOT NULL,
    median_ms REAL NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (model_sha256, fingerprint, runtime, settings)
)
"""


def default_cache_path() -> Path:
    """``$MNAS_CACHE_DIR/latency.db``, else ``~/.cache/mnas/latency.db``."""
    base = os.environ.get("MNAS_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "mnas"
    return root / "latency.db"


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """Stable hash of a device fingerprint (canonical JSON, sorted keys)."""
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def runtime_key(runtime: str, runtime_version: str) -> str:
    return f"{runtime}=={runtime_version}"


class MeasurementCache:
    """Measurements in one SQLite file (created on first use, with its folder)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"latency cache path {self.path} exists and is not a file")
        # opened here, before anything is measured, so a bad file is one line, not a
        # traceback minutes later
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:   # not SQLite, or cannot be opened / written
            raise ValueError(f"latency cache {self.path}: {e}; use another cache file "
                             "(--cache or $MNAS_CACHE_DIR)") from None
        except OSError as e:
            raise ValueError(f"latency cache {self.path}: cannot create its folder "
                             f"{self.path.parent} ({folder_error(e)})") from None

    def __repr__(self) -> str:
        return f"MeasurementCache({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # one short connection per operation: safe across threads and forked workers
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            with con:  # one transaction, committed on success
                yield con
        finally:
            con.close()

    def get(self, model_sha256: str, fingerprint: dict[str, Any], runtime: str,
            runtime_version: str, settings: MeasureSettings) -> Measurement | None:
        """The stored measurement for this key (``cached=True``), or None."""
        with self._connect() as con:
            row = con.execute(
                "SELECT record, noisy FROM measurements WHERE model_sha256 = ? AND "
                "fingerprint = ? AND runtime = ? AND settings = ?",
                (model_sha256, fingerprint_hash(fingerprint),
                 runtime_key(runtime, runtime_version), settings.key()),
            ).fetchone()
        if row is None:
            return None
        m = Measurement.from_dict(json.loads(row[0]))
        return m.with_(cached=True, noisy=bool(row[1]) or m.noisy)

    def put(self, measurement: Measurement, settings: MeasureSettings) -> None:
        """Store (or replace) ``measurement``; its own fields give the key."""
        m = measurement
        record = m.with_(cached=False).to_dict()
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (m.model_sha256, fingerprint_hash(m.fingerprint),
                 runtime_key(m.runtime, m.runtime_version), settings.key(), int(m.noisy),
                 m.median_ms, time.time(), json.dumps(record, sort_keys=True)),
            )

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

"""MeasurementCache: round trip, key separation, noisy flag, default path, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from latency.cache import MeasurementCache, default_cache_path
from latency.measurement import Measurement, MeasureSettings

FP = {"kind": "local", "cpu": "Test CPU", "cores": 2, "runtime": "onnxruntime",
      "runtime_version": "1.0"}


def record(sha: str = "a" * 64, fp: dict | None = None, samples=(1.0, 1.1, 0.9, 1.05, 0.95),
           version: str = "1.0") -> Measurement:
    return Measurement.from_samples(list(samples), warmup=2, threads=1, runtime="onnxruntime",
                                    runtime_version=version, model_sha256=sha,
                                    device="local:onnxruntime", fingerprint=fp or FP)


def test_round_trip_marks_hit_cached(tmp_path: Path) -> None:
    cache = MeasurementCache(tmp_path / "c.db")
    s = MeasureSettings()
    m = record()
    assert cache.get(m.model_sha256, FP, "onnxruntime", "1.0", s) is None
    cache.put(m, s)
    hit = cache.get(m.model_sha256, dict(FP), "onnxruntime", "1.0", s)
    assert hit is not None and hit.cached and not m.cached
    assert hit.with_(cached=False) == m  # every field survives, samples included
    assert len(cache) == 1


@pytest.mark.parametrize("change", ["sha", "fingerprint", "version", "settings"])
def test_any_key_part_changed_is_a_miss(tmp_path: Path, change: str) -> None:
    cache = MeasurementCache(tmp_path / "c.db")
    s = MeasureSettings()
    m = record()
    cache.put(m, s)
    sha, fp, ver, settings = m.model_sha256, dict(FP), "1.0", s
    if change == "sha":
        sha = "b" * 64
    elif change == "fingerprint":
        fp["cpu"] = "Other CPU"
    elif change == "version":
        ver = "1.1"
    else:
        settings = MeasureSettings(threads=2)
    assert cache.get(sha, fp, "onnxruntime", ver, settings) is None
    assert cache.get(m.model_sha256, FP, "onnxruntime", "1.0", s) is not None


def test_noisy_is_stored_and_returned_flagged(tmp_path: Path) -> None:
    cache = MeasurementCache(tmp_path / "c.db")
    s = MeasureSettings()
    noisy = record(samples=(1.0, 5.0, 0.5, 9.0, 2.0, 0.1, 7.0))
    assert noisy.noisy
    cache.put(noisy, s)
    hit = cache.get(noisy.model_sha256, FP, "onnxruntime", "1.0", s)
    assert hit is not None and hit.noisy and hit.cached
    with sqlite3.connect(cache.path) as con:
        assert con.execute("SELECT noisy FROM measurements").fetchone() == (1,)


def test_default_path_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache-here"))
    assert default_cache_path() == tmp_path / "cache-here" / "latency.db"
    cache = MeasurementCache()
    assert cache.path.is_file()
    with sqlite3.connect(cache.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.delenv("MNAS_CACHE_DIR")
    assert default_cache_path() == Path.home() / ".cache" / "mnas" / "latency.db"


def test_directory_as_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file"):
        MeasurementCache(tmp_path)


def _writer(path: str, worker: int) -> None:
    cache = MeasurementCache(path)
    for i in range(15):
        cache.put(record(sha=f"{worker:02d}{i:062d}"), MeasureSettings())


def test_concurrent_processes_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(MeasurementCache(path)) == 45

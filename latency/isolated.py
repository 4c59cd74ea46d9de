"""Measure model files in a child process that is stopped after a time limit.

An untrusted model (a farm upload) can stop a runtime for good in a 300-byte file: an
ONNX ``Loop`` or a TFLite ``WHILE`` with a trip count of 10¹², or a convolution declared
over an enormous input. Run in the measuring process, such a model holds its device (and
the process's shutdown) forever, and a runtime that crashes on a crafted file takes the
process with it. :func:`measure_isolated` loads and times the files in a fresh
``python -m latency.isolated`` instead: past ``timeout_s`` its process group is killed
and a crash is a signal, each one :class:`RuntimeError` naming the file. The timing
itself is the same :func:`latency.protocol.measure_interleaved` as in-process, run on
the child's main thread (so ``clock="cpu"`` keeps its meaning).

The request and answer are JSON on the child's stdin and stdout; nothing goes through a
shell. Cost: a child start, ≈ 0.3 s with ONNX Runtime on a 2-core host.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from latency.export import check_onnx
from latency.measurement import MeasureSettings
from latency.protocol import measure_interleaved
from latency.runtimes import Runtime, get_runtime

#: exceptions the child reports by name and the parent raises again as the same type
#: (bad input stays ValueError / FileNotFoundError; everything else is the runtime's)
_KINDS: dict[str, type[Exception]] = {"ValueError": ValueError,
                                      "FileNotFoundError": FileNotFoundError,
                                      "RuntimeError": RuntimeError}


def time_files(runtime: Runtime, paths: list[Path], settings: MeasureSettings
               ) -> tuple[list[list[float]], bool]:
    """Load every file with ``runtime`` and time them interleaved: what an in-process
    :class:`devices.local.LocalDevice` runs, and the child here. ValueError when a file is
    no model at all (bad input); RuntimeError with the reason when the runtime fails."""
    runs = []
    for p in paths:
        try:
            runs.append(runtime.load(p, settings.threads))
        except RuntimeError:
            if runtime.model_format == "onnx":
                check_onnx(p)   # a file that is no model at all is bad input: ValueError
            raise
    try:
        return measure_interleaved(runs, settings)
    except Exception as e:  # noqa: BLE001 - the runtime failed mid-measurement
        what = " and ".join(str(p) for p in paths)
        raise RuntimeError(f"{runtime.name} failed while measuring {what}: {e}") from e


def worker_argv() -> list[str]:
    """The child's command line (a test replaces it to stand in for a crash)."""
    return [sys.executable, "-m", "latency.isolated"]


def measure_isolated(runtime: str, paths: list[Path], settings: MeasureSettings,
                     timeout_s: float, live: Live | None = None
                     ) -> tuple[list[list[float]], bool]:
    """``measure_interleaved`` over ``paths`` loaded with ``runtime``, in a child process;
    returns (one sample list per path, noisy). RuntimeError when it ran past
    ``timeout_s`` (the child is killed) or the child died; the child's own ValueError /
    FileNotFoundError / RuntimeError come back as that type with its message. While it
    runs the child is in ``live``, whose :meth:`Live.kill` stops it."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    what = " and ".join(str(p) for p in paths)
    request = json.dumps({"runtime": runtime, "paths": [str(p) for p in paths],
                          "settings": asdict(settings)})
    # its own session, so the kill reaches any process the runtime started
    proc = subprocess.Popen(worker_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, text=True)
    live = live if live is not None else Live()
    try:
        live.add(proc)
        out, err = proc.communicate(request, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise RuntimeError(f"{runtime} did not finish measuring {what} within {timeout_s:g} s "
                           "(stopped; a model that runs this long is refused)") from None
    except BaseException:   # interrupted: never leave the child measuring
        _kill(proc)
        raise
    finally:
        live.discard(proc)
    if live.was_killed(proc):
        raise RuntimeError(f"measuring {what} was stopped: the device is closing")
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise RuntimeError(f"{runtime} crashed while measuring {what} ({sig})")
    try:
        answer = json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        last = (err.strip().splitlines() or ["no output"])[-1][:300]
        raise RuntimeError(f"{runtime} exited with status {proc.returncode} while measuring "
                           f"{what}: {last}") from None
    if "error" in answer:
        kind = _KINDS.get(answer["error"].get("type"), RuntimeError)
        raise kind(str(answer["error"].get("message", "")))
    return [[float(v) for v in s] for s in answer["samples"]], bool(answer["noisy"])


class Live:
    """The children measuring now, for one owner (a device) to stop them all at once."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[str]] = set()
        self._killed: set[int] = set()      # pids kill() stopped
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def was_killed(self, proc: subprocess.Popen[str]) -> bool:
        with self._lock:
            return proc.pid in self._killed

    def kill(self) -> None:
        """SIGKILL every child measuring now (their measurements raise RuntimeError)."""
        with self._lock:
            procs = list(self._procs)
            self._killed.update(p.pid for p in procs)
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """The child's side: :func:`time_files` on the request, its samples as the answer."""
    import latency.litert  # noqa: F401 - registers local:litert's runtime (lazy imports)

    samples, noisy = time_files(get_runtime(request["runtime"]),
                                [Path(p) for p in request["paths"]],
                                MeasureSettings(**request["settings"]))
    return {"samples": samples, "noisy": noisy}


def main() -> int:
    try:
        answer = _serve(json.loads(sys.stdin.read()))
    except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as data
        answer = {"error": {"type": type(e).__name__, "message": str(e)}}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The phone behind the loopback ADB daemon: a folder as its filesystem, a shell that runs
only whitelisted commands in Python, and benchmark tools that time models on this host.

Files live in a per-instance folder (``root``) holding ``/sys`` cpufreq and thermal files
and ``/data/local/tmp``; device paths never resolve outside it. The shell parses the
command line with :mod:`shlex` and runs ``getprop``, ``cat``, ``ls``, ``rm``, ``mkdir``,
``chmod``, ``echo``, ``sha256sum``, ``taskset MASK CMD...`` and a pushed (executable)
``benchmark_model`` / ``onnxruntime_perf_test``, which time the pushed model with LiteRT /
ONNX Runtime and print the real tools' output formats. A command line with an *unquoted*
shell metacharacter (``; | & $ ` < > ( )`` or a newline) is refused and recorded in
:attr:`FakePhone.refused`: a client that builds shell strings from unquoted input fails the
tests instead of being silently "injected".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

PROPS = {"ro.product.model": "Fake Pixel", "ro.product.manufacturer": "Google",
         "ro.product.board": "fakeboard", "ro.board.platform": "fake8150",
         "ro.build.version.sdk": "33", "ro.build.version.release": "13",
         "ro.product.cpu.abi": "arm64-v8a"}
#: a 1+3+4 phone (kHz)
CPUS = {0: 1785600, 1: 1785600, 2: 1785600, 3: 1785600,
        4: 2419200, 5: 2419200, 6: 2419200, 7: 2841600}
FORMATS = ("modern", "no_percentiles", "legacy", "summary")
_META = set(";|&$`<>()\n")


def unquoted_metachar(cmd: str) -> str | None:
    """The first shell metacharacter that ``sh`` would interpret in ``cmd``, or None."""
    quote = None
    i = 0
    while i < len(cmd):
        ch = cmd[i]
        if quote == "'":
            if ch == "'":
                quote = None
        elif ch == "\\":
            i += 1
        elif quote == '"':
            if ch == '"':
                quote = None
            elif ch in "$`":
                return ch
        elif ch in "'\"":
            quote = ch
        elif ch in _META:
            return ch
        i += 1
    return None


class Dropped(Exception):
    """Raised by a benchmark invocation that should cut the connection (see
    ``drop_benchmarks``); the daemon closes the socket."""


class FakePhone:
    """Options: ``props`` (getprop), ``cpus`` (core -> max kHz), ``governor``, ``temps_c``
    (per thermal zone), ``cool_per_read_c`` (a zone cools by this much each time it is
    read), ``benchmark_format`` (``modern`` | ``no_percentiles`` | ``legacy`` |
    ``summary``), ``preinstalled`` (a ``benchmark_model`` already in /data/local/tmp),
    ``drop_benchmarks`` (the first N benchmark invocations raise :class:`Dropped`)."""

    def __init__(self, root: str | os.PathLike[str], *, props: dict[str, str] | None = None,
                 cpus: dict[int, int] | None = None, governor: str = "schedutil",
                 temps_c: tuple[float, ...] = (36.5, 38.0), cool_per_read_c: float = 0.0,
                 benchmark_format: str = "modern", preinstalled: bool = False,
                 drop_benchmarks: int = 0) -> None:
        if benchmark_format not in FORMATS:
            raise ValueError(f"benchmark_format {benchmark_format!r} invalid; valid: "
                             f"{', '.join(FORMATS)}")
        self.root = Path(root).resolve()
        self.props = {**PROPS, **(props or {})}
        self.cpus = dict(CPUS if cpus is None else cpus)
        self.cool_per_read_c = cool_per_read_c
        self.benchmark_format = benchmark_format
        self.drop_benchmarks = drop_benchmarks
        self.commands: list[list[str]] = []  # every shell argv run, in order
        self.refused: list[str] = []         # command lines refused (unquoted metachar)
        self.benchmarks = 0
        self._make_fs(governor, temps_c, preinstalled)

    def path(self, device_path: str) -> Path:
        """Host path of a device path; ValueError for paths outside the device."""
        if not device_path.startswith("/"):
            device_path = "/data/local/tmp/" + device_path  # the shell's working directory
        norm = posixpath.normpath(device_path)
        p = (self.root / norm.lstrip("/")).resolve()
        if p != self.root and self.root not in p.parents:
            raise ValueError(f"{device_path}: outside the device")
        return p

    def _make_fs(self, governor: str, temps_c: tuple[float, ...], preinstalled: bool) -> None:
        for c, khz in self.cpus.items():
            base = self.path(f"/sys/devices/system/cpu/cpu{c}/cpufreq")
            base.mkdir(parents=True, exist_ok=True)
            (base / "cpuinfo_max_freq").write_text(f"{khz}\n")
            (base / "scaling_governor").write_text(f"{governor}\n")
        for d in ("cpufreq", "cpuidle"):
            self.path(f"/sys/devices/system/cpu/{d}").mkdir(parents=True, exist_ok=True)
        self.path("/sys/devices/system/cpu/online").write_text(f"0-{max(self.cpus)}\n")
        for z, t in enumerate(temps_c):
            zone = self.path(f"/sys/class/thermal/thermal_zone{z}")
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "temp").write_text(f"{int(t * 1000)}\n")
            (zone / "type").write_text(f"zone{z}\n")
        self.path("/sys/class/thermal/cooling_device0").mkdir(parents=True, exist_ok=True)
        self.path("/data/local/tmp").mkdir(parents=True, exist_ok=True)
        if preinstalled:
            b = self.path("/data/local/tmp/benchmark_model")
            b.write_bytes(b"\x7fELF fake benchmark_model build 2.16\n")
            b.chmod(0o755)

    # -- the shell -------------------------------------------------------------------------
    def shell(self, line: str) -> str:
        """Run one command line as the phone's ``sh -c`` would (whitelisted commands)."""
        bad = unquoted_metachar(line)
        if bad is not None:
            self.refused.append(line)
            return f"/system/bin/sh: refused: unquoted {bad!r} in command line\n"
        try:
            argv = shlex.split(line)
        except ValueError as e:
            return f"/system/bin/sh: syntax error: {e}\n"
        if not argv:
            return ""
        self.commands.append(argv)
        return self._run(argv)

    def _run(self, argv: list[str]) -> str:
        name, args = argv[0], argv[1:]
        if name == "taskset":
            if len(args) < 2 or not all(c in "0123456789abcdefABCDEF" for c in args[0]):
                return "taskset: usage: taskset MASK COMMAND...\n"
            mask = int(args[0], 16)
            if mask == 0 or mask >> (max(self.cpus) + 1):
                return f"taskset: sched_setaffinity: Invalid argument (mask {args[0]})\n"
            return self._run(args[1:])
        simple = {"getprop": self._getprop, "cat": self._cat, "ls": self._ls, "rm": self._rm,
                  "mkdir": self._mkdir, "chmod": self._chmod, "sha256sum": self._sha256sum,
                  "echo": lambda a: " ".join(a) + "\n"}
        if name in simple:
            return simple[name](args)
        base = posixpath.basename(name)
        if base in ("benchmark_model", "onnxruntime_perf_test") and "/" in name:
            try:
                exe = self.path(name)
            except ValueError:
                exe = None
            if exe is None or not exe.is_file():
                return f"/system/bin/sh: {name}: inaccessible or not found\n"
            if not os.access(exe, os.X_OK):
                return f"/system/bin/sh: {name}: can't execute: Permission denied\n"
            self.benchmarks += 1
            if self.benchmarks <= self.drop_benchmarks:
                raise Dropped
            if base == "benchmark_model":
                return self._benchmark_model(args)
            return self._ort_perf_test(args)
        return f"/system/bin/sh: {name}: inaccessible or not found\n"

    def _getprop(self, args: list[str]) -> str:
        if args:
            return self.props.get(args[0], args[1] if len(args) > 1 else "") + "\n"
        return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items()))

    def _cat(self, args: list[str]) -> str:
        out = []
        for a in args:
            try:
                p = self.path(a)
                text = p.read_text()
            except (OSError, ValueError):
                out.append(f"cat: {a}: No such file or directory\n")
                continue
            out.append(text)
            if p.name == "temp" and self.cool_per_read_c:
                p.write_text(f"{int(int(text) - self.cool_per_read_c * 1000)}\n")
        return "".join(out)

    def _ls(self, args: list[str]) -> str:
        out = []
        for a in args or ["/data/local/tmp"]:
            try:
                p = self.path(a)
            except ValueError:
                p = None
            if p is None or not p.exists():
                out.append(f"ls: {a}: No such file or directory\n")
            elif p.is_dir():
                out += [c.name + "\n" for c in sorted(p.iterdir())]
            else:
                out.append(a + "\n")
        return "".join(out)

    def _rm(self, args: list[str]) -> str:
        out = []
        force = any(a.startswith("-") and "f" in a for a in args)
        for a in (a for a in args if not a.startswith("-")):
            try:
                self.path(a).unlink()
            except (OSError, ValueError):
                if not force:
                    out.append(f"rm: {a}: No such file or directory\n")
        return "".join(out)

    def _mkdir(self, args: list[str]) -> str:
        for a in (a for a in args if not a.startswith("-")):
            with contextlib.suppress(OSError, ValueError):
                self.path(a).mkdir(parents=True, exist_ok=True)
        return ""

    def _chmod(self, args: list[str]) -> str:
        if len(args) < 2 or not all(c in "01234567" for c in args[0]):
            return "chmod: usage: chmod OCTAL FILE...\n"
        out = []
        for a in args[1:]:
            try:
                self.path(a).chmod(int(args[0], 8))
            except (OSError, ValueError):
                out.append(f"chmod: {a}: No such file or directory\n")
        return "".join(out)

    def _sha256sum(self, args: list[str]) -> str:
        out = []
        for a in args:
            try:
                out.append(f"{hashlib.sha256(self.path(a).read_bytes()).hexdigest()}  {a}\n")
            except (OSError, ValueError):
                out.append(f"sha256sum: {a}: No such file or directory\n")
        return "".join(out)

    # -- the benchmark tools ---------------------------------------------------------------
    def _benchmark_model(self, args: list[str]) -> str:
        flags = dict(a[2:].partition("=")[::2] for a in args if a.startswith("--"))
        graph = flags.get("graph", "")
        try:
            threads = int(flags.get("num_threads", "1"))
            warmup = int(flags.get("warmup_runs", "1"))
            runs = int(flags.get("num_runs", "50"))
            path = self.path(graph)
        except ValueError as e:
            return f"ERROR: bad flag: {e}\nBenchmarking failed.\n"
        head = (f"INFO: STARTING!\nINFO: Num threads: [{threads}]\nINFO: Graph: [{graph}]\n"
                f"INFO: #threads used for CPU inference: [{threads}]\n")
        if not path.is_file():
            return head + f"ERROR: Could not open '{graph}'.\nERROR: Failed to load model\n"
        from latency.litert import load_interpreter

        t0 = time.perf_counter()
        try:
            it = load_interpreter(path, threads)
        except (ValueError, RuntimeError) as e:
            return head + f"ERROR: {e}\nERROR: Failed to load model\n"
        init_us = (time.perf_counter() - t0) * 1e6
        warm = self._time(it.invoke, max(1, warmup))
        timed = self._time(it.invoke, max(1, runs))
        fmt = self.benchmark_format
        if fmt == "legacy":
            return (f"Graph: [{graph}]\nTimings (microseconds): count={len(timed)} "
                    f"{self._stats(timed, False)}\n")
        lines = [head, f"INFO: Loaded model {graph}\n",
                 f"INFO: Initialized session in {init_us / 1000:.3f}ms.\n"]
        pct = fmt == "modern"
        if fmt != "summary":
            lines += [f"INFO: count={len(warm)} {self._stats(warm, pct)}\n\n",
                      f"INFO: count={len(timed)} {self._stats(timed, pct)}\n\n"]
        lines.append(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: "
                     f"{warm[0]:.0f}, Warmup (avg): {np.mean(warm):.6g}, Inference (avg): "
                     f"{np.mean(timed):.6g}\n")
        return "".join(lines)

    @staticmethod
    def _time(fn: Any, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e6)
        return out

    @staticmethod
    def _stats(us: list[float], percentiles: bool) -> str:
        x = np.asarray(us)
        s = (f"first={x[0]:.0f} curr={x[-1]:.0f} min={x.min():.0f} max={x.max():.0f} "
             f"avg={x.mean():.6g} std={x.std():.0f}")
        if not percentiles:
            return s
        p5, med, p95 = np.percentile(x, [5, 50, 95])
        return s + f" p5={p5:.0f} median={med:.0f} p95={p95:.0f}"

    def _ort_perf_test(self, args: list[str]) -> str:
        opts: dict[str, str] = {}
        it = iter(args)
        model = ""
        for a in it:
            if a in ("-e", "-m", "-r", "-x"):
                opts[a] = next(it, "")
            elif a.startswith("-"):
                continue
            else:
                model = a
        try:
            reps, threads = int(opts.get("-r", "1000")), int(opts.get("-x", "1"))
            path = self.path(model)
            from latency.runtimes import get_runtime

            run = get_runtime("onnxruntime").load(path, threads)
        except (ValueError, RuntimeError, OSError) as e:
            return f"Error: {e}\n"
        first = self._time(run, 1)[0] / 1e3
        t = np.asarray(self._time(run, max(1, reps))) / 1e6  # seconds
        lines = [f"Session creation time cost: 0.01 s\nFirst inference time cost: {first:.0f} ms\n",
                 f"Total inference time cost: {t.sum():.6g} s\n",
                 f"Total inference requests: {len(t)}\n",
                 f"Average inference time cost: {t.mean() * 1e3:.6g} ms\n"]
        lines += [f"{name} Latency: {v:.6g} s\n" for name, v in
                  (("Min", t.min()), ("Max", t.max()))]
        lines += [f"P{name} Latency: {np.percentile(t, q):.6g} s\n" for name, q in
                  (("50", 50), ("90", 90), ("95", 95), ("99", 99), ("999", 99.9))]
        return "".join(lines)

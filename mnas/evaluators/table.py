"""``table:PATH#COLUMN`` evaluators: accuracy or latency looked up in a CSV.

The CSV has an ``arch`` column of canonical strings (the space's ``encode()``) and one
column per metric. Accuracy columns hold fractions in [0, 1]; latency columns hold
milliseconds > 0. Both are checked when the table is loaded, so a bad table fails at
start-up, not halfway through a search. Each file is parsed once per process (cached by
path, size and modification time) and every look-up is a dict access, so a 1,000-child
table-driven search takes seconds.

An architecture that is not in the table raises :class:`ArchNotInTable` ("arch not in
table PATH: ARCH"), which the loop records as a failed trial with that reason. Relative
paths resolve against the current working directory. ``shared/data/nb201_dev.csv`` is
the NAS-Bench-201 table (CIFAR-100 accuracy; Raspberry Pi 4, FPGA, Galaxy S7 latency).
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from latency.measurement import Measurement
from latency.paths import check_input_path
from mnas.evaluate import register_accuracy, register_latency
from mnas.spaces.base import shown

ARCH_COLUMN = "arch"


class ArchNotInTable(LookupError):
    """The architecture (or its value in the requested column) is not in the table."""


@dataclass
class Table:
    """A parsed CSV: raw cells by column, numeric columns converted on first use."""

    path: Path
    columns: tuple[str, ...]                       # metric columns (without ``arch``)
    archs: list[str]
    raw: dict[str, list[str]]
    _numeric: dict[str, dict[str, float]] = field(default_factory=dict)

    @cached_property
    def arch_set(self) -> frozenset[str]:
        return frozenset(self.archs)

    def column(self, name: str) -> dict[str, float]:
        """``arch -> value`` for one column (empty cells are absent); ValueError if the
        column is unknown or holds a non-number."""
        if name not in self.raw:
            raise ValueError(f"no column {name!r} in table {self.path}; "
                             f"valid: {', '.join(self.columns)}")
        if name not in self._numeric:
            values: dict[str, float] = {}
            for line, (arch, cell) in enumerate(zip(self.archs, self.raw[name],
                                                    strict=True), start=2):
                cell = cell.strip()
                if not cell:
                    continue
                try:
                    v = float(cell)
                except ValueError:
                    raise ValueError(f"{self.path} line {line}: column {name!r} holds "
                                     f"{cell!r}, not a number") from None
                if not math.isfinite(v):
                    raise ValueError(f"{self.path} line {line}: column {name!r} holds "
                                     f"{cell!r}; values must be finite")
                values[arch] = v
            self._numeric[name] = values
        return self._numeric[name]


_CACHE: dict[str, tuple[tuple[int, int], Table]] = {}


def load_table(path: str | Path) -> Table:
    """Parse (or reuse) the CSV at ``path``; FileNotFoundError / ValueError if unusable."""
    p = check_input_path(path, "table").resolve()
    if p.is_dir():
        raise ValueError(f"table {p} is a folder, not a CSV file")
    if not p.is_file():
        raise FileNotFoundError(f"table {p} does not exist (relative paths resolve against "
                                f"{Path.cwd()})")
    st = p.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(str(p))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        table = _parse(p)
    except UnicodeDecodeError as e:
        raise ValueError(f"table {p} is not UTF-8 text (byte {e.start}): a CSV file is "
                         "needed") from None
    except csv.Error as e:
        raise ValueError(f"table {p} is not a readable CSV: {e}") from None
    _CACHE[str(p)] = (stamp, table)
    return table


def _parse(p: Path) -> Table:
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"table {p} is empty; it needs a header with an "
                             f"{ARCH_COLUMN!r} column")
        header = [h.strip() for h in header]
        if ARCH_COLUMN not in header:
            raise ValueError(f"table {p} has no {ARCH_COLUMN!r} column; columns: "
                             f"{', '.join(header)}")
        if len(set(header)) != len(header):
            raise ValueError(f"table {p} repeats a column name: {', '.join(header)}")
        ia = header.index(ARCH_COLUMN)
        archs: list[str] = []
        raw: dict[str, list[str]] = {h: [] for h in header if h != ARCH_COLUMN}
        first_line: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{p} line {line}: {len(row)} cells, header has {len(header)}")
            arch = row[ia].strip()
            if arch in first_line:
                raise ValueError(f"{p} line {line}: arch {shown(arch)} repeats line "
                                 f"{first_line[arch]}")
            first_line[arch] = line
            archs.append(arch)
            for h, cell in zip(header, row, strict=True):
                if h != ARCH_COLUMN:
                    raw[h].append(cell)
    if not archs:
        raise ValueError(f"table {p} has a header but no rows")
    return Table(p, tuple(raw), archs, raw)


def parse_spec(arg: str, kind: str) -> tuple[Table, str]:
    """``PATH#COLUMN`` → (table, column); the error lists the table's columns."""
    path, sep, column = arg.rpartition("#")
    if not sep or not path or not column:
        hint = ""
        if arg and Path(arg).expanduser().is_file():
            hint = f"; columns in {arg}: {', '.join(load_table(arg).columns)}"
        raise ValueError(f"{kind} spec must be table:PATH#COLUMN, got table:{arg}{hint}")
    return load_table(path), column


def _key(arch: Any) -> str:
    return arch if isinstance(arch, str) else arch.encode()


class _Tabulated:
    table: Table
    column: str
    values: dict[str, float]

    def _require_values(self) -> None:
        if not self.values:
            raise ValueError(f"table {self.table.path} column {self.column!r} holds no "
                             "values")

    def check(self, space: Any) -> None:
        """ValueError unless the table's architectures are ``space``'s (checked on the
        first rows): a table for another space would fail every child."""
        reasons = []
        for arch in list(self.values)[:5]:
            try:
                space.decode(arch)
                return
            except Exception as e:  # noqa: BLE001 — any decoder's refusal
                reasons.append(str(e).strip().splitlines()[0] if str(e).strip() else
                               type(e).__name__)
        raise ValueError(f"table {self.table.path} does not hold architectures of the "
                         f"{getattr(space, 'name', space)!r} space: {reasons[0]}")


class TableAccuracy(_Tabulated):
    """Callable ``(space, arch) -> float``: the accuracy (fraction) tabulated for ``arch``."""

    def __init__(self, path: str | Path, column: str) -> None:
        self.table = load_table(path)
        self.column = column
        self.values = self.table.column(column)
        self._require_values()
        bad = next(((a, v) for a, v in self.values.items() if not 0.0 <= v <= 1.0), None)
        if bad is not None:
            raise ValueError(f"table {self.table.path} column {column!r}: accuracy "
                             f"{bad[1]} for {shown(bad[0])} is not a fraction in [0, 1] "
                             "(divide percentages by 100)")

    def __call__(self, space: Any, arch: Any) -> float:
        key = _key(arch)
        try:
            return self.values[key]
        except KeyError:
            raise _missing(self.table, self.column, key) from None


class TableLatency(_Tabulated):
    """Callable ``(space, arch) -> Measurement``: one tabulated sample, runtime ``table``,
    device = the column name, model hash = SHA-256 of the canonical string."""

    def __init__(self, path: str | Path, column: str) -> None:
        self.table = load_table(path)
        self.column = column
        self.values = self.table.column(column)
        self._require_values()
        bad = next(((a, v) for a, v in self.values.items() if not v > 0.0), None)
        if bad is not None:
            raise ValueError(f"table {self.table.path} column {column!r}: latency {bad[1]} "
                             f"ms for {shown(bad[0])} is not > 0")

    def __call__(self, space: Any, arch: Any) -> Measurement:
        key = _key(arch)
        try:
            ms = self.values[key]
        except KeyError:
            raise _missing(self.table, self.column, key) from None
        # what Measurement.from_samples([ms]) gives, built directly: numpy's percentiles
        # would cost more than the whole look-up
        return Measurement(
            samples_ms=(ms,), median_ms=ms, p10_ms=ms, p90_ms=ms, mad_ms=0.0, ci_low_ms=ms,
            ci_high_ms=ms, runs=1, warmup=0, threads=1, runtime="table", runtime_version="",
            model_sha256=hashlib.sha256(key.encode()).hexdigest(), device=self.column,
            fingerprint={"table": str(self.table.path), "column": self.column},
            timestamp=time.time())


def _missing(table: Table, column: str, key: str) -> ArchNotInTable:
    if key in table.arch_set:
        return ArchNotInTable(f"arch has no {column!r} value in table {table.path}: {key}")
    return ArchNotInTable(f"arch not in table {table.path}: {key}")


@register_accuracy("table", "table:PATH#COLUMN")
def make_table_accuracy(arg: str, **context: Any) -> TableAccuracy:
    table, column = parse_spec(arg, "accuracy")
    return TableAccuracy(table.path, column)


@register_latency("table", "table:PATH#COLUMN")
def make_table_latency(arg: str, **context: Any) -> TableLatency:
    table, column = parse_spec(arg, "latency")
    return TableLatency(table.path, column)

"""table:PATH#COLUMN evaluators against the real NB201 table and small synthetic CSVs."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from latency.measurement import Measurement
from mnas.evaluate import make_accuracy, make_latency
from mnas.evaluators.table import ArchNotInTable
from mnas.spaces import get_space

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201_dev.csv"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def rows():
    with DATA.open(newline="") as f:
        return {r["arch"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_lookups_match_the_csv(rows, space):
    acc = make_accuracy(f"table:{DATA}#cifar100_acc")
    lat = make_latency(f"table:{DATA}#samsung_s7_ms")
    rng = random.Random(1)
    for arch_str in rng.sample(sorted(rows), 50):
        arch = space.decode(arch_str)
        assert acc(space, arch) == float(rows[arch_str]["cifar100_acc"])
        m = lat(space, arch)
        assert isinstance(m, Measurement)
        assert m.median_ms == m.samples_ms[0] == float(rows[arch_str]["samsung_s7_ms"])
        assert (m.runtime, m.device, m.runs, m.noisy) == ("table", "samsung_s7_ms", 1, False)
    # the known best CIFAR-100 accuracy of the benchmark
    assert max(acc(space, space.decode(a)) for a in rows) == pytest.approx(0.7351, abs=1e-4)
    assert acc(space, space.parse("best_cifar100")) == acc(space, BEST)


def test_measurement_equals_from_samples(space):
    lat = make_latency(f"table:{DATA}#raspi4_ms")
    m = lat(space, space.decode(BEST))
    ref = Measurement.from_samples([m.median_ms], warmup=0, threads=1, runtime="table",
                                   runtime_version="", model_sha256=m.model_sha256,
                                   device="raspi4_ms", fingerprint=m.fingerprint)
    assert m.with_(timestamp=0.0) == ref.with_(timestamp=0.0)
    other = lat(space, space.parse("resnet"))
    assert len(m.model_sha256) == 64 and m.model_sha256 != other.model_sha256


def test_relative_path_resolves_against_cwd(tmp_path, space, monkeypatch):
    write(tmp_path / "t.csv", f"arch,acc,ms\n{BEST},0.5,3.25\n")
    monkeypatch.chdir(tmp_path)
    assert make_accuracy("table:t.csv#acc")(space, BEST) == 0.5
    assert make_latency("table:./t.csv#ms")(space, BEST).median_ms == 3.25


def test_missing_arch_names_the_table(tmp_path, space):
    path = write(tmp_path / "t.csv", f"arch,acc,ms\n{BEST},0.5,\n{NONE},0.1,2.5\n")
    acc = make_accuracy(f"table:{path}#acc")
    other = space.parse("resnet")
    with pytest.raises(ArchNotInTable, match=r"arch not in table .*t\.csv: \|nor_conv_3x3~0\|"):
        acc(space, other)
    # an empty cell: the arch is known but has no value in that column
    with pytest.raises(ArchNotInTable, match="no 'ms' value"):
        make_latency(f"table:{path}#ms")(space, BEST)


@pytest.mark.parametrize("spec, err, needle", [
    ("table:{p}#nope", ValueError, "valid: acc, ms"),
    ("table:{p}", ValueError, "columns in .*: acc, ms"),
    ("table:{d}/absent.csv#acc", FileNotFoundError, "absent.csv does not exist"),
    ("table:{d}/loop.csv#acc", ValueError, "loop.csv cannot be resolved: a symbolic link loop"),
])
def test_bad_spec_errors(tmp_path, spec, err, needle):
    path = write(tmp_path / "t.csv", f"arch,acc,ms\n{BEST},0.5,3\n")
    (tmp_path / "loop.csv").symlink_to("loop.csv")   # resolve() raised RuntimeError
    with pytest.raises(err, match=needle):
        make_accuracy(spec.format(p=path, d=tmp_path))


@pytest.mark.parametrize("body, kind, needle", [
    ("arch,acc\nA,73.5\n", "accuracy", r"73.5 for 'A' is not a fraction"),
    ("arch,acc\nA,-0.1\n", "accuracy", r"not a fraction in \[0, 1\]"),
    ("arch,acc\nA,fast\n", "accuracy", r"line 2: column 'acc' holds 'fast'"),
    ("arch,acc\nA,nan\n", "accuracy", "must be finite"),
    ("arch,acc\nA,0\n", "latency", "latency 0.0 ms for 'A' is not > 0"),
    ("arch,acc\nA,0.1\nA,0.2\n", "accuracy", "line 3: arch 'A' repeats line 2"),
    (f"arch,acc\n{'A' * 9000},0.1\n{'A' * 9000},0.2\n", "accuracy",
     r"line 3: arch 'A{80}'… \(9,000 characters\) repeats line 2$"),
    ("name,acc\nA,0.1\n", "accuracy", "no 'arch' column; columns: name, acc"),
    ("arch,acc\nA,0.1,9\n", "accuracy", "line 2: 3 cells"),
    ("arch,acc\nA,\nB,\n", "latency", "column 'acc' holds no values"),
    ("arch,acc\n", "accuracy", "has a header but no rows"),
])
def test_bad_tables_fail_at_load(tmp_path, body, kind, needle):
    path = write(tmp_path / "t.csv", body)
    make = make_accuracy if kind == "accuracy" else make_latency
    with pytest.raises(ValueError, match=needle):
        make(f"table:{path}#acc")


def test_table_is_reloaded_when_the_file_changes(tmp_path, space):
    path = write(tmp_path / "t.csv", f"arch,acc\n{BEST},0.25\n")
    assert make_accuracy(f"table:{path}#acc")(space, BEST) == 0.25
    write(path, f"arch,acc\n{BEST},0.75\n")
    os.utime(path, ns=(1, 10**18))  # a different mtime even on coarse filesystems
    assert make_accuracy(f"table:{path}#acc")(space, BEST) == 0.75


def test_unknown_scheme_lists_table():
    with pytest.raises(ValueError, match=r"table:PATH#COLUMN"):
        make_accuracy("tabel:x.csv#acc")


def test_missing_arch_becomes_a_failed_trial_in_the_loop(tmp_path, space):
    from mnas.reward import Reward
    from search.loop import ChildScorer

    path = write(tmp_path / "t.csv", f"arch,acc,ms\n{BEST},0.5,3.0\n")
    scorer = ChildScorer(space, make_accuracy(f"table:{path}#acc"),
                         make_latency(f"table:{path}#ms"), [Reward(10.0)], count_stats=False)
    ok = scorer(0, space.to_choices(space.decode(BEST)), BEST)
    assert ok.ok and (ok.accuracy, ok.latency_ms) == (0.5, 3.0)
    other = space.parse("resnet")
    failed = scorer(1, space.to_choices(other), other.encode())
    assert failed.state == "failed" and failed.reward is None
    assert f"arch not in table {path}" in failed.reason

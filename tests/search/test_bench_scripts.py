"""The strategy benchmarks' own behaviour: ``benchmarks/strategies.py`` — which specs run
on the table, ENAS on the table's own images (``--images``), a bad ``--images`` as one
line, exit 2 — and ``benchmarks/enas_speed.py``'s bad ``--opt``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.strategies import TRAINS_ON_IMAGES, select_specs
from mnas.spaces import get_space
from tests.cifar_files import write_cifar100

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "strategies.py"
TINY_ENAS = ("enas[resolution=8;width_mult=0.25;batch_size=16;warmup_steps=0;shared_steps=2;"
             "controller_steps=1;controller_batch=2;val_batch=16;candidates=3;"
             "rank_examples=32]")


def test_images_go_to_the_strategies_that_train_on_them():
    space = get_space("nb201")
    raw = ["random", "enas", "enas[data='digits']", "pnas"]
    specs, skipped = select_specs(raw, space, None, everything=True)
    assert [s for s, _ in skipped] == ["enas"] and "--images" in skipped[0][1]
    assert [s[0] for s in specs] == ["random", "enas[data='digits']", "pnas"]
    specs, skipped = select_specs(raw, space, "cifar100:/data", everything=True)
    opts = {spec: o for spec, _, o in specs}
    assert opts["enas"] == {"data": "cifar100:/data"}
    assert opts["enas[data='digits']"] == {"data": "digits"}      # the spec's own wins
    assert "data" not in opts["random"]
    # named explicitly, it runs without --images (on its default data)
    specs, skipped = select_specs(["enas"], space, None, everything=False)
    assert specs == [("enas", "enas", {})] and not skipped
    assert set(TRAINS_ON_IMAGES) == {"enas"}


def _run(*args: str, cwd: Path, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_enas_runs_on_the_table_with_cifar100_images(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    out = tmp_path / "out"
    r = _run("--strategies", TINY_ENAS, "--images", f"cifar100:{tmp_path}", "--budgets", "4",
             "--seeds", "1", "--speed-children", "0", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out / "runs.csv", newline="") as f:
        rows = {row["strategy"]: row for row in csv.DictReader(f)}
    assert 0 < float(rows[TINY_ENAS]["hv_ratio"]) <= 1
    assert rows[TINY_ENAS]["budget"] == "4"


def _refused(main, argv: list[str], monkeypatch, capsys) -> str:
    """Run a script's ``main`` in this process (no interpreter start-up) with ``argv``;
    it must stop with exit code 2 and no traceback. Returns its stderr."""
    monkeypatch.setattr(sys, "argv", ["script.py", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    return err


def test_bad_images_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from benchmarks.strategies import main

    missing = tmp_path / "nope"
    err = _refused(main, ["--images", f"cifar100:{missing}", "--out", str(tmp_path / "o")],
                   monkeypatch, capsys)
    assert f"--images: CIFAR-100 folder not found: {missing}" in err
    err = _refused(main, ["--images", "cifar1000:/x", "--out", str(tmp_path / "o")],
                   monkeypatch, capsys)
    assert "cifar100:PATH" in err
    assert not (tmp_path / "o").exists()


def test_enas_speed_bad_options_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from benchmarks.enas_speed import main

    err = _refused(main, ["--space", "nb201", "--opt", "shared_step=5", "--out",
                          str(tmp_path / "o")], monkeypatch, capsys)
    assert "--opt: unknown enas option 'shared_step'; valid: " in err
    assert "shared_steps" in err and not (tmp_path / "o").exists()
    err = _refused(main, ["--space-opt", "ops=mbconv9", "--out", str(tmp_path / "o")],
                   monkeypatch, capsys)
    assert "--space-opt: ops must be a comma-separated subset of conv, dsconv" in err


def test_workers_bench_bad_input_is_one_line_and_exit_2(monkeypatch, capsys):
    from benchmarks.workers import main

    err = _refused(main, ["--workers", "1"], monkeypatch, capsys)
    assert "need --budget >= 1 and --workers >= 2" in err
    err = _refused(main, ["--space", "nope"], monkeypatch, capsys)   # mnas search's own line
    assert err.count("\n") == 1 and "unknown space 'nope'" in err and "valid: " in err


def test_proxy_device_compares_the_same_children_on_each_setting(tmp_path, monkeypatch,
                                                                  capsys):
    import json

    import torch

    from benchmarks import proxy_device

    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", [
        "proxy_device.py", "--space", "nb201", "--children", "2", "--epochs", "1",
        "--width-mult", "0.25", "--resolution", "8", "--cpu-threads", "1",
        "--json", str(out)])
    proxy_device.main()
    doc = json.loads(out.read_text())
    names = ["cpu-t1"] + (["cuda"] if torch.cuda.is_available() else [])
    assert len(doc["rows"]) == 2 and len({row["arch"] for row in doc["rows"]}) == 2
    for row in doc["rows"]:
        for n in names:
            assert row[n + "_s"] > 0 and 0.0 <= row[n + "_acc"] <= 1.0
    assert ("speedup_cuda_over_cpu-t1" in doc["summary"]) == torch.cuda.is_available()
    monkeypatch.setattr(sys, "argv", ["proxy_device.py", "--cpu-threads", "1,0"])
    with pytest.raises(SystemExit) as e:
        proxy_device.main()
    assert e.value.code == 2
    assert "--cpu-threads must be positive integers" in capsys.readouterr().err


def test_proxy_device_profile_prints_the_costliest_ops(capsys):
    import torch

    from benchmarks.proxy_device import _profile

    def child(space, arch) -> float:      # stands in for a proxy training: a few ops
        x = torch.randn(8, 8, requires_grad=True)
        (x @ x).relu().sum().backward()
        return 0.5

    _profile(child, None, None, 3, "cpu-t1")
    printed = capsys.readouterr().out
    assert "profiled child on cpu-t1" in printed and "Self CPU time total" in printed
    assert "aten::mm" in printed

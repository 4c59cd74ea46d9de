"""``mnas arch``: info (as a real subprocess), sample and list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnas.cli import main
from mnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, "-m", "mnas", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_info_of_mobilenetv2() -> None:
    proc = run_cli("arch", "info", "mobilenetv2", "--space", "mnasnet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["params"] == 3_504_872
    assert abs(out["macs"] - 300.8e6) / 300.8e6 < 0.02
    assert out["space"] == "mnasnet"
    space = get_space("mnasnet")
    assert space.decode(out["arch"]) == space.named()["mobilenetv2"]


def test_bad_arch_is_one_line_exit_2() -> None:
    bad = get_space("mnasnet").named()["mobilenetv2"].encode().replace("_c24_", "_c25_")
    proc = run_cli("arch", "info", bad, "--space", "mnasnet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'c25'" in lines[0] and "c18, c24, c30" in lines[0]
    assert proc.stdout == ""


def test_info_in_process_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "info", "mobilenetv2", "--classes", "10", "--resolution", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == 10 and out["resolution"] == 64
    assert out["params"] == 3_504_872 - 990 * 1281
    assert main(["arch", "info", "not-an-arch"]) == 2
    assert "named point" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["arch", "info", "mobilenetv2", "--space", "nope"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["arch", "info", "mobilenetv2", "--classes", "0"])
    assert e.value.code == 2
    capsys.readouterr()
    # sizes no host could build: refused, not a traceback from the allocator
    for flag, value in (("--classes", "10000000000"), ("--resolution", "100000")):
        with pytest.raises(SystemExit) as e:
            main(["arch", "info", "mobilenetv2", flag, value])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "expected at most" in err and err.count("\n") == 1


@pytest.mark.parametrize(("space", "old", "new"), [
    ("mnasnet", "_r2_", "_r٢_"), ("nasrl", "L1:", "L１:"), ("pnas", "~4+", "~٤+")])
def test_info_refuses_digits_of_other_scripts(capsys: pytest.CaptureFixture[str], space: str,
                                              old: str, new: str) -> None:
    bad = next(iter(get_space(space).named().values())).encode().replace(old, new, 1)
    assert main(["arch", "info", bad, "--space", space]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("mnas: error: ") and err.count("\n") == 1, err
    assert new.strip("_:~+") in err


def test_info_quotes_a_huge_arch_cut(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "info", "ds_" + "x" * 120_000]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400 and "(120,003 characters)" in err, err[:400]


def test_sample_is_seeded_and_canonical(capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("mnasnet")
    assert main(["arch", "sample", "--n", "4", "--seed", "3"]) == 0
    first = capsys.readouterr().out.split()
    assert main(["arch", "sample", "--n", "4", "--seed", "3"]) == 0
    assert capsys.readouterr().out.split() == first
    assert main(["arch", "sample", "--n", "4", "--seed", "4"]) == 0
    assert capsys.readouterr().out.split() != first
    assert len(first) == 4
    assert all(space.decode(s).encode() == s for s in first)


def test_list_shows_spaces_and_named_points(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnasnet  (default)" in out
    mbv2 = get_space("mnasnet").named()["mobilenetv2"].encode()
    assert f"  mobilenetv2: {mbv2}" in out

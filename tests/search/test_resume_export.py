"""A run's front models across resumes: a ``--no-export`` run stays so, and a front that
moved leaves no file of the old one behind."""

from __future__ import annotations

import csv

from tests.cli_run import TABLE


def _front_files(run):
    with open(run / "pareto.csv") as f:
        listed = {row["model"] for row in csv.DictReader(f)}
    on_disk = {f"models/{p.name}" for p in (run / "models").glob("*")} \
        if (run / "models").exists() else set()
    return listed, on_disk


def test_a_no_export_run_resumes_without_exporting(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["search", "--out", str(run), *TABLE, "--strategy", "random",
                 "--no-export"]) == 0
    assert main(["search", "--out", str(run), "--resume", "--budget", "6"]) == 0
    err = capsys.readouterr().err
    assert not (run / "models").exists()
    assert "front models not exported (--no-export); `mnas front" in err
    assert main(["front", str(run)]) == 0       # the way to export them later
    listed, on_disk = _front_files(run)
    assert listed == on_disk and on_disk


def test_a_resumed_front_replaces_the_old_front_files(tmp_path, monkeypatch):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["search", "--out", str(run), *TABLE, "--strategy", "random"]) == 0
    first, _ = _front_files(run)
    mine = run / "models" / "notes.txt"        # not a front file: never touched
    mine.write_text("keep")
    assert main(["search", "--out", str(run), "--resume", "--budget", "40"]) == 0
    listed, on_disk = _front_files(run)
    assert listed != first, "the front did not move; pick another seed"
    assert on_disk == listed | {"models/notes.txt"}
    assert mine.read_text() == "keep"


def test_a_failed_export_keeps_the_front_files_and_says_so(tmp_path, monkeypatch, capsys):
    """`mnas front` with a format nothing exports: every front file was deleted (exit 0)."""
    import json

    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["search", "--out", str(run), *TABLE, "--strategy", "random"]) == 0
    _, before = _front_files(run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "model_format": "bogus"}))
    capsys.readouterr()
    assert main(["front", str(run)]) == 0
    err = capsys.readouterr().err
    assert "front models were not exported (export failed: ValueError" in err, err
    assert _front_files(run)[1] == before and before

"""A run folder under stress: a second process on it, SIGTERM, Ctrl-C while the commands
load, and a folder whose study, checkpoint or config was lost or damaged."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mnas import run as runmod
from tests.cli_run import ROOT, TABLE


def _search(run, *extra):
    return ["search", "--out", str(run), *TABLE, "--strategy", "random", "--no-export", *extra]


def test_a_second_search_on_a_held_run_folder_is_refused(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_search(run)) == 0
    before = (run / "trials.csv").read_text()
    capsys.readouterr()
    with runmod.lock_run(run):    # as another process searching it would
        for args in (["search", "--out", str(run), "--resume", "--budget", "6"],
                     _search(run, "--force")):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert f"mnas: error: {run} is in use by mnas pid" in err, err
            assert err.count("mnas: error") == 1 and "Traceback" not in err
    assert (run / "trials.csv").read_text() == before, "the held run was touched"
    assert main(["search", "--out", str(run), "--resume", "--budget", "6"]) == 0  # released


def test_sigterm_saves_like_ctrl_c_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    env_cache = tmp_path / "cache"
    p = subprocess.Popen([sys.executable, "-m", "mnas", *_search(run, "--budget", "100000")],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**__import__("os").environ, "MNAS_CACHE_DIR": str(env_cache)})
    try:
        deadline = time.monotonic() + 120
        while not (run / runmod.CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 143, err[-2000:]
    assert "children are saved; `mnas search --out" in err and err.endswith("mnas: terminated\n")
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(env_cache))
    done = len(runmod.load_trials(run, runmod.load_config(run)))
    assert main(["search", "--out", str(run), "--resume", "--budget", str(done + 3)]) == 0


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
    import mnas.cli as cli

    def slow_imports():
        raise KeyboardInterrupt     # what a Ctrl-C during `import torch` raises
    monkeypatch.setattr(cli, "build_parser", slow_imports)
    assert cli.main(["search"]) == 130
    assert capsys.readouterr().err == "mnas: interrupted\n"


def _lose(name):
    def damage(run):
        target = run / name
        if name == runmod.CONFIG:
            data = json.loads(target.read_text())
            del data["targets_ms"]
            target.write_text(json.dumps(data))
        elif name == "empty-study":
            (run / runmod.STUDY).write_bytes(b"")
        else:
            target.unlink()
    return damage


@pytest.mark.parametrize("damage, needle", [
    # the next asks reused the old slots and were told the old children's results
    (_lose(runmod.CHECKPOINT), "strategy.ckpt is missing beside a study of 4 children"),
    # silently searched afresh, and the reports lost the earlier children
    (_lose(runmod.STUDY), "has strategy.ckpt but no study.db: its children are lost"),
    (_lose("empty-study"), "has strategy.ckpt but an empty study.db"),
    (_lose(runmod.CONFIG), "config.json lacks targets_ms: not a config mnas search wrote"),
])
def test_a_run_that_lost_a_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys, damage,
                                                        needle):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_search(run, "--budget", "4")) == 0
    damage(run)
    capsys.readouterr()
    before = sorted(p.name for p in run.iterdir())
    assert main(["search", "--out", str(run), "--resume", "--budget", "6"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert sorted(p.name for p in run.iterdir()) == before, "a refused resume wrote files"


def test_a_run_killed_before_its_study_existed_resumes(tmp_path, monkeypatch, capsys):
    """config.json is written before study.db: a kill between them leaves a run that
    --resume starts (it said "--resume" while --resume said "not a run folder")."""
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_search(run, "--budget", "2")) == 0
    for name in (runmod.STUDY, runmod.CHECKPOINT, "trials.csv", "pareto.csv", "pareto.json",
                 "pareto.png"):
        (run / name).unlink()
    assert main(["search", "--out", str(run), "--resume", "--budget", "3"]) == 0
    assert len(runmod.load_trials(run, runmod.load_config(run))) == 3
    shutil.rmtree(run)


def test_a_stop_python_dropped_still_stops_the_search(tmp_path, monkeypatch, capsys):
    """A signal handler's exception raised inside a finalizer (garbage collection) is
    dropped by Python; the signal is recorded, and the loop stops at the next child."""
    import mnas.cli as cli
    from search.loop import SearchLoop

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    save, calls = SearchLoop._save, []

    def save_then_signal(self):
        save(self)
        calls.append(1)
        if len(calls) == 3:         # the handler ran, its exception went nowhere
            cli._RECEIVED.append(signal.SIGTERM)
    monkeypatch.setattr(SearchLoop, "_save", save_then_signal)
    run = tmp_path / "run"
    assert cli.main(_search(run, "--budget", "50")) == 143
    err = capsys.readouterr().err
    assert "children are saved" in err and err.endswith("mnas: terminated\n")
    assert len(runmod.load_trials(run, runmod.load_config(run))) < 50


def test_sigterm_while_a_child_trains_is_terminated_not_interrupted(tmp_path, monkeypatch,
                                                                     capsys):
    """Lightning catches the handler's Terminated inside ``fit`` and exits; the search said
    "interrupted", exit 130, for a SIGTERM that arrived while a child trained."""
    import os

    import mnas.cli as cli
    from mnas.train.module import ClassifierModule

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    step, steps = ClassifierModule.training_step, []

    def step_then_sigterm(self, batch, batch_idx):
        steps.append(1)
        if len(steps) == 3:     # the second child's first step (2 steps a child)
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch, batch_idx)
    monkeypatch.setattr(ClassifierModule, "training_step", step_then_sigterm)
    run = tmp_path / "run"
    args = _search(run, "--budget", "4")
    args[args.index("--accuracy") + 1] = "proxy"
    assert cli.main([*args, "--epochs", "1", "--batch-limit", "2", "--width-mult", "0.25"]
                    ) == 143
    err = capsys.readouterr().err
    assert "1 of 4 children are saved" in err and err.endswith("mnas: terminated\n"), err


@pytest.mark.parametrize("patch, needle", [
    ({"latency": 5}, "has latency = 5, not a string"),            # was AttributeError
    ({"device_fingerprint": "abc"}, "has device_fingerprint = 'abc', not an object"),
    ({"targets_ms": "80"}, "has targets_ms = '80', not a list"),  # was targets 8 and 0
    ({"study_name": "nope"}, "holds no study 'nope'"),            # was an empty new study
    ({"storage": "not a url"}, "does not exist"),                 # was a new SQLite file
])
def test_front_of_a_damaged_config_is_one_line_and_writes_nothing(tmp_path, monkeypatch,
                                                                   capsys, patch, needle):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(_search(run, "--budget", "4")) == 0
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, **patch}))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["front", str(run), "--no-export"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == {**before, "config.json": after["config.json"]}


def test_a_study_db_from_another_run_is_refused(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run, other = tmp_path / "run", tmp_path / "other"
    assert main(_search(run, "--budget", "4")) == 0
    assert main(_search(other, "--budget", "2")) == 0
    shutil.copy(other / runmod.STUDY, run / runmod.STUDY)
    capsys.readouterr()
    assert main(["search", "--out", str(run), "--resume", "--budget", "6"]) == 2
    err = capsys.readouterr().err
    assert "the study holds 0 finished children but strategy.ckpt was saved after 4" in err


def test_a_resume_budget_below_the_children_done_is_refused(tmp_path, monkeypatch, capsys):
    """Recorded, `--resume --budget 2` on a 4-child run left a config whose budget is
    below its own children; it is refused, and the run's files stay as they were."""
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_search(run, "--budget", "4")) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["search", "--out", str(run), "--resume", "--budget", "2"]) == 2
    err = capsys.readouterr().err
    assert "--budget 2 is below the 4 children" in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert runmod.load_config(run)["budget"] == 4
    assert main(["search", "--out", str(run), "--resume", "--budget", "4"]) == 0   # equal: ok

"""`mnas train` and `mnas front` on runs whose device has gone, trained trials, table runs.

All in this process on copies of one table search (nothing trained or timed to make it),
its config.json pointed at a device as a measured run's would be.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.cli_run import TABLE

#: a device farm nothing answers at: connecting is refused at once
GONE = "http://127.0.0.1:9/x"
#: small and fast: what these tests check does not depend on the network's size
TRAIN = ["--epochs", "1", "--batch-limit", "2", "--no-progress", "--width", "0.25",
         "--resolution", "16"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from mnas.cli import main

    out = tmp_path_factory.mktemp("train_front") / "table"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MNAS_CACHE_DIR", str(out.parent / "cache"))
        assert main(["search", "--out", str(out), *TABLE, "--strategy", "random"]) == 0
    return out


@pytest.fixture
def run_on(table_run, tmp_path, monkeypatch):
    """A copy of the table run as a run measured on ``device`` (``model_format``: what
    config.json records; None: a run from before it was recorded)."""
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))

    def make(device: str, model_format: str | None = "onnx", name: str = "run") -> Path:
        out = tmp_path / name
        shutil.copytree(table_run, out)
        cfg = json.loads((out / "config.json").read_text())
        cfg.update(device=device, latency="measured")
        cfg.pop("model_format", None)
        if model_format:
            cfg["model_format"] = model_format
        (out / "config.json").write_text(json.dumps(cfg))
        return out
    return make


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def _one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_train_no_measure_never_contacts_a_device_that_has_gone(run_on, capsys,
                                                                 monkeypatch):
    from mnas.cli import main

    out = run_on(GONE)
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure"]) == 0
    doc = json.loads((out / "trained" / "trial-1.json").read_text())
    assert (out / doc["model"]).is_file() and doc["model"].endswith(".onnx")
    assert doc["latency_ms"] is None and doc["not_measured"] == "--no-measure"
    assert "not measured (--no-measure)" in capsys.readouterr().out
    # an export cut short keeps the checkpoint; --resume --no-measure finishes it there too
    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", lambda self, missing_ok=False: None)
        assert main(["train", str(out), "--trial", "2", *TRAIN, "--no-measure"]) == 0
    assert (out / "trained" / "trial-2.ckpt").is_file()
    assert main(["train", str(out), "--trial", "2", *TRAIN, "--no-measure", "--resume"]) == 0
    assert not (out / "trained" / "trial-2.ckpt").exists()


def test_train_refuses_an_unreachable_device_before_training(run_on, capsys):
    from mnas.cli import main

    out = run_on(GONE)
    assert main(["train", str(out), "--trial", "1", *TRAIN]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "cannot reach the device farm" in err and "--no-measure" in err
    assert _files(out / "trained") == {}          # no checkpoint: training never started


def test_train_of_a_run_before_model_format_asks_its_device(run_on, capsys):
    from mnas.cli import main

    out = run_on(GONE, model_format=None)
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "predates model_format" in err and "cannot reach the device farm" in err
    assert _files(out / "trained") == {}


def test_front_exports_the_measured_files_without_the_device(run_on, capsys):
    """The recorded format is enough: the files are those the device's estimator writes
    (the same seeded weights, byte for byte), with the farm gone."""
    from mnas.cli import main

    here = run_on("local:onnxruntime", model_format=None, name="here")
    assert main(["front", str(here)]) == 0             # exported through the device
    gone = run_on(GONE, name="gone")
    assert main(["front", str(gone)]) == 0
    assert "acc" in capsys.readouterr().out
    assert _files(gone / "models") == _files(here / "models") != {}
    old = run_on(GONE, model_format=None, name="old")
    before = _files(old / "models")
    assert main(["front", str(old)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "predates model_format" in err and "--no-export" in err
    assert _files(old / "models") == before
    assert main(["front", str(old), "--no-export"]) == 0


def test_train_refuses_to_replace_a_trained_trial_without_force(run_on, capsys):
    from mnas.cli import main

    out = run_on(GONE)
    folder = out / "trained"
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure"]) == 0
    done = _files(folder)
    assert set(done) == {"trial-1.json", "trial-1.onnx"}
    capsys.readouterr()
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "trial-1.json, trial-1.onnx" in err and "--force" in err
    assert _files(folder) == done                 # refused before training: nothing written
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure", "--resume"]) == 2
    assert "no checkpoint to resume" in _one_line(capsys.readouterr().err)
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--resume", "--force"]) == 2
    assert "give one of them" in _one_line(capsys.readouterr().err)
    assert _files(folder) == done
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--epochs", "2", "--no-measure",
                 "--force"]) == 0
    assert json.loads((folder / "trial-1.json").read_text())["epochs"] == 2
    assert set(_files(folder)) == set(done)


def test_a_failed_measurement_keeps_the_older_result_and_the_checkpoint(run_on, capsys,
                                                                        monkeypatch):
    from mnas.cli import main

    out = run_on("local:onnxruntime")
    folder = out / "trained"
    flags = ["train", str(out), "--trial", "1", *TRAIN]
    assert main(flags) == 0
    done = _files(folder)
    assert json.loads((folder / "trial-1.json").read_text())["latency_ms"] > 0

    def fails(*a, **k):
        raise RuntimeError("the phone was unplugged")

    monkeypatch.setattr("latency.estimate.measure_model", fails)
    assert main([*flags, "--epochs", "2", "--force"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "the phone was unplugged" in err and "--resume" in err
    assert {k: v for k, v in _files(folder).items() if ".ckpt" not in k} == done
    assert (folder / "trial-1.ckpt").is_file()
    monkeypatch.undo()
    assert main([*flags, "--epochs", "2", "--resume"]) == 0
    doc = json.loads((folder / "trial-1.json").read_text())
    assert doc["epochs"] == 2 and doc["latency_ms"] > 0
    assert set(_files(folder)) == set(done)


def test_train_on_a_table_run_names_what_its_numbers_are(table_run, tmp_path, capsys,
                                                           monkeypatch):
    from mnas.cli import main

    out = tmp_path / "run"
    shutil.copytree(table_run, out)
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["train", str(out), "--trial", "1", *TRAIN]) == 0
    printed = capsys.readouterr().out
    assert "proxy" not in printed
    assert "(table accuracy 0." in printed and "cifar100_acc in nb201_dev.csv" in printed
    assert "not measured (the run's latency came from a table" in printed
    doc = json.loads((out / "trained" / "trial-1.json").read_text())
    assert doc["proxy_accuracy"] is None and doc["searched_accuracy"] > 0
    assert doc["accuracy"].endswith("#cifar100_acc")


@pytest.mark.parametrize("command", ["train", "front"])
def test_every_option_says_what_it_does(command):
    from mnas.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [a.option_strings or a.dest for a in sub.choices[command]._actions
               if not a.help]
    assert missing == []


def test_train_says_when_the_runs_device_changed_since_the_search(run_on, capsys):
    """Measured on the run's device, but it is not as the search found it (an update):
    the latency is kept and marked, since it does not compare with the front's."""
    from devices.base import get_device
    from mnas.cli import main

    out = run_on("local:onnxruntime")
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(runs=5, warmup=1, max_runs=10, device_fingerprint={
        **get_device("local:onnxruntime").fingerprint(), "runtime_version": "0.0"})
    (out / "config.json").write_text(json.dumps(cfg))
    assert main(["train", str(out), "--trial", "1", *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "the run's device changed since its search (runtime_version '0.0' -> " in err, err
    doc = json.loads((out / "trained" / "trial-1.json").read_text())
    assert doc["latency_ms"] > 0 and doc["device_changed"].startswith("runtime_version")


def test_an_interrupted_training_is_not_discarded_without_force(run_on, capsys):
    from mnas.cli import main

    out = run_on(GONE)
    ckpt = out / "trained" / "trial-1.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"epochs of training")
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "has an interrupted training" in err and "--resume" in err and "--force" in err
    assert ckpt.read_bytes() == b"epochs of training"


def test_a_training_that_fails_is_one_line_and_leaves_nothing_behind(run_on, capsys):
    """A data module whose reads fail after the first batch: the KeyError was called a
    checkpoint of another shape (a traceback for other types), and trained/ was left with
    a checkpoint's settings and no checkpoint."""
    from mnas.cli import main

    out = run_on(GONE)
    assert main(["train", str(out), "--trial", "1", *TRAIN, "--no-measure", "--data",
                 "module:tests.train.bad_datamodules:FailsLater"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "trial 1: training failed: KeyError: 'image 16 is gone'" in err
    assert not (out / "trained").exists()


def test_a_bad_recorded_setting_names_config_json(run_on, capsys):
    from mnas.cli import main

    out = run_on(GONE)
    cfg = json.loads((out / "config.json").read_text())
    cfg["proxy"]["resolution"] = 0      # before, silently replaced by 32
    (out / "config.json").write_text(json.dumps(cfg))
    assert main(["train", str(out), "--trial", "1", *TRAIN[:-2], "--no-measure"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "config.json: proxy.resolution must be a positive integer, got 0" in err

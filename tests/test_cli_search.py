"""End to end: `mnas search` on the real pipeline (digits, Lightning, ONNX Runtime)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli_run import ROOT, TINY, mnas
from tests.torch_devices import DEVICES


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    out = base / "run"
    r = mnas("search", "--strategy", "random", "--out", str(out), *TINY, cache=base / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, base / "cache", r


def test_workers_train_a_batch_in_ray_tasks_with_the_same_results(tiny_run):
    """--workers 3: the tiny run's three children trained at once as Ray tasks (one
    thread each, as here) score exactly what the one-at-a-time run scored."""
    out, cache, _ = tiny_run
    par = out.parent / "par"
    r = mnas("search", "--strategy", "random", "--out", str(par), *TINY, "--workers", "3",
             cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]

    def rows(folder):
        with open(folder / "trials.csv") as f:
            return [(row["number"], row["arch"], row["state"], row["accuracy"], row["reward"])
                    for row in csv.DictReader(f)]

    assert rows(par) == rows(out)
    assert json.loads((par / "config.json").read_text())["batch"] == 3   # --batch follows
    assert "budget 3, 3 workers (Ray) ->" in r.stderr


def test_a_search_measures_its_children_on_a_device_farm(tiny_run, monkeypatch):
    """--device http://HOST:PORT/NAME: the tiny run again, its children timed by a farm
    (the real server, in this process) instead of here: the same children and accuracies."""
    pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
    from devices.local import LocalDevice
    from tests.farm_server import TOKEN, running_farm

    class Counting(LocalDevice):
        models: list[str] = []

        def measure(self, model_path, settings):
            self.models.append(str(model_path))
            return super().measure(model_path, settings)

    out, cache, _ = tiny_run
    farmed = out.parent / "farmed"
    monkeypatch.setenv("MNAS_FARM_TOKEN", TOKEN)
    with running_farm({"cpu": Counting()}) as (base, _):
        r = mnas("search", "--strategy", "random", "--out", str(farmed), *TINY,
                 "--device", f"{base}/cpu", "--target-ms", "10", cache=out.parent / "fc")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "trials.csv") as f:
        here = list(csv.DictReader(f))
    with open(farmed / "trials.csv") as f:
        there = list(csv.DictReader(f))
    assert [(t["arch"], t["accuracy"]) for t in there] == [
        (t["arch"], t["accuracy"]) for t in here]
    assert all(float(t["latency_ms"]) > 0 for t in there)
    assert len(Counting.models) == len({t["arch"] for t in there})   # each child, once
    cfg = json.loads((farmed / "config.json").read_text())
    assert cfg["device"] == f"{base}/cpu"
    assert {p.suffix for p in (farmed / "models").iterdir()} == {".onnx"}   # front models


def test_resume_takes_the_same_device_reached_another_way(tiny_run, monkeypatch, capsys):
    """A farm that moved (or a phone on Wi-Fi instead of USB): --resume --device with the
    run's own fingerprint goes on there; another device is refused, nothing written."""
    pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
    import shutil

    from devices.local import LocalDevice
    from tests.farm_server import TOKEN, running_farm

    out, _, _ = tiny_run
    moved = out.parent / "moved"
    shutil.copytree(out, moved)
    cfg = json.loads((moved / "config.json").read_text())
    assert cfg["device"] == "local:onnxruntime" and cfg["device_fingerprint"]["cpu"]
    before = {p.name: p.read_bytes() for p in moved.iterdir() if p.is_file()}
    from mnas.cli import main

    assert main(["search", "--out", str(moved), "--resume", "--budget", "4", "--device",
                 "local:litert"]) == 2      # refused before anything runs: in this process
    err = capsys.readouterr().err
    assert "is not this run's device local:onnxruntime" in err
    assert "fingerprints differ in runtime, runtime_version" in err
    assert {p.name: p.read_bytes() for p in moved.iterdir() if p.is_file()} == before
    monkeypatch.setenv("MNAS_FARM_TOKEN", TOKEN)
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        r = mnas("search", "--out", str(moved), "--resume", "--budget", "4", "--device",
                 f"{base}/cpu", "--no-progress", cache=out.parent / "mc")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((moved / "config.json").read_text())["device"] == f"{base}/cpu"
    with open(moved / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("latency, device, overlap", [
    ("measured", "local:onnxruntime", False), ("measured:anchored", "local:litert", False),
    ("measured", "adb:emulator-5554", True), ("table:x.csv#ms", "local:onnxruntime", True),
    ("lut:x.json", "local:onnxruntime", True), ("measured", "http://lab:8470/pixel", True),
    ("measured", "http://127.0.0.1:8470/cpu", False), ("measured", "https://localhost/a", False),
    ("measured", "http://[::1]:8470/cpu", False)])
def test_latency_overlaps_training_unless_timed_on_this_host(latency, device, overlap):
    from mnas.cli.search_device import elsewhere

    assert elsewhere({"latency": latency, "device": device}) is overlap
    # a farm here serving a phone times it elsewhere; serving a local runtime, here
    if device.startswith("http") and not overlap:
        assert elsewhere({"latency": latency, "device": device}, "adb:R58M1234") is True
        assert elsewhere({"latency": latency, "device": device}, "local:litert") is False


def test_tiny_search_writes_every_output(tiny_run):
    out, _, r = tiny_run
    for name in ("config.json", "study.db", "strategy.ckpt", "trials.csv", "pareto.csv",
                 "pareto.json", "pareto.png"):
        assert (out / name).is_file(), name
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {row["state"] for row in rows} <= {"complete", "failed"}
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["trials"] == 3 and doc["device"] == "local:onnxruntime"
    assert doc["target_ms"] > 0  # auto: MobileNetV2 measured on this host
    assert doc["front"], "at least one completed child"
    import onnxruntime as ort

    from mnas.spaces import get_space

    space = get_space("mnasnet")
    for row in doc["front"]:
        assert set(row) >= {"arch", "accuracy", "latency_ms", "reward", "params", "macs", "model"}
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0
        assert space.decode(row["arch"]).encode() == row["arch"]
        model = out / row["model"]
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        assert list(sess.get_inputs()[0].shape) == [1, 3, 224, 224]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["strategy_config"]["name"] == "random" and cfg["targets_ms"][0] == doc["target_ms"]
    # how children were trained, defaults filled in (TINY gives epochs and batch_limit)
    assert cfg["proxy"] == {"data": "digits", "epochs": 1, "batch_limit": 2, "width_mult": 0.5,
                            "resolution": 32, "torch_device": "cpu"}
    assert "front of" in r.stdout


def test_front_command_reprints_and_reexports(tiny_run):
    out, cache, _ = tiny_run
    (out / "pareto.json").unlink()
    r = mnas("front", str(out), "--json", cache=cache)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["trials"] == 3 and (out / "pareto.json").exists()


def test_train_command_exports_the_trained_child(tiny_run, capsys, monkeypatch):
    from mnas.cli import main

    out, cache, _ = tiny_run
    monkeypatch.setenv("MNAS_CACHE_DIR", str(cache))
    assert main(["train", str(out), "--epochs", "2", "--no-progress"]) == 0   # in-process
    with open(out / "trials.csv") as f:
        done = [row for row in csv.DictReader(f) if row["state"] == "complete"]
    best = max(done, key=lambda row: float(row["reward"]))    # the default pick
    doc = json.loads((out / "trained" / f"trial-{best['number']}.json").read_text())
    assert doc["arch"] == best["arch"] and doc["classes"] == 10 and doc["latency_ms"] > 0
    assert doc["measurement"]["model_sha256"] == doc["sha256"]
    # the file holds the trained weights: it scores the reported accuracy on the search's
    # validation split (data digits, run seed 3), far above the seeded weights' chance
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / doc["model"]), providers=["CPUExecutionProvider"])
    assert list(sess.get_inputs()[0].shape) == [1, 3, 32, 32]
    assert abs(_onnx_val_accuracy(out / doc["model"], seed=3) - doc["val_accuracy"]) < 0.01
    assert doc["val_accuracy"] > 0.3
    capsys.readouterr()
    assert main(["train", str(out), "--trial", "99", "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no trial 99" in err
    assert f"complete trials: {done[0]['number']}" in err


@pytest.mark.parametrize("device", DEVICES)
def test_train_on_the_torch_device_exports_the_trained_weights(tiny_run, device, monkeypatch):
    from mnas.cli import main

    out, cache, _ = tiny_run
    monkeypatch.setenv("MNAS_CACHE_DIR", str(cache))
    with open(out / "trials.csv") as f:
        n = next(row["number"] for row in csv.DictReader(f) if row["state"] == "complete")
    assert main(["train", str(out), "--trial", n, "--epochs", "1", "--batch-limit", "8",
                 "--no-measure", "--no-progress", "--torch-device", device, "--force"]) == 0
    doc = json.loads((out / "trained" / f"trial-{n}.json").read_text())
    assert doc["torch_device"] == device
    # the CPU file holds the weights trained there: it scores the reported accuracy
    assert abs(_onnx_val_accuracy(out / doc["model"], seed=3) - doc["val_accuracy"]) < 0.01


def _onnx_val_accuracy(model: Path, seed: int) -> float:
    """Accuracy of an exported 1x3x32x32 model on the digits validation split."""
    import onnxruntime as ort

    from mnas.train.data import make_datamodule

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dm = make_datamodule("digits", resolution=32, val_fraction=0.2, seed=seed)
    dm.setup("fit")
    correct = seen = 0
    for x, y in dm.val_dataloader():
        for xi, yi in zip(x, y, strict=True):
            correct += int(sess.run(None, {name: xi[None].numpy()})[0].argmax() == int(yi))
            seen += 1
    return correct / seen


def test_train_resumes_an_interrupted_training_with_the_same_settings(tiny_run, capsys,
                                                                     monkeypatch):
    from mnas.cli import main

    out, cache, _ = tiny_run
    monkeypatch.setenv("MNAS_CACHE_DIR", str(cache))
    folder = out / "trained"
    with open(out / "trials.csv") as f:
        n = next(row["number"] for row in csv.DictReader(f) if row["state"] == "complete")
    # the refusals end before any training: in this process (a subprocess costs seconds)
    assert main(["train", str(out), "--trial", n, "--resume", "--no-measure"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    flags = ["--trial", n, "--epochs", "3", "--batch-limit", "10", "--no-measure",
             "--no-progress"]
    env = {**os.environ, "MNAS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    # SIGINT handled as a terminal would (a shell's background jobs inherit it ignored)
    proc = subprocess.Popen([sys.executable, "-m", "mnas", "train", str(out), *flags, "--force"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = folder / f"trial-{n}.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ckpt.is_file():
        time.sleep(0.2)
    time.sleep(0.5)                      # the first epoch's checkpoint is written
    proc.send_signal(signal.SIGINT)      # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert ckpt.is_file() and ckpt.with_suffix(".ckpt.json").is_file()
    # other settings would change the recipe: refused, the checkpoint kept
    assert main(["train", str(out), *flags[:2], "--epochs", "4", *flags[4:], "--resume"]) == 2
    err = capsys.readouterr().err
    assert "epochs=3" in err and "epochs=4" in err
    assert ckpt.is_file()
    assert main(["train", str(out), *flags, "--resume"]) == 0      # in-process: no import
    doc = json.loads((folder / f"trial-{n}.json").read_text())
    assert doc["epochs"] == 3 and 1 <= doc["resumed_from_epoch"] < 3
    assert doc["val_accuracy"] > 0.2       # 10 classes: trained, not chance
    assert (out / doc["model"]).is_file()
    assert not ckpt.exists() and not ckpt.with_suffix(".ckpt.json").exists()


class _Planted:
    """Unpickling this runs code: creates the file it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_train_resume_refuses_a_checkpoint_that_would_run_code(tiny_run, tmp_path, capsys):
    from mnas.cli import main

    out, _, _ = tiny_run
    with open(out / "trials.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["state"] == "complete")
    folder = out / "trained"
    folder.mkdir(exist_ok=True)
    seed = json.loads((out / "config.json").read_text())["seed"]
    settings = {"trial": int(row["number"]), "arch": row["arch"], "data": "digits",
                "resolution": 32, "width_mult": 1.0, "epochs": 1, "batch_size": 64,
                "batch_limit": 2, "lr": 0.05, "seed": seed}
    ckpt = folder / f"trial-{row['number']}.ckpt"
    ckpt.with_suffix(".ckpt.json").write_text(json.dumps(settings))
    marker = tmp_path / "planted-code-ran"
    torch.save({"epoch": 0, "state_dict": {}, "x": _Planted(marker)}, ckpt)
    rc = main(["train", str(out), "--trial", row["number"], "--epochs", "1",
               "--batch-limit", "2", "--no-measure", "--no-progress", "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused unread" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
    ckpt.unlink()
    ckpt.with_suffix(".ckpt.json").unlink()


def test_train_resumed_after_its_last_epoch_validates_and_exports(tiny_run, monkeypatch,
                                                                   capsys):
    from mnas.cli import main

    out, _, _ = tiny_run
    with open(out / "trials.csv") as f:
        n = next(r["number"] for r in csv.DictReader(f) if r["state"] == "complete")
    flags = ["train", str(out), "--trial", n, "--epochs", "1", "--batch-limit", "2",
             "--no-measure", "--no-progress"]
    with monkeypatch.context() as m:     # keep the checkpoint, as a crash in export would
        m.setattr(Path, "unlink", lambda self, missing_ok=False: None)
        assert main([*flags, "--force"]) == 0
    done = json.loads((out / "trained" / f"trial-{n}.json").read_text())
    assert (out / "trained" / f"trial-{n}.ckpt").is_file()
    assert main([*flags, "--resume"]) == 0
    doc = json.loads((out / "trained" / f"trial-{n}.json").read_text())
    assert doc["resumed_from_epoch"] == 1 and "resumed at epoch 1" in capsys.readouterr().out
    assert doc["val_accuracy"] == done["val_accuracy"]      # the same weights, validated
    assert not (out / "trained" / f"trial-{n}.ckpt").exists()


# refusals end before anything runs: in this process (a subprocess costs seconds)
def test_existing_run_is_not_overwritten(tiny_run, capsys, monkeypatch):
    from mnas.cli import main

    out, cache, _ = tiny_run
    monkeypatch.setenv("MNAS_CACHE_DIR", str(cache))
    before = (out / "study.db").read_bytes()
    assert main(["search", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err
    assert (out / "study.db").read_bytes() == before


def test_resume_refuses_settings_it_would_ignore(tiny_run, capsys, monkeypatch):
    from mnas.cli import main

    out, cache, _ = tiny_run
    monkeypatch.setenv("MNAS_CACHE_DIR", str(cache))
    before = (out / "study.db").read_bytes()
    assert main(["search", "--out", str(out), "--resume", "--strategy", "ppo", "--seed",
                 "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed, --strategy" in err and "--budget" in err
    assert (out / "study.db").read_bytes() == before


def _wait_for_first_child(proc: subprocess.Popen, out: Path) -> None:
    """Return once the search in ``out`` has finished a child (or ended, or 300 s)."""
    from search.ledger import Ledger

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if (out / "study.db").exists():
            try:
                if Ledger(out / "study.db", study_name="run").finished_count() >= 1:
                    return
            except Exception:  # noqa: BLE001 — the DB may be mid-creation
                continue


def test_ctrl_c_stops_a_search_with_a_resume_hint(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--strategy", "random", "--out", str(out), *TINY[2:], "--budget", "50"]
    env = {**os.environ, "MNAS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnas", "search", *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_first_child(proc, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "mnas: interrupted" in err
    assert f"--out {out} --resume" in err and "children are saved" in err


def test_kill_and_resume_cli(tmp_path):
    """SIGKILL a real search mid-child, resume it, and find each child exactly once."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--strategy", "random", "--out", str(out), *TINY[2:], "--budget", "4"]
    env = {**os.environ, "MNAS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnas", "search", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_first_child(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "pareto.json").exists(), "killed before the end"
    # another machine's trainer may take over: the only setting besides --budget it may change
    r = mnas("search", "--out", str(out), "--resume", "--no-progress", "--torch-device",
             DEVICES[-1], cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["proxy"]["torch_device"] == DEVICES[-1]
    from search.ledger import Ledger

    led = Ledger(out / "study.db", study_name="run")
    trials = led.study.get_trials()
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    slots = [t.user_attrs["slot"] for t in trials]
    assert len(set(slots)) == 4
    assert json.loads((out / "pareto.json").read_text())["trials"] == 4

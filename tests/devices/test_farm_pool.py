"""Pools of identical devices under one farm name, and devices that share hardware: the
real farm on a loopback port, with stand-in phones (:class:`tests.farm_server.Gated`)."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
pytest.importorskip("uvicorn", reason="the farm needs the mnas[farm] extra")

from devices.base import get_device  # noqa: E402
from devices.farm import Farm  # noqa: E402
from devices.local import LocalDevice  # noqa: E402
from devices.remote import RemoteDevice  # noqa: E402
from mnas.cli import main  # noqa: E402
from tests.farm_server import FAST, TOKEN, Gated, measure_at_once, raw, running_farm  # noqa: E402

pytestmark = pytest.mark.usefixtures("farm_env")

PHONE = {"kind": "android", "model": "Pixel 7", "sdk": "34", "runtime": "benchmark_model"}


def test_a_pool_measures_on_whichever_member_is_free(onnx_model):
    a_started, b_started = threading.Event(), threading.Event()
    # a waits until b has started and b until a has: only a pool of two finishes both
    a = Gated(gate=b_started, opens=a_started, spec="adb:A", fingerprint=PHONE)
    b = Gated(gate=a_started, opens=b_started, spec="adb:B", fingerprint=PHONE)
    with running_farm({"pixel7": [a, b]}) as (base, farm):
        info = farm.info("pixel7")
        assert info["members"] == ["adb:A", "adb:B"] and info["fingerprint"] == PHONE
        dev = get_device(f"{base}/pixel7")
        assert dev.fingerprint() == PHONE
        results = measure_at_once([f"{base}/pixel7"] * 4, onnx_model)
        assert all(getattr(m, "median_ms", 0) > 0 for m in results), results
        assert all(m.device == f"{base}/pixel7" and m.fingerprint == PHONE for m in results)
        assert a.most == 1 and b.most == 1          # each member one at a time
        assert farm.info("pixel7")["queued"] == 0


def test_devices_on_the_same_hardware_take_turns_under_different_names(onnx_model):
    """Two runtimes of one host (say local:onnxruntime and local:litert) would time each
    other; the farm runs them one at a time though their queues are apart."""
    import time

    tally = {"active": 0, "most": 0}
    release, a_started = threading.Event(), threading.Event()
    a = Gated(gate=release, opens=a_started, spec="local:onnxruntime", resource="local",
              shared=tally)
    b_started = threading.Event()
    b = Gated(opens=b_started, spec="local:other", resource="local", shared=tally)
    with running_farm({"a": a, "b": b}) as (base, farm):
        out: list = []
        first = threading.Thread(target=lambda: out.append(measure_at_once(
            [f"{base}/a"], onnx_model)[0]))
        first.start()
        assert a_started.wait(20)
        second = threading.Thread(target=lambda: out.append(measure_at_once(
            [f"{base}/b"], onnx_model)[0]))
        second.start()
        for _ in range(50):         # b's request arrives and waits for a's hardware
            if farm.info("b")["queued"] == 1:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        assert farm.info("b")["queued"] == 1 and not b_started.is_set()
        release.set()
        first.join(30)
        second.join(30)
    assert all(getattr(m, "median_ms", 0) > 0 for m in out) and len(out) == 2, out
    assert tally["most"] == 1
    assert LocalDevice().resource == LocalDevice("local:litert").resource


def test_a_pool_of_unlike_devices_or_of_one_device_twice_is_refused():
    other = {**PHONE, "sdk": "33"}
    for pool, text in (
            ([Gated(spec="adb:A", fingerprint=PHONE), Gated(spec="adb:B", fingerprint=other)],
             "device pool 'p': 'adb:B' differs from 'adb:A' in sdk ('33' vs '34'); a pool "
             "needs identical devices"),
            ([Gated(spec="adb:A", resource="usb-1"), Gated(spec="adb:A2", resource="usb-1")],
             "device pool 'p' has 'adb:A2' and 'adb:A' on the same hardware")):
        with pytest.raises(ValueError) as e:
            Farm({"p": pool}, TOKEN)
        assert str(e.value) == text or str(e.value).startswith(text), e.value


def test_serve_makes_a_pool_of_one_name_and_refuses_a_device_twice(capsys):
    for argv, text in (
            (["--device", "a=local:onnxruntime", "--device", "a=local:litert"],
             "device pool 'a' has 'local:litert' and 'local:onnxruntime' on the same "
             "hardware"),
            (["--device", "a=local:onnxruntime", "--device", "b=local:onnxruntime"],
             "'local:onnxruntime' is already served as 'a'"),
            (["--fingerprint-every", "-1"], "--fingerprint-every must be >= 0 seconds"),
            (["--device", "p=adb:127.0.0.1:1?retries=0"], "cannot serve the devices: adb "
             "device 127.0.0.1:1: reading the fingerprint failed")):
        assert main(["farm", "serve", "--port", "0", *argv]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err
    from mnas.cli.farm_cmd import parse_devices

    assert parse_devices(["p=adb:A", "p=adb:B", "local:onnxruntime"]) == {
        "p": ["adb:A", "adb:B"], "local-onnxruntime": ["local:onnxruntime"]}


def test_a_pool_is_listed_with_its_members(tmp_path, monkeypatch, capsys):
    pool = [Gated(spec=f"adb:{s}", fingerprint=PHONE) for s in "AB"]
    with running_farm({"pixel7": pool, "cpu": LocalDevice()}) as (base, _):
        status, body, _ = raw(base, "/devices")
        cfg = tmp_path / "devices.toml"
        cfg.write_text(f'[[farm.server]]\nurl = "{base}"\n')
        monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
        assert main(["devices", "--no-fingerprint"]) == 0
    assert status == 200
    assert {d["name"]: d["members"] for d in body["devices"]} == {
        "cpu": ["local:onnxruntime"], "pixel7": ["adb:A", "adb:B"]}
    text = capsys.readouterr().out
    assert f"{base}/pixel7" in text and "adb:A (a pool of 2) on a farm, 0 queued" in text


def test_an_updated_device_is_served_as_it_is_now_and_leaves_a_pool_it_no_longer_matches(
        onnx_model, caplog, tmp_path, monkeypatch, capsys):
    """Fingerprints are read again (here before every measurement): a lone device's new
    one becomes its name's; a pool member that no longer matches is retired, and a pool
    with none left says so on every request."""
    lone = Gated(spec="adb:L", fingerprint=PHONE)
    a, b = (Gated(spec=f"adb:{s}", fingerprint=PHONE) for s in "AB")
    with running_farm({"lone": lone, "pixel7": [a, b]}, fingerprint_ttl_s=0) as (base, farm):
        dev = get_device(f"{base}/lone")
        assert dev.measure(onnx_model, FAST).fingerprint == PHONE
        lone._fp = {**PHONE, "sdk": "35"}
        assert dev.measure(onnx_model, FAST).fingerprint["sdk"] == "35"
        assert farm.info("lone")["fingerprint"]["sdk"] == "35"
        b._fp = {**PHONE, "sdk": "35"}
        results = measure_at_once([f"{base}/pixel7"] * 4, onnx_model)
        assert all(getattr(m, "fingerprint", None) == PHONE for m in results), results
        assert farm.info("pixel7")["retired"] == ["adb:B"]
        assert "adb:B left pool pixel7, its fingerprint changed: sdk '34' -> '35'" \
            in caplog.text
        a._fp = {**PHONE, "governors": ["powersave"]}
        for _ in range(2):      # every request, none left waiting
            with pytest.raises(RuntimeError, match="answered 502: .*every device of "
                               "'pixel7' has changed since the farm started"):
                RemoteDevice(f"{base}/pixel7", timeout_s=30).measure(onnx_model, FAST)
        assert farm.info("pixel7")["retired"] == ["adb:B", "adb:A"]
        assert farm.info("pixel7")["queued"] == 0
        cfg = tmp_path / "devices.toml"
        cfg.write_text(f'[[farm.server]]\nurl = "{base}"\n')
        monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(cfg))
        capsys.readouterr()
        assert main(["devices", "--no-fingerprint"]) == 0
        assert "(a pool of 2, 2 retired) on a farm" in capsys.readouterr().out
        # a member that matches again rejoins (read again by the next request), and the
        # pool serves again
        a._fp = dict(PHONE)
        assert RemoteDevice(f"{base}/pixel7", timeout_s=30).measure(
            onnx_model, FAST).fingerprint == PHONE
        assert farm.info("pixel7")["retired"] == ["adb:B"]
        assert "adb:A rejoined pool pixel7, its fingerprint matches again" in caplog.text
        b._fp = dict(PHONE)
        results = measure_at_once([f"{base}/pixel7"] * 2, onnx_model)
        assert all(getattr(m, "fingerprint", None) == PHONE for m in results), results
        assert farm.info("pixel7")["retired"] == []
        assert "adb:B rejoined pool pixel7" in caplog.text


def test_a_search_measures_as_many_children_at_once_as_the_pool_has_phones(tmp_path):
    """The latency evaluator through a pool of two: two children measured at once (each
    phone waits for the other to start), their exports one at a time."""
    from latency.estimate import MeasuredLatency
    from tests.latency.tiny import TinyArch, TinyLatencySpace

    a_started, b_started = threading.Event(), threading.Event()
    a = Gated(gate=b_started, opens=a_started, spec="adb:A", fingerprint=PHONE)
    b = Gated(gate=a_started, opens=b_started, spec="adb:B", fingerprint=PHONE)
    with running_farm({"pixel7": [a, b]}) as (base, _):
        est = MeasuredLatency(get_device(f"{base}/pixel7"), FAST, workdir=tmp_path)
        assert est.concurrency == 2
        out: dict[int, object] = {}

        def one(width: int) -> None:
            try:
                out[width] = est(TinyLatencySpace(), TinyArch(width))
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                out[width] = e

        exports = {"active": 0, "most": 0}
        real = est._export_fn

        def export(*args, **kwargs):    # torch's exporter is not thread-safe
            exports["active"] += 1
            exports["most"] = max(exports["most"], exports["active"])
            try:
                time.sleep(0.2)
                return real(*args, **kwargs)
            finally:
                exports["active"] -= 1

        est._export_fn = export
        threads = [threading.Thread(target=one, args=(w,)) for w in (4, 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert all(getattr(m, "median_ms", 0) > 0 for m in out.values()) and len(out) == 2, out
    assert a.most == b.most == 1 and exports["most"] == 1


class Offline(Gated):
    """A pool member that fails at once (an unplugged phone) — or, with ``only``, fails
    just that model (a model the phone's tool cannot run)."""

    def __init__(self, *args, only: bytes | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.only, self.calls = only, 0

    def measure(self, model_path, settings):
        self.calls += 1
        if self.only is None or Path(model_path).read_bytes() == self.only:
            raise RuntimeError("adb: device offline")
        return super().measure(model_path, settings)


def test_a_failing_member_rests_while_the_others_measure(onnx_model, tmp_path, caplog):
    """An unplugged phone fails at once, so it would be free for (and fail) most requests:
    a request it fails is measured by another member, and it rests a while. A model that
    fails on two members is the model's fault: a 502, and nobody rests."""
    import shutil

    offline = Offline(spec="adb:A", fingerprint=PHONE)
    ok = Gated(spec="adb:B", fingerprint=PHONE)
    with running_farm({"pixel7": [offline, ok]}, workdir=tmp_path / "up") as (base, farm):
        results = measure_at_once([f"{base}/pixel7"] * 8, onnx_model)
        assert all(getattr(m, "median_ms", 0) > 0 for m in results), results
        assert offline.calls == 1 and "adb:A failed a model another device of pixel7 " \
            "measured (adb: device offline); resting it 60 s" in caplog.text
        assert farm.info("pixel7")["queued"] == 0 and not list((tmp_path / "up").iterdir())
    bad = Path(shutil.copy(onnx_model, tmp_path / "bad.onnx"))
    picky = [Offline(spec=f"adb:{s}", fingerprint=PHONE, only=bad.read_bytes()) for s in "AB"]
    caplog.clear()
    with running_farm({"pixel7": picky}) as (base, _):
        with pytest.raises(RuntimeError, match="answered 502: device 'pixel7' failed: adb: "
                           "device offline"):
            RemoteDevice(f"{base}/pixel7", retries=0, timeout_s=30).measure(bad, FAST)
        assert [d.calls for d in picky] == [1, 1] and "resting" not in caplog.text
        good = tmp_path / "good.onnx"
        from latency.export import export_onnx
        from tests.latency.tiny import SHAPE, tiny_model

        export_onnx(tiny_model(width=3).eval(), good, SHAPE)
        assert measure_at_once([f"{base}/pixel7"] * 2, good)[0].median_ms > 0


class Updated(Gated):
    """A phone updated after its first measurement (its fingerprint changes)."""

    def measure(self, model_path, settings):
        m = super().measure(model_path, settings)
        self._fp = {**PHONE, "sdk": "35"}
        return m


def test_a_search_says_when_its_device_changed_midway(tmp_path, monkeypatch, capsys):
    """A farm phone updated during a search: the children measured after it are named,
    since their latencies do not compare with the earlier ones."""
    from tests.cli_run import NB201

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    with running_farm({"p": Updated(spec="adb:A", fingerprint=PHONE)},
                      fingerprint_ttl_s=0) as (base, _):
        # accuracy from the nb201 table: nothing trains, every child is measured there
        rc = main(["search", "--space", "nb201", "--accuracy", f"table:{NB201}#cifar100_acc",
                   "--strategy", "random", "--device", f"{base}/p", "--target-ms", "5",
                   "--budget", "3", "--runs", "5", "--warmup", "1", "--max-runs", "10",
                   "--no-progress", "--no-export", "--seed", "3", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 0, err
    note = ("mnas: note: 2 of 3 children (from #1 on) were measured after the device "
            "changed (sdk '34' -> '35'); their latencies do not compare")
    assert note in err, err
    # the files say which: trials.csv per child, pareto.json and pareto.csv for the front
    run = tmp_path / "run"
    with open(run / "trials.csv") as f:
        marks = {int(r["number"]): r["device_changed"] for r in csv.DictReader(f)}
    assert marks == {0: "False", 1: "True", 2: "True"}
    doc = json.loads((run / "pareto.json").read_text())
    assert doc["device_changed"] == [1, 2]
    assert all(row["device_changed"] == (row["trial"] > 0) for row in doc["front"])
    # `mnas front` says it again (it rewrites the same files from the ledger)
    assert main(["front", str(run), "--no-export"]) == 0
    assert note in capsys.readouterr().err

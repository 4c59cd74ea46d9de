"""``mnas bench`` end to end on real tiny models measured with ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from latency.bench_results import BenchResults
from latency.export import file_sha256
from mnas.cli import main
from tests.bench.test_regression import record, results, samples

FAST = "warmup = 2\nruns = 20\nmax_runs = 20\nrounds = 2\n"
ONE_ROUND = "warmup = 2\nruns = 30\nmax_runs = 30\nrounds = 1\n"


def suite(tmp_path: Path, body: str, name: str = "suite.toml", defaults: str = FAST) -> Path:
    p = tmp_path / name
    p.write_text(f"[defaults]\n{defaults}\n{body}")
    return p


def entry(name: str, model: Path, extra: str = "") -> str:
    return f'[[entry]]\nname = "{name}"\nmodel = "{model}"\n{extra}\n'


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_heavier_model_under_the_same_name_fails_the_gate(tmp_path: Path, bench_models,
                                                          capsys) -> None:
    base_suite = suite(tmp_path, entry("net", bench_models["narrow"]), "base.toml")
    heavy_suite = suite(tmp_path, entry("net", bench_models["wide"]), "heavy.toml")
    rc, out, _ = run_cli(capsys, "bench", "run", base_suite, "--out", tmp_path / "base.json")
    assert rc == 0
    rc, out, _ = run_cli(capsys, "bench", "baseline", "update", tmp_path / "base.json",
                         "--baseline", tmp_path / "baseline.json")
    assert rc == 0 and "net: added at" in out
    rc, _, _ = run_cli(capsys, "bench", "run", heavy_suite, "--out", tmp_path / "heavy.json")
    assert rc == 0
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "baseline.json",
                         tmp_path / "heavy.json", "--junit", tmp_path / "j.xml",
                         "--markdown", tmp_path / "pr.md", "--plot", tmp_path / "trend.png")
    assert rc == 1, out
    assert "regression" in out and "model file changed since the baseline" in out
    assert "exit 1" in out

    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.tag == "testsuites" and root.get("failures") == "1"
    (ts,) = root.findall("testsuite")
    assert ts.get("tests") == "1" and ts.get("failures") == "1" and ts.get("errors") == "0"
    (tc,) = ts.findall("testcase")
    assert tc.get("name") == "net" and tc.get("classname") and float(tc.get("time")) > 0
    (failure,) = tc.findall("failure")
    assert failure.get("type") == "regression" and "slower by" in failure.get("message")

    md = (tmp_path / "pr.md").read_text()
    assert md.startswith("### Latency benchmarks: ❌ latency regression")
    assert "| ❌ | `net` | `local:onnxruntime` |" in md
    png = (tmp_path / "trend.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # the same results against themselves: nothing changed, nothing flagged. One round of
    # 30 samples: with two rounds the interval rightly spans how much the rounds disagree,
    # which on a loaded shared host can exceed any tolerance a test could fix.
    one = suite(tmp_path, entry("net", bench_models["narrow"]), "one.toml", defaults=ONE_ROUND)
    assert run_cli(capsys, "bench", "run", one, "--out", tmp_path / "one.json")[0] == 0
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "one.json",
                         tmp_path / "one.json", "--junit", tmp_path / "same.xml",
                         "--tolerance", "30%")
    assert rc == 0 and "-> pass, exit 0" in out
    root = ET.parse(tmp_path / "same.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"


def test_run_records_samples_fingerprint_settings_sha_and_progress(tmp_path: Path,
                                                                   bench_models, capsys) -> None:
    s = suite(tmp_path, entry("a", bench_models["narrow"], "max_ms = 1000")
              + entry("b", bench_models["narrow"], "threads = 1\ntolerance = 0.1"))
    rc, out, _ = run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json")
    assert rc == 0
    progress = [ln for ln in out.splitlines() if ln.startswith("[round")]
    assert len(progress) == 4     # 2 entries x 2 rounds, round-robin
    assert progress[0].startswith("[round 1/2] [1/2] a:")
    assert progress[1].startswith("[round 1/2] [2/2] b:")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["format"] == "mnas-bench-results/1" and data["created_utc"].endswith("Z")
    a = data["entries"][0]
    assert a["name"] == "a" and a["rounds"] == [20, 20] and len(a["round_medians_ms"]) == 2
    m = a["measurement"]
    assert len(m["samples_ms"]) == 40 and all(v > 0 for v in m["samples_ms"])
    assert m["model_sha256"] == file_sha256(bench_models["narrow"])
    assert m["fingerprint"]["runtime"] == "onnxruntime" and m["fingerprint"]["cpu"]
    assert m["timestamp"] > 1.7e9
    assert a["entry"]["settings"]["runs"] == 20 and a["entry"]["max_ms"] == 1000
    assert data["entries"][1]["entry"]["tolerance"] == 0.1
    # model paths are kept relative to the suite file, so a baseline is portable
    assert not Path(a["entry"]["model"]).is_absolute()

    rc, _, err = run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json")
    assert rc == 2 and "exists; pass --force to overwrite it" in err
    rc, _, _ = run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json", "--force",
                       "--entry", "b")
    assert rc == 0 and list(BenchResults.load(tmp_path / "r.json").records) == ["b"]


def test_arch_entry_is_built_exported_and_measured(tmp_path: Path, capsys) -> None:
    s = suite(tmp_path, '[[entry]]\nname = "mbv2-small"\narch = "mobilenetv2"\n'
                        'space = "mnasnet"\ninput_shape = [1, 3, 32, 32]\nnum_classes = 10\n',
              defaults="warmup = 1\nruns = 3\nmax_runs = 3\nrounds = 1\n")
    rc, out, _ = run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json")
    assert rc == 0, out
    rec = BenchResults.load(tmp_path / "r.json").records["mbv2-small"]
    assert rec.entry["arch"] == "mobilenetv2" and rec.entry["space"] == "mnasnet"
    assert len(rec.measurement.model_sha256) == 64 and rec.measurement.runs == 3


def test_different_device_fingerprint_is_refused_then_forced(tmp_path: Path, bench_models,
                                                             capsys) -> None:
    s = suite(tmp_path, entry("net", bench_models["narrow"]))
    assert run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json")[0] == 0
    data = json.loads((tmp_path / "r.json").read_text())
    data["entries"][0]["measurement"]["fingerprint"]["cpu"] = "Snapdragon 855"
    (tmp_path / "phone.json").write_text(json.dumps(data))
    rc, _, err = run_cli(capsys, "bench", "compare", tmp_path / "phone.json", tmp_path / "r.json")
    assert rc == 2
    assert err.count("\n") == 1 and "fingerprint.cpu: 'Snapdragon 855' != " in err
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "phone.json",
                         tmp_path / "r.json", "--force")
    assert out.startswith("entry  baseline ms") and "+0.0%" in out and rc in (0, 2)
    rc, _, err = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r.json",
                         "--baseline", tmp_path / "phone.json")
    assert rc == 2 and "pass --force" in err
    rc, out, _ = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r.json",
                         "--baseline", tmp_path / "phone.json", "--force")
    assert rc == 0 and "[device changed]" in out


def test_cpu_clock_is_recorded_and_a_wall_clock_baseline_is_refused(tmp_path: Path,
                                                                    bench_models, capsys) -> None:
    net = entry("net", bench_models["narrow"])
    wall, cpu = suite(tmp_path, net, "wall.toml"), suite(tmp_path, net, "cpu.toml",
                                                         FAST + 'clock = "cpu"\n')
    assert run_cli(capsys, "bench", "run", wall, "--out", tmp_path / "w.json")[0] == 0
    rc, out, _ = run_cli(capsys, "bench", "run", cpu, "--out", tmp_path / "c.json")
    assert rc == 0 and out.count(", cpu clock") == 2
    data = json.loads((tmp_path / "c.json").read_text())["entries"][0]
    assert data["measurement"]["clock"] == "cpu" and data["entry"]["settings"]["clock"] == "cpu"
    assert BenchResults.load(tmp_path / "w.json").records["net"].measurement.clock == "wall"
    rc, _, err = run_cli(capsys, "bench", "compare", tmp_path / "w.json", tmp_path / "c.json")
    assert rc == 2 and err.count("\n") == 1
    assert "entry 'net': field 'clock': the baseline was timed with the wall clock" in err
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "w.json", tmp_path / "c.json",
                         "--force", "--inconclusive", "pass")
    assert out.startswith("entry  baseline ms") and rc in (0, 1)


def test_baseline_from_several_runs_records_drift(tmp_path: Path, bench_models, capsys) -> None:
    s = suite(tmp_path, entry("net", bench_models["narrow"]))
    for i in range(3):
        assert run_cli(capsys, "bench", "run", s, "--out", tmp_path / f"r{i}.json")[0] == 0
    rc, out, _ = run_cli(capsys, "bench", "baseline", "update", *(tmp_path / f"r{i}.json"
                                                                  for i in range(3)),
                         "--baseline", tmp_path / "b.json")
    assert rc == 0 and "run-to-run drift ±" in out and "over 3 runs" in out
    rec = BenchResults.load(tmp_path / "b.json").records["net"]
    assert len(rec.run_medians) == 3 and rec.rounds == (20,) * 6
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "b.json", tmp_path / "r0.json",
                         "--tolerance", "90%", "--inconclusive", "pass")
    assert rc == 0 and "baseline runs included" in out


def test_baseline_update_of_partial_results_is_refused_without_entry(tmp_path: Path,
                                                                    capsys) -> None:
    # constructed results, not measured: what matters is which entries each file holds
    four = ("tiny-cnn", "a", "b", "c")
    full = results(*(record(n, samples(1.0, seed=i)) for i, n in enumerate(four)))
    base = full.save(tmp_path / "base.json")
    full.save(tmp_path / "results.json")
    results(record("tiny-cnn", samples(0.7, seed=9))).save(tmp_path / "r_tiny.json")
    before = base.read_bytes()
    rc, out, err = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r_tiny.json",
                           "--baseline", base)
    assert rc == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert f"{tmp_path / 'r_tiny.json'} lacks 'a', 'b', 'c' (in the baseline {base})" in err
    assert "`--entry NAME` updates only some" in err and base.read_bytes() == before
    # merging a full run with an --entry run: refused in either order, nothing written
    for order in (("results.json", "r_tiny.json"), ("r_tiny.json", "results.json")):
        rc, _, err = run_cli(capsys, "bench", "baseline", "update",
                             *(tmp_path / f for f in order), "--baseline", tmp_path / "new.json")
        assert rc == 2 and f"{tmp_path / 'r_tiny.json'} lacks 'a', 'b', 'c'" in err, err
        assert not (tmp_path / "new.json").exists()
    # --entry updates that entry alone; the others stay exactly as they were
    rc, out, _ = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r_tiny.json",
                         "--baseline", base, "--entry", "tiny-cnn")
    assert rc == 0 and out.startswith("baseline: tiny-cnn: 1.0") and " ms -> 0.6" in out
    old, new = json.loads(before)["entries"], json.loads(base.read_text())["entries"]
    assert [e["name"] for e in new] == list(four) and new[1:] == old[1:]
    assert new[0]["measurement"]["median_ms"] < 0.8


def test_baseline_update_drops_entries_removed_from_the_suite(tmp_path: Path, capsys) -> None:
    """A full update needs the baseline's every entry in the results: an entry removed from
    the suite is dropped with --drop (checked: in the baseline, not measured anymore)."""
    four = ("tiny-cnn", "a", "b", "c")
    base = results(*(record(n, samples(1.0, seed=i)) for i, n in enumerate(four))
                   ).save(tmp_path / "base.json")
    three = results(*(record(n, samples(0.9, seed=i)) for i, n in enumerate(four[:3])))
    three.save(tmp_path / "r.json")
    before = base.read_bytes()
    for drop, needle in (("x", "--drop: no entry named 'x' in the baseline"),
                         ("a", "--drop 'a': " + str(tmp_path / "r.json") + " measures it")):
        rc, out, err = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r.json",
                               "--baseline", base, "--drop", drop)
        assert rc == 2 and needle in err and err.count("\n") == 1, err
        assert base.read_bytes() == before
    rc, out, err = run_cli(capsys, "bench", "baseline", "update", tmp_path / "r.json",
                           "--baseline", base, "--drop", "c")
    assert rc == 0 and "baseline: c: dropped" in out, (out, err)
    assert [e["name"] for e in json.loads(base.read_text())["entries"]] == list(four[:3])


@pytest.mark.parametrize(("make", "needle"), [
    (lambda t, m: suite(t, entry("x", t / "missing.onnx")), "field 'model': model file not found"),
    (lambda t, m: suite(t, entry("x", m["narrow"], 'device = "gpu:0"')),
     "entry 'x': field 'device': unknown device 'gpu:0'; valid: "),
    (lambda t, m: suite(t, '[[entry]]\nname = "x"\nmodel = \n'), "malformed TOML"),
    (lambda t, m: suite(t, ""), "empty suite"),
    (lambda t, m: t / "nope.toml", "suite file not found"),
    (lambda t, m: _loop(t / "loop.toml"), "suite file {t}/loop.toml cannot be resolved: a symbolic link loop"),
    (lambda t, m: suite(t, entry("x", _loop(t / "loop.onnx"))),
     "field 'model': model file {t}/loop.onnx cannot be resolved: a symbolic link loop"),
    (lambda t, m: suite(t, '[[entry]]\nname = "x"\narch = "not-an-arch"\n'),
     "entry 'x': field 'arch':"),
    (lambda t, m: suite(t, '[[entry]]\nname = "x"\narch = "mobilenetv2"\nspace = "nope"\n'),
     "entry 'x': field 'space': unknown space 'nope'"),
    (lambda t, m: suite(t, entry("x", m["narrow"], 'clock = "gpu"')),
     "'x': field 'clock': must be one of 'wall', 'cpu'"),
], ids=["missing-model", "unknown-device", "malformed-toml", "empty-suite", "no-suite-file",
        "suite-file-loop", "model-loop", "bad-arch", "bad-space", "bad-clock"])
def test_bad_suite_input_is_one_error_line_exit_2(tmp_path: Path, bench_models, capsys,
                                                  make, needle) -> None:
    rc, out, err = run_cli(capsys, "bench", "run", make(tmp_path, bench_models),
                           "--out", tmp_path / "r.json")
    assert rc == 2
    assert err.startswith("mnas: error: ") and err.count("\n") == 1, err
    assert needle.format(t=tmp_path) in err, err
    assert not (tmp_path / "r.json").exists()


def _loop(path: Path) -> Path:
    """``ln -s NAME NAME``: a link to itself (``Path.exists`` says False)."""
    path.symlink_to(path.name)
    return path


def test_model_the_device_cannot_run_is_refused_before_measuring(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    (tmp_path / "fake.onnx").write_text("hello")
    rc, _, err = run_cli(capsys, "bench", "run",
                         suite(tmp_path, entry("t", tmp_path / "m.tflite")), "--out",
                         tmp_path / "r.json")
    assert rc == 2 and "runs onnx models, but m.tflite is tflite" in err
    rc, _, err = run_cli(capsys, "bench", "run",
                         suite(tmp_path, entry("f", tmp_path / "fake.onnx")), "--out",
                         tmp_path / "r.json")
    assert rc == 2 and "entry 'f': field 'model':" in err and "is not an ONNX model" in err
    # a phone runs .tflite files: a file that is none is refused before connecting
    (tmp_path / "fake.tflite").write_bytes(b"\x00" * 16)
    rc, _, err = run_cli(capsys, "bench", "run",
                         suite(tmp_path, entry("p", tmp_path / "fake.tflite",
                                               'device = "adb:emulator-5554"')),
                         "--out", tmp_path / "r.json")
    assert rc == 2 and "entry 'p': field 'model':" in err and "is not a TFLite model" in err


def test_bad_compare_input(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.json").write_text("[1, 2")
    rc, _, err = run_cli(capsys, "bench", "compare", tmp_path / "x.json", tmp_path / "x.json")
    assert rc == 2 and "not valid JSON" in err
    rc, _, err = run_cli(capsys, "bench", "compare", tmp_path / "no.json", tmp_path / "x.json")
    assert rc == 2 and "baseline not found" in err
    with pytest.raises(SystemExit) as ei:
        main(["bench", "compare", "a", "b", "--tolerance", "5"])
    assert ei.value.code == 2
    assert "tolerance must be in (0, 1)" in capsys.readouterr().err


def test_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[entry]\nname = 1\n")
    p = subprocess.run([sys.executable, "-m", "mnas", "bench", "run", str(bad), "--out",
                        str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"mnas: error: {bad}: malformed TOML")


def test_entry_with_a_reference_is_compared_relative_to_it(tmp_path: Path, bench_models,
                                                          capsys) -> None:
    s = suite(tmp_path, entry("canary", bench_models["narrow"], "tolerance = 0.9")
              + entry("app", bench_models["wide"], 'reference = "canary"'))
    assert run_cli(capsys, "bench", "run", s, "--out", tmp_path / "r.json", "--entry",
                   "app")[0] == 0   # --entry pulls the reference in
    rec = BenchResults.load(tmp_path / "r.json")
    assert list(rec.records) == ["canary", "app"] and rec.records["app"].entry["reference"] \
        == "canary"
    # on a local device the reference was also timed alternately with the entry, sample
    # for sample: the narrow canary is the faster model in every round
    app = rec.records["app"]
    assert len(app.paired_ms) == len(app.measurement.samples_ms)
    assert not rec.records["canary"].paired_ms
    assert np.median(app.paired_ms) < app.measurement.median_ms
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "r.json", tmp_path / "r.json",
                         "--tolerance", "50%", "--inconclusive", "pass")
    assert rc == 0
    assert "relative to reference 'canary' timed alternately with it" in out
    assert "(vs canary)" in out


def test_a_farm_device_gates_like_the_device_itself(tmp_path: Path, bench_models, capsys,
                                                      monkeypatch) -> None:
    """A CI runner with no phone reaches one through a device farm: a suite run on
    ``http://HOST:PORT/NAME`` is compared with a baseline taken on the device itself
    (the same fingerprint), and a slower model under the same name fails the gate."""
    pytest.importorskip("starlette", reason="the farm needs the mnas[farm] extra")
    from devices.local import LocalDevice
    from tests.farm_server import TOKEN, running_farm

    monkeypatch.setenv("MNAS_FARM_TOKEN", TOKEN)
    monkeypatch.setenv("MNAS_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    here = suite(tmp_path, entry("net", bench_models["narrow"]), "here.toml",
                 FAST + 'device = "local:onnxruntime"\n')
    assert run_cli(capsys, "bench", "run", here, "--out", tmp_path / "base.json")[0] == 0
    with running_farm({"cpu": LocalDevice()}) as (base, _):
        farmed = FAST + f'device = "{base}/cpu"\n'
        same = suite(tmp_path, entry("net", bench_models["narrow"]), "same.toml", farmed)
        heavier = suite(tmp_path, entry("net", bench_models["wide"]), "heavier.toml", farmed)
        for s, out in ((same, "same.json"), (heavier, "heavier.json")):
            rc, text, _ = run_cli(capsys, "bench", "run", s, "--out", tmp_path / out)
            assert rc == 0 and f"{base}/cpu" in text
    # compared, not refused (another fingerprint would be exit 2). The farm here shares
    # this process and its cores with the test, which slows a 0.05-ms model by up to
    # ~50% under load: the tolerance leaves room for that, not for the wide model (~5x)
    rc, out, err = run_cli(capsys, "bench", "compare", tmp_path / "base.json",
                           tmp_path / "same.json", "--inconclusive", "pass",
                           "--tolerance", "90%")
    assert rc == 0 and "net" in out, out + err
    rc, out, _ = run_cli(capsys, "bench", "compare", tmp_path / "base.json",
                         tmp_path / "heavier.json", "--tolerance", "90%")
    assert rc == 1 and "regression" in out

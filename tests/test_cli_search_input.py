"""``mnas search`` and ``mnas train`` on bad input, flags a run would ignore, and settings
checked before anything is written (in-process where nothing trains)."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest

from tests.cli_run import TABLE, TINY


@pytest.mark.parametrize("args, needle", [
    (["--space", "nope"], "valid: "),
    (["--strategy", "nope"], "valid: "),
    (["--device", "nope:x"], "valid: "),
    (["--data", "nope"], "digits"),
    (["--data", "imagefolder:/does/not/exist"], "/does/not/exist"),
    (["--target-ms", "-3"], "target"),
    (["--opt", "nope=1"], "valid: "),
    (["--hard", "--alpha", "0.1"], "--hard"),
    (["--torch-device", "cuda:99"], "valid here: cpu"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "4", "--batch", "2"], "--batch 2 < --workers 4"),
    (["--target-ms", "nan"], "target 'nan' is not a positive number"),
    (["--target-ms", "inf"], "target 'inf' is not a positive number"),
    (["--targets", "5,nan"], "target 'nan' is not a positive number"),
    (["--targets", "5,,10"], "is not a comma-separated list of positive latencies"),
    (["--targets", ","], "is not a comma-separated list of positive latencies"),
    (["--targets", ""], "is not a comma-separated list of positive latencies"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--runs", "20"], "--max-runs 10 < --runs 20"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--strategy", "pnas"], "has none (spaces that have it: nb201, pnas)"),
    (["--device", "nope:x"], "local:onnxruntime | local:litert"),
    (["--width-mult", "inf"], "width_mult must be a positive finite number"),
    (["--runs", "2"], "--runs must be >= 3, got 2"),
    # a misspelt evaluator is named as such, not as "flags ignored"
    (["--accuracy", "potato"], "unknown accuracy evaluator 'potato'; valid: "),
    (["--accuracy", "proxy:digits", "--data", "imagefolder:x"], "name different data"),
    # proxy:DATA is --data DATA (it conflicted with the default digits), path made absolute
    (["--accuracy", "proxy:imagefolder:no/such"], "/no/such"),
    (["--workers", "2", "--data", "module:tests.train.bad_datamodules:HoldsLock"],
     "--workers sends the accuracy evaluator"),
    # options that turned the controller NaN (a silent random search) or a traceback
    (["--opt", "lr=inf"], "lr must be a finite number > 0, got inf"),
    (["--strategy", "reinforce", "--opt", "entropy_weight=nan"],
     "entropy_weight must be a finite number >= 0"),
    (["--opt", "init_range=inf"], "init_range must be in (0, 1e6], got inf"),
    (["--space", "nasrl", "--strategy", "random", "--space-opt", "max_depth=inf"],
     "max_depth must be an integer"),
    (["--space", "nb201", "--strategy", "pnas", "--opt", "alpha=nan"],
     "alpha and beta must be finite numbers"),
    # the name's sampler was silently replaced by the option's
    (["--strategy", "optuna:tpe", "--opt", "sampler=nsga2"],
     "sampler is set by the strategy name ('tpe')"),
    # the last of two silently won
    (["--opt", "lr=0.1", "--opt", "lr=0.2"], "strategy option 'lr' is given twice"),
    # the string went to dict(): a traceback-like message naming neither option nor format
    (["--strategy", "optuna:tpe", "--opt", "sampler_options=multivariate=false"],
     "option sampler_options='multivariate=false' is not JSON"),
    (["--strategy", "optuna:tpe", "--opt", "sampler_options=[1]"], "expected a JSON object"),
    # a wrong type failed inside Optuna at the first ask, after the run folder was made
    (["--strategy", "optuna:tpe", "--opt", 'sampler_options={"n_startup_trials": "3"}'],
     "optuna sampler TPESampler fails with options {'n_startup_trials': '3'}: TypeError"),
    # counts that hung a search in its first update, leaving a run without children
    (["--opt", "epochs=1000000000"], "epochs must be in [1, 100] passes"),
    (["--opt", "novel=100000"], "novel must be in [0, 10,000] redraws"),
    (["--space", "nb201", "--strategy", "pnas", "--opt", "epochs=1000000000"],
     "epochs must be in [1, 100,000]"),
    (["--space", "nb201", "--strategy", "evolution", "--opt", "retries=100000"],
     "retries must be in [0, 10,000]"),
    (["--space", "nasrl", "--strategy", "random", "--space-opt", "grow_by=100000"],
     "grow_by must be an integer in [0, 1,000]"),
    (["--space", "nb201", "--strategy", "enas", "--opt", "candidates=100000000"],
     "candidates must be an integer in [1, 100,000]"),
    # silently ignored off mnasnet
    (["--space", "nb201", "--strategy", "enas", "--opt", "zero_gamma=true"],
     "private_bn and zero_gamma are mnasnet-only, not nb201"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["search", "--out", str(tmp_path / "run"), *TINY, *args])
    err = capsys.readouterr().err
    assert rc == 2, (args, err[-2000:])
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err
    assert not (tmp_path / "run").exists(), "refused before anything was written"


def test_sampler_options_given_as_json_reach_the_sampler():
    from mnas.cli.options import parse_kv, typed_options
    from mnas.spaces import get_space
    from search.base import strategy_factory

    factory = strategy_factory("optuna:tpe")
    opts = typed_options(factory, parse_kv(
        ['sampler_options={"n_startup_trials": 3, "multivariate": false}'], "strategy"),
        "strategy")
    assert opts == {"sampler_options": {"n_startup_trials": 3, "multivariate": False}}
    strategy = factory(get_space("nb201"), seed=0, **opts)
    assert strategy.sampler._n_startup_trials == 3 and not strategy.sampler._multivariate
    assert strategy.config()["sampler_options"] == opts["sampler_options"]


def test_workers_without_ray_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)      # as if the ray extra were missing
    rc = main(["search", "--out", str(tmp_path / "run"), *TINY, "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "pip install -e '.[ray]'" in err and not (tmp_path / "run").exists()


IGNORED = "(the proxy's training) would be ignored"


@pytest.mark.parametrize("extra, needle", [
    (["--epochs", "2", "--torch-device", "cpu"],
     f"trains no child, so --epochs, --torch-device {IGNORED}: drop them"),
    (["--data", "digits"], f"trains no child, so --data {IGNORED}: drop it"),
    (["--workers", "2"], f"trains no child, so --workers {IGNORED}: drop it"),
    (["--runs", "5", "--clock", "cpu"],
     "times no child, so --runs, --clock (how children are timed) would be ignored: drop them"),
])
def test_flags_a_table_search_would_ignore_are_refused(tmp_path, monkeypatch, capsys, extra,
                                                       needle):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["search", "--out", str(tmp_path / "run"), *TABLE, "--strategy", "random",
               "--target-ms", "10", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--device", "adb:XYZ"], "reads every child's latency from the table, so --device "
                              "would be ignored: drop it"),
    (["--storage", "nope://host/db"], "cannot open storage 'nope://host/db': Can't load "
                                      "plugin"),
    (["--storage", "sqlite:////no/such/folder/x.db"], "unable to open database file"),
    (["--accuracy", "table:{tmp}#acc"], "is a folder, not a CSV file"),
    (["--accuracy", "table:{tmp}/header.csv#acc"], "has a header but no rows"),
    (["--accuracy", "table:{tmp}/binary.csv#acc"], "is not UTF-8 text"),
    (["--space", "nasrl"], "does not hold architectures of the 'nasrl' space: "),
])
def test_a_table_search_refuses_bad_tables_and_storage_before_writing(
        tmp_path, monkeypatch, capsys, extra, needle):
    from mnas.cli import main

    (tmp_path / "header.csv").write_text("arch,acc\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)))
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["search", "--out", str(tmp_path / "run"), *TABLE, "--strategy", "random",
               "--target-ms", "10", *[a.format(tmp=tmp_path) for a in extra]])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err and not (tmp_path / "run").exists()


def test_runs_sharing_a_storage_keep_apart_and_resume_their_own(tmp_path, monkeypatch,
                                                                capsys):
    """Two runs in folders of the same name, one Optuna storage: each writes and resumes
    its own study (before, both were study 'run': the second reported the first's
    children as its own)."""
    import optuna

    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    runs = [tmp_path / "a" / "run", tmp_path / "b" / "run"]
    for seed, out in enumerate(runs):
        assert main(["search", "--out", str(out), *TABLE, "--strategy", "random",
                     "--target-ms", "10", "--seed", str(seed), "--storage", url]) == 0
    assert main(["search", "--out", str(runs[1]), "--resume", "--budget", "4"]) == 0
    capsys.readouterr()
    names = [json.loads((out / "config.json").read_text())["study_name"] for out in runs]
    assert names[0] != names[1] and all(n.startswith("run-") for n in names)
    counts = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    assert counts == {names[0]: 3, names[1]: 4}
    archs = [{r["arch"] for r in csv.DictReader(
        (out / "trials.csv").read_text().splitlines())} for out in runs]
    assert archs[0] != archs[1]


def test_a_resume_with_nothing_left_to_search_says_so(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *TABLE, "--strategy", "random",
                 "--target-ms", "10"]) == 0
    capsys.readouterr()
    assert main(["search", "--out", str(out), "--resume", "--budget", "3"]) == 0
    err = capsys.readouterr().err
    assert "this run already has 3 children (budget 3): nothing to search" in err, err
    assert "children:" not in err           # no progress bar for nothing


def test_resume_and_force_together_are_refused(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *TABLE, "--strategy", "random",
                 "--target-ms", "10"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["search", "--out", str(out), "--resume", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give one of them" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("out, needle", [
    ("{tmp}/afile/run", "afile is a file, not a folder"),
    ("/proc/mnas-run", "cannot be written"),
])
def test_an_unwritable_out_is_refused_before_the_target_is_measured(
        tmp_path, monkeypatch, capsys, out, needle):
    """Found at once, not after measuring MobileNetV2 for --target-ms auto."""
    from mnas.cli import main

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["search", "--out", out.format(tmp=tmp_path), *TINY,
               "--device", "nope:never-built"])     # would fail later than --out does
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err, err


def test_a_ray_address_without_a_cluster_is_one_line_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray", reason="--ray-address needs the mnas[ray] extra")
    from mnas.cli import main

    ray.shutdown()      # an earlier test's local cluster would answer instead
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    rc = main(["search", "--out", str(tmp_path / "run"), *TINY, "--ray-address", "auto"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("mnas: error: --ray-address auto: ") and "Ray instance" in err
    assert not (tmp_path / "run").exists()


def test_a_table_search_resumes_and_refuses_a_torch_device(tmp_path, monkeypatch, capsys):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *TABLE, "--strategy", "random",
                 "--target-ms", "10"]) == 0
    before = (out / "config.json").read_text()
    capsys.readouterr()
    rc = main(["search", "--out", str(out), "--resume", "--budget", "4", "--torch-device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"trains no child, so --torch-device {IGNORED}" in err, err
    assert (out / "config.json").read_text() == before
    rc = main(["search", "--out", str(out), "--resume", "--device", "local:onnxruntime"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device is not used by this run's latency (table:" in err, err
    assert "device_fingerprint" not in json.loads(before)      # a table measures nothing
    assert main(["search", "--out", str(out), "--resume", "--budget", "4", "--no-progress"]) == 0
    with open(out / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("bad", [["--data", "nope"], ["--device", "nope:x"],
                                 ["--torch-device", "cuda:99"]])
def test_force_with_a_bad_setting_keeps_the_old_run(tmp_path, monkeypatch, capsys, bad):
    """--force clears an old run only once every setting has been checked."""
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "study.db", "trials.csv"):
        (out / name).write_text(f"old {name}")
    rc = main(["search", "--out", str(out), "--force", *TINY, *bad])
    assert rc == 2, capsys.readouterr().err[-2000:]
    assert all((out / n).read_text() == f"old {n}"
               for n in ("config.json", "study.db", "trials.csv"))


ENAS_TINY = [f"--opt={k}={v}" for k, v in (("resolution", 8), ("width_mult", 0.25),
                                            ("batch_size", 16), ("warmup_steps", 0),
                                            ("shared_steps", 1), ("controller_steps", 1),
                                            ("controller_batch", 2), ("candidates", 2))]


@pytest.mark.parametrize("space, told", [("mnasnet", True), ("nb201", False)])
def test_a_search_names_a_measured_limitation_of_its_strategy_once(tmp_path, monkeypatch,
                                                                     capsys, space, told):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    flags = TABLE if space == "nb201" else [*TINY, "--space", space]
    rc = main(["search", "--out", str(tmp_path / "run"), *flags, "--budget", "1",
               "--strategy", "enas", "--target-ms", "10", *ENAS_TINY])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    notes = [line for line in err.splitlines() if line.startswith("mnas: note:")]
    caveats = [line for line in notes if "trains on digits" not in line]
    assert len(caveats) == told, err[-2000:]
    if told:
        assert "enas" in caveats[0] and space in caveats[0] and "latency estimate" in caveats[0]
    # with a table's accuracy, the supernet's own task is named (and how to change it)
    assert len(notes) - len(caveats) == (space == "nb201"), err[-2000:]


def test_enas_supernet_from_is_checked_first_and_not_needed_to_resume(tmp_path, monkeypatch,
                                                                      capsys):
    """`--opt supernet_from=RUN`: an unfit source is one line before anything is written;
    a run that took its supernet resumes after the source is deleted."""

    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    common = [*TABLE, "--strategy", "enas", "--target-ms", "10", *ENAS_TINY]
    src = tmp_path / "src"
    assert main(["search", "--out", str(src), *common, "--budget", "1"]) == 0
    capsys.readouterr()
    unfit = tmp_path / "unfit"
    at_16 = [a.replace("resolution=8", "resolution=16") for a in common]
    rc = main(["search", "--out", str(unfit), *at_16, "--budget", "1",
               f"--opt=supernet_from={src}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "was trained with resolution=8, this search has resolution=16" in err
    assert not unfit.exists()
    reuse = tmp_path / "reuse"
    assert main(["search", "--out", str(reuse), *common, "--budget", "1",
                 f"--opt=supernet_from={src}"]) == 0
    shutil.rmtree(src)
    capsys.readouterr()
    rc = main(["search", "--out", str(reuse), "--resume", "--budget", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    with open(reuse / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 2


@pytest.mark.parametrize("args, needle", [
    (["nope"], "does not exist"),
    (["{tmp}", "--epochs", "0"], "--epochs must be >= 1"),
    (["{tmp}", "--width", "-1"], "--width must be > 0"),
    (["{tmp}"], "is not a run folder"),
    (["{tmp}", "--torch-device", "tpu:0"], "valid here: cpu"),
])
def test_train_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    from mnas.cli import main

    rc = main(["train", *(a.format(tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err


@pytest.mark.parametrize("command", ["front", "train"])
def test_a_file_given_as_a_run_folder_is_named_as_one(tmp_path, capsys, command):
    from mnas.cli import main

    (tmp_path / "afile").write_text("")
    assert main([command, str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "afile is a file, not a run folder" in err, err
    assert main([command, str(tmp_path / "none")]) == 2
    assert "run folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["front", "train"])
def test_a_run_folder_that_is_a_link_loop_or_empty_is_named_as_such(tmp_path, capsys,
                                                                    command):
    from mnas.cli import main

    (tmp_path / "loop").symlink_to("loop")   # `ln -s loop loop`: Path.exists says False
    assert main([command, str(tmp_path / "loop")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" not in err, err
    assert f"run folder {tmp_path / 'loop'} cannot be resolved: a symbolic link loop" in err
    assert main([command, ""]) == 2
    assert capsys.readouterr().err == "mnas: error: run folder path is empty\n"


def test_ctrl_c_while_the_reports_are_written_names_the_resume(tmp_path, monkeypatch, capsys):
    """The children are all saved when Ctrl-C lands in the final reports: say so, and how
    to write the reports again (it printed only "interrupted")."""
    import mnas.run
    from mnas.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mnas.run, "write_run_reports", interrupted)
    assert main(["search", "--out", str(tmp_path / "run"), *TABLE]) == 130
    err = capsys.readouterr().err
    assert "interrupted while writing the reports; all 3 children are saved" in err, err
    assert f"mnas search --out {tmp_path / 'run'} --resume` writes them again" in err


@pytest.mark.parametrize("extra, told", [
    (["--budget", "4", "--opt", "batch=4"], True),     # the update comes after the last child
    (["--budget", "5", "--opt", "batch=4"], False),
    (["--budget", "3", "--strategy", "random"], False),  # never learns: nothing to say
])
def test_a_budget_that_ends_before_the_first_update_is_named(tmp_path, monkeypatch, capsys,
                                                              extra, told):
    from mnas.cli import main

    monkeypatch.setenv("MNAS_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["search", "--out", str(tmp_path / "run"), *TABLE, *extra]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "samples without learning" in ln]
    assert len(notes) == told, notes
    if told:
        assert "learns from its children only after the first 4; --budget 4" in notes[0]
        assert "--opt batch=N" in notes[0]

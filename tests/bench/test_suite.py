"""Suite TOML parsing and validation: every problem is one line naming entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from latency.suite import DEFAULT_TOLERANCE, load_suite, parse_suite


def write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    p = tmp_path / "models" / "m.onnx"
    p.write_bytes(b"not checked at parse time")
    return p


def test_full_suite_with_defaults_and_overrides(tmp_path: Path, model_file: Path) -> None:
    p = write(tmp_path, """
[defaults]
device = "local:onnxruntime"
runs = 12
tolerance = 0.08

[[entry]]
name = "mbv2"
arch = "mobilenetv2"
max_ms = 40

[[entry]]
name = "file.model-1"
model = "models/m.onnx"
tolerance = 0.03
threads = 2
rounds = 5
""")
    s = load_suite(p)
    assert s.names() == ["mbv2", "file.model-1"]
    a, b = s.entries
    assert a.arch == "mobilenetv2" and a.space == "mnasnet" and a.model is None
    assert a.model_format == "arch" and a.max_ms == 40.0 and a.tolerance == 0.08
    assert a.settings.runs == 12 and a.settings.max_runs >= 12
    assert b.model == model_file.resolve() and b.model_format == "onnx"
    assert b.tolerance == 0.03 and b.settings.threads == 2 and b.rounds == 5
    assert b.max_ms is None and b.input_shape is None


def test_default_tolerance_is_five_percent(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, '[[entry]]\nname = "a"\narch = "mobilenetv2"\n'))
    assert s.entries[0].tolerance == DEFAULT_TOLERANCE == 0.05
    assert s.entries[0].device == "local:onnxruntime"


def test_tflite_paths_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"x")
    s = load_suite(write(tmp_path, '[[entry]]\nname = "t"\nmodel = "m.tflite"\n'
                                   'device = "adb:emulator-5554"\n'))
    assert s.entries[0].model_format == "tflite"


@pytest.mark.parametrize(("body", "needle"), [
    ('name = "a"\nmodel = "missing.onnx"', "entry #1 'a': field 'model': model file not found"),
    ('name = "a"\nmodel = "m.txt"', "field 'model': 'm.txt' is neither .onnx nor .tflite"),
    ('name = "a"', "field 'model/arch': give exactly one of"),
    ('name = "a"\narch = "x"\nmodel = "models/m.onnx"', "field 'model': give exactly one"),
    ('arch = "x"', "entry #1: field 'name': required"),
    ('name = "a b"\narch = "x"', "field 'name'"),
    ('name = "a"\narch = "x"\ntolerance = 5', "field 'tolerance': must be a fraction in (0, 1)"),
    ('name = "a"\narch = "x"\ntolerance = "5%"', "field 'tolerance': must be a number"),
    ('name = "a"\narch = "x"\nmax_ms = -1', "field 'max_ms': must be a positive"),
    ('name = "a"\narch = "x"\nruns = 2', "field 'runs': runs must be in [3, 100000], got 2"),
    ('name = "a"\narch = "x"\nthreads = 100000000000',
     "field 'threads': threads must be in [1, 1024]"),
    ('name = "a"\narch = "x"\nruns = 100000000000000000',
     "field 'runs': runs must be in [3, 100000]"),
    ('name = "a"\narch = "x"\nruns = 3.5', "field 'runs': must be an integer"),
    ('name = "a"\narch = "x"\nthreads = 0', "field 'threads'"),
    ('name = "a"\narch = "x"\nrounds = 0', "field 'rounds': must be an integer in [1, 50]"),
    ('name = "a"\narch = "x"\ntolerence = 0.1', "field 'tolerence': unknown field; valid:"),
    ('name = "a"\narch = "x"\ninput_shape = [1, 3, 224]', "field 'input_shape': must be 4"),
    ('name = "a"\nmodel = "models/m.onnx"\nspace = "nasnet"',
     "field 'space': only applies to 'arch' entries"),
    ('name = "a"\narch = "x"\ndevice = ""', "field 'device': must be a device spec"),
])
def test_bad_entry_is_one_line_naming_entry_and_field(tmp_path: Path, model_file: Path,
                                                      body: str, needle: str) -> None:
    p = write(tmp_path, f"[[entry]]\n{body}\n")
    with pytest.raises(ValueError) as ei:
        load_suite(p)
    msg = str(ei.value)
    assert needle in msg
    assert str(p) in msg and "\n" not in msg


def test_second_entry_is_named_by_index_and_name(tmp_path: Path) -> None:
    p = write(tmp_path, '[[entry]]\nname = "ok"\narch = "a"\n'
                        '[[entry]]\nname = "bad"\narch = "a"\nmax_ms = 0\n')
    with pytest.raises(ValueError, match=r"entry #2 'bad': field 'max_ms'"):
        load_suite(p)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, '[[entry]]\nname = "a"\narch = "x"\n[[entry]]\nname = "a"\narch = "y"\n')
    with pytest.raises(ValueError, match=r"entry #2 'a': field 'name': duplicate of entry #1"):
        load_suite(p)


def test_empty_and_malformed_suites(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty suite"):
        load_suite(write(tmp_path, "# nothing here\n"))
    with pytest.raises(ValueError, match="empty suite"):
        load_suite(write(tmp_path, "[defaults]\nruns = 10\n"))
    with pytest.raises(ValueError, match=r"malformed TOML: .*line 2"):
        load_suite(write(tmp_path, '[[entry]]\nname = "a\n'))
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) 'entries'"):
        load_suite(write(tmp_path, '[[entries]]\nname = "a"\narch = "x"\n'))
    with pytest.raises(ValueError, match=r"\[defaults\]: unknown field 'name' \(it is per entry\)"):
        load_suite(write(tmp_path, '[defaults]\nname = "a"\n[[entry]]\nname = "a"\narch = "x"\n'))
    with pytest.raises(ValueError, match="'entry' must be an array of tables"):
        parse_suite({"entry": {"name": "a"}}, tmp_path / "x.toml")
    with pytest.raises(FileNotFoundError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


def test_defaults_for_arch_fields_do_not_break_model_entries(tmp_path: Path,
                                                            model_file: Path) -> None:
    s = load_suite(write(tmp_path, '[defaults]\ninput_shape = [1, 3, 64, 64]\n'
                                   '[[entry]]\nname = "f"\nmodel = "models/m.onnx"\n'
                                   '[[entry]]\nname = "a"\narch = "mobilenetv2"\n'))
    f, a = s.entries
    assert f.input_shape is None and a.input_shape == (1, 3, 64, 64)


def test_select_entries(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, '[[entry]]\nname = "a"\narch = "x"\n'
                                   '[[entry]]\nname = "b"\narch = "y"\n'))
    assert s.select(["b"]).names() == ["b"]
    assert s.select(None).names() == ["a", "b"]
    with pytest.raises(ValueError, match="no entry named 'c'; entries: a, b"):
        s.select(["c"])


def test_reference_entries(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, '[defaults]\nreference = "canary"\n'
                                   '[[entry]]\nname = "canary"\narch = "mobilenetv2"\n'
                                   '[[entry]]\nname = "app"\narch = "mnasnet-a1-nearest"\n'))
    canary, app = s.entries
    assert canary.reference is None and app.reference == "canary"   # no self-reference
    assert s.select(["app"]).names() == ["canary", "app"]             # measured together
    bad = [('reference = "nope"', "field 'reference': no entry named 'nope'"),
           ('reference = "c"\nrounds = 5', "must be measured on the same device with the same"),
           ('reference = "c"\ndevice = "adb:x"', "must be measured on the same device"),
           ('reference = 3', "field 'reference': must be the name of another entry")]
    for extra, needle in bad:
        p = write(tmp_path, f'[[entry]]\nname = "c"\narch = "x"\n'
                            f'[[entry]]\nname = "e"\narch = "y"\n{extra}\n')
        with pytest.raises(ValueError, match=r"entry #2 'e': field 'reference'") as ei:
            load_suite(p)
        assert needle in str(ei.value)
    p = write(tmp_path, '[[entry]]\nname = "a"\narch = "x"\n[[entry]]\nname = "b"\narch = "x"\n'
                        'reference = "a"\n[[entry]]\nname = "c"\narch = "x"\nreference = "b"\n')
    with pytest.raises(ValueError, match="references do not chain"):
        load_suite(p)


def test_clock_defaults_to_wall_and_is_set_per_entry_or_in_defaults(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, '[defaults]\nclock = "cpu"\n'
                                   '[[entry]]\nname = "a"\narch = "mobilenetv2"\n'
                                   '[[entry]]\nname = "b"\narch = "mobilenetv2"\nclock = "wall"\n'
                                   'threads = 2\n'))
    a, b = s.entries
    assert a.settings.clock == "cpu" and a.settings.threads == 1
    assert b.settings.clock == "wall" and b.settings.threads == 2
    assert a.to_dict()["settings"]["clock"] == "cpu"   # what results record
    plain = load_suite(write(tmp_path, '[[entry]]\nname = "c"\narch = "mobilenetv2"\n', "p.toml"))
    assert plain.entries[0].settings.clock == "wall"


@pytest.mark.parametrize("fields, needle", [
    ('clock = "gpu"', "field 'clock': must be one of 'wall', 'cpu', got 'gpu'"),
    ("clock = 1", "field 'clock': must be one of 'wall', 'cpu', got 1"),
    ('clock = "cpu"\nthreads = 4', "field 'clock': clock 'cpu' counts the calling thread's "
                                   "CPU time only, so it needs threads=1 (got threads=4)"),
    ('clock = "cpu"\ndevice = "adb:emulator-5554"', "field 'clock': 'cpu' needs a local device"),
], ids=["unknown", "not-a-string", "threads", "adb"])
def test_bad_clock_is_one_line_naming_entry_and_field(tmp_path: Path, fields: str,
                                                      needle: str) -> None:
    p = write(tmp_path, f'[[entry]]\nname = "net"\narch = "mobilenetv2"\n{fields}\n')
    with pytest.raises(ValueError) as ei:
        load_suite(p)
    msg = str(ei.value)
    assert "\n" not in msg and "entry #1 'net'" in msg and needle in msg

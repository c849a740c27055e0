"""The spine-* commands alike: arguments checked before TensorFlow or the model is loaded,
one error style (`PROG: error: ...`, exit 2, `usage:` naming the command), TensorFlow's
start-up lines kept off stderr unless --verbose."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from spine import evaluate, pipeline, prepare, segment, train
from spine.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[2]
TF_NOISE = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "I0000")
# Every console script pyproject.toml installs: name -> "module:function".
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if any command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(pipeline, "load_segmenter", refuse)
    monkeypatch.setattr(evaluate, "load_evaluation_segmenter", refuse)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return make_phantom(5, size=64, num_slices=3, name="ph").save(
        tmp_path_factory.mktemp("cli")
    )[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{scan}", "--out", "{file}"], "cannot create the output folder"),
        (["{scan}", "--weights", "{file}"], "not a readable weights file"),
        (["{scan}", "--config", "{tmp}/absent.toml"], "Model config not found"),
        (["{scan}", "--series", "4", "--out", "{tmp}/o"], "--series applies to DICOM"),
        (["{tmp}/absent.nii.gz", "--out", "{tmp}/o"], "No such file"),
        (["{file}", "--out", "{tmp}/o"], "not a NIfTI"),
    ],
    ids=["out-is-a-file", "garbage-weights", "missing-config", "series-without-dicom",
         "missing-scan", "not-a-scan"],
)  # fmt: skip
def test_segment_checks_its_arguments_before_the_model(
    argv, message, scan, tmp_path, capsys, no_model
):
    file = tmp_path / "a_file.txt"
    file.write_text("not a folder, not weights, not a scan")
    argv = [a.format(scan=scan, file=file, tmp=tmp_path) for a in argv]
    assert segment.main(argv) == 2
    err = capsys.readouterr().err
    assert "spine-segment: error: " in err and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing made for a run that cannot start


def test_evaluate_checks_the_weights_before_the_model(tmp_path, capsys, no_model):
    (tmp_path / "data").mkdir()
    garbage = tmp_path / "w.weights.h5"
    garbage.write_bytes(b"garbage")
    argv = ["--data", str(tmp_path / "data"), "--weights", str(garbage), "--out", str(tmp_path)]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spine-evaluate: error: ") and "not a readable weights file" in err


@pytest.mark.parametrize(
    ("main", "prog", "argv"),
    [
        (segment.main, "spine-segment", ["x.nii.gz", "--lowest", "L9"]),
        (train.main, "spine-train", ["--data", "d", "--weights", "none", "--heads-epochs", "-1"]),
        (evaluate.main, "spine-evaluate", ["--data", "d", "--out", "o", "--min-score", "2"]),
        (prepare.main, "spine-prepare", ["--src", "s", "--out", "o", "--val-fraction", "1.5"]),
    ],
    ids=["segment", "train", "evaluate", "prepare"],
)
def test_bad_option_values_are_usage_errors_naming_the_command(main, prog, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} ") and f"{prog}: error: argument" in err


def test_train_checks_the_logs_folder_before_training(tmp_path, capsys):
    assert train.build_parser().get_default("weights") != "coco"  # the file is not shipped
    logs = tmp_path / "logs"
    logs.write_text("a file where the run folders should go")
    assert train.main(["--data", str(tmp_path), "--weights", "none", "--logs", str(logs)]) == 2
    assert "spine-train: error: cannot create the logs folder" in capsys.readouterr().err


def test_prepare_errors_carry_its_name(tmp_path, capsys):
    assert prepare.main(["--src", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("spine-prepare: error: source folder not found")


@pytest.mark.slow
def test_a_normal_run_prints_no_tensorflow_start_up_lines(scan, tmp_path):
    """As users run it: the bundled model on a small scan, in its own process."""
    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "spine.segment", str(scan), "--out", str(tmp_path), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert "1 of 1 scans segmented" in quiet.stdout
    assert not [word for word in TF_NOISE if word in quiet.stderr + quiet.stdout], quiet.stderr
    verbose = run("--verbose")
    assert verbose.returncode == 0 and any(word in verbose.stderr for word in TF_NOISE)


def _parser_of(entry: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a console script's main builds (caught at parse_args, so nothing runs)."""
    module, function = entry.split(":")
    main = getattr(importlib.import_module(module), function)
    built: list[argparse.ArgumentParser] = []

    def catch(parser, *args, **kwargs):
        built.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        main([])
    return built[0]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_names_itself_in_usage_and_explains_every_option(
    script, monkeypatch
):
    parser = _parser_of(SCRIPTS[script], monkeypatch)
    assert parser.prog == script
    assert parser.format_usage().startswith(f"usage: {script} ")
    unexplained = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert unexplained == []

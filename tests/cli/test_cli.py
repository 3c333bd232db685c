"""`gradwatch` (the trainer commands): validation errors (one line, exit 2, nothing created), presets, an end-to-end
train into a temporary logdir, Ctrl-C / SIGTERM, NaN halts, inspect / diagnose / export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradwatch.cli import main
from gradwatch.trainer.presets import PRESETS
from gradwatch.trainer.runlog.reader import RunReader

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--threads", "1"]


def _cli(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gradwatch", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args,expected", [
    (["train", "--activation", "swish"], "valid values are relu, sigmoid, tanh"),
    (["train", "--preset", "overfitt"], "valid presets: overfit, l1, l2"),
    (["train", "--dropout", "1.0"], "invalid dropout '1.0': must be < 1.0"),
    (["train", "--learning-rate", "0.1"], "unknown option --learning-rate"),
    (["train", "--data", "/no/such/Tweets.csv"], "invalid --data '/no/such/Tweets.csv': no such file"),
])
def test_bad_input_subprocess_one_line_exit_2_nothing_created(tmp_path, args, expected):
    logdir = tmp_path / "logs"
    result = _cli(*args, "--logdir", str(logdir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not logdir.exists()


@pytest.mark.parametrize("args,expected", [
    (["train", "--dropout", "-0.1"], "invalid dropout '-0.1': must be >= 0.0"),
    (["train", "--lr", "-1"], "invalid lr '-1': must be >= 0.0"),
    (["train", "--weight_decay", "-1"], "invalid weight_decay"),
    (["train", "--l1", "-0.5"], "invalid l1"),
    (["train", "--patience", "-1"], "invalid patience '-1': must be >= 0"),
    (["train", "--epochs", "ten"], "invalid epochs 'ten': expected an integer"),
    (["train", "--batchnorm", "maybe"], "expected true or false"),
    (["train", "--optimizer", "rmsprop"], "valid values are adam, sgd"),
    (["train", "--model", "cnn"], "valid models for tweets are mlp, embedding, lstm"),
    (["train", "--dataset", "circles", "--model", "lstm"], "valid models for circles are mlp"),
    (["train", "--representation", "sequence"], "the MLP needs word features"),
    (["train", "--activaton", "relu"], "did you mean --activation?"),
    (["train", "--name", "a b"], "invalid --name 'a b'"),
    (["train", "--clip-norm", "0"], "invalid clip_norm"),
    (["train", "extra"], "unexpected argument 'extra'"),
    (["lesson", "--only", "overfit,nope"], "unknown preset nope"),
    (["lesson", "--epochs", "0"], "invalid epochs '0'"),
    (["inspect", "/no/such/run"], "invalid RUN_DIR"),
    (["diagnose", "."], "not a gradwatch run folder"),
    (["export", "."], "the following arguments are required: -o/--output"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_input_messages(tmp_path, capsys, args, expected):
    logdir = tmp_path / "logs"
    extra = ["--logdir", str(logdir)] if args and args[0] in ("train", "lesson") else []
    assert main([*args, *extra]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.out == ""
    assert not logdir.exists()


def test_logdir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["train", "--preset", "relu", "--logdir", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err


# ---- presets and train --------------------------------------------------------------------------
def test_presets_lists_one_line_each():
    result = _cli("presets")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(len(line) > 30 for line in lines)


def test_train_end_to_end_last_line_is_the_run_folder(tmp_path):
    logdir = tmp_path / "logs"
    result = _cli("train", "--preset", "relu", "--epochs", "2", "--limit", "200", "--logdir", str(logdir),
                  "--name", "e2e", "--job-id", "j-123", "--every", "2", "--batch_size", "16", *FAST)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == logdir and run_dir.name.split("-")[2] == "e2e"
    assert "finished: 2 epochs" in result.stdout
    assert "epoch 2/2" in result.stderr  # not a TTY: one line per epoch
    with RunReader(run_dir) as reader:
        assert reader.status() == "finished"
        assert {"train_loss", "grad_norm_total", "lr", "val_loss", "val_acc", "epoch"} <= set(reader.scalar_names())
        meta = reader.meta
    assert meta["job_id"] == "j-123"
    assert meta["config"]["batch_size"] == 16 and meta["config"]["preset"] == "relu"
    assert 0.0 <= meta["results"]["test_accuracy"] <= 1.0 and "confusion_matrix" in meta["results"]


def test_quiet_prints_only_the_run_folder(tmp_path, capsys):
    code = main(["train", "--preset", "relu", "--epochs", "1", "--limit", "100", "--logdir", str(tmp_path),
                 "--quiet", *FAST])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert len(captured.out.splitlines()) == 1 and Path(captured.out.strip()).is_dir()


def test_nan_halt_exits_1_and_marks_failed(tmp_path, capsys):
    code = main(["train", "--preset", "exploding", "--limit", "200", "--logdir", str(tmp_path), *FAST])
    captured = capsys.readouterr()
    assert code == 1
    run_dir = Path(captured.out.strip().splitlines()[-1])
    assert "run failed: training halted" in captured.err
    with RunReader(run_dir) as reader:
        assert reader.status() == "failed"
        assert len(reader.scalar_series("train_loss")) >= 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_run_cleanly(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gradwatch", "train", "--preset", "relu", "--epochs", "5000", "--limit", "300",
         "--logdir", str(tmp_path), *FAST],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        for line in process.stderr:  # wait until training is under way
            if "epoch 2/5000" in line or time.monotonic() > deadline:
                break
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert "run stopped" in err and "Traceback" not in err
    with RunReader(run_dir) as reader:
        assert reader.status() == "stopped"
        assert reader.meta["results"]["stop_reason"] == "interrupted"
        assert len(reader.scalar_series("val_loss")) >= 2  # records kept


# ---- inspect / diagnose / export ----------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    assert main(["train", "--preset", "vanishing", "--epochs", "2", "--every", "1", "--limit", "300", "--logdir", str(logdir),
                 "--quiet", *FAST]) == 0
    return next(logdir.iterdir())


def test_inspect_and_diagnose_commands(finished_run, capsys):
    assert main(["inspect", str(finished_run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished" and summary["run"] == finished_run.name
    assert main(["inspect", str(finished_run)]) == 0
    assert finished_run.name in capsys.readouterr().out
    assert main(["diagnose", str(finished_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert any(flag["rule"] == "vanishing_gradient" for flag in result["flags"])
    assert main(["diagnose", str(finished_run)]) == 0
    assert "vanishing_gradient" in capsys.readouterr().out


def test_export_command(finished_run, tmp_path, capsys):
    target = tmp_path / "report.html"
    assert main(["export", str(finished_run), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert target.read_text().lstrip().lower().startswith("<!doctype html")

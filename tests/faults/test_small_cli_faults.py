"""The smaller faults: huge option values and out-of-range ports are one-line errors (not "internal
error"); SIGTERM to a user's own script marks its run stopped and still ends the process by SIGTERM;
a second Ctrl-C shortly after the first prints no traceback from torch's exit handlers; the log
format document names the schema version the code writes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gradwatch.trainer.runlog import RunReader, schema

from .conftest import REPO, gradwatch_cli, one_line


@pytest.mark.parametrize("args, words", [
    (["train", "--preset", "vanishing", "--seed", "1e30"], "invalid seed"),
    (["train", "--preset", "vanishing", "--seed", "1" + "0" * 30], "invalid seed"),
    (["train", "--preset", "vanishing", "--batch-size", "9" * 40], "invalid batch_size"),
    (["train", "--preset", "vanishing", "--lr", "1e400"], "invalid lr"),
    (["ui", "--port", "99999"], "--port"),
    (["ui", "--port", "-1"], "--port"),
])
def test_out_of_range_values_are_one_line_errors(tmp_path, args, words):
    result = gradwatch_cli(*args, "--logdir", str(tmp_path / "logs"), timeout=120)
    assert result.returncode == 2 and words in one_line(result.stderr), result.stderr


SCRIPT = textwrap.dedent("""
    import sys, time
    from gradwatch.trainer.run import Run
    with Run(sys.argv[1], name="user") as run:
        print(run.path, flush=True)
        step = 0
        while True:
            run.log(step, loss=1.0 / (step + 1))
            if step == 10:
                run.flush()
                print("ready", flush=True)
            step += 1
            time.sleep(0.001)  # a training step's pace: the writer keeps up on a busy machine
""")


def test_sigterm_to_a_users_script_marks_the_run_stopped(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    path = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # the process still dies of SIGTERM
    assert "Traceback" not in err and "SIGTERM" in one_line(err)
    with RunReader(path) as reader:
        assert reader.status() == "stopped" and reader.meta["error"] == "terminated (SIGTERM)"


TORCH_LOOP = textwrap.dedent("""
    import sys, torch
    from gradwatch.trainer.run import Run
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Run(sys.argv[1], name="loop") as run:
        run.watch(model, every=1)
        print(run.path, flush=True)
        step = 0
        while True:
            loss = model(torch.randn(32, 20)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            run.log(step, loss=loss.item(), **{f"m{i}": 1.0 for i in range(100)})
            if step == 20:
                print("go", flush=True)
            step += 1
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.08, 0.1, 0.12, 0.15])
def test_a_second_ctrl_c_soon_after_the_first_prints_no_torch_exit_traceback(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", TORCH_LOOP, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    path = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "go"
    proc.send_signal(signal.SIGINT)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert "Exception ignored" not in err and "atexit" not in err, err
    with RunReader(path) as reader:
        assert reader.status() == "stopped"


def test_the_log_format_document_names_the_schema_version_the_code_writes():
    text = (REPO / "docs" / "log-format.md").read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert re.search(rf"schema version {schema.SCHEMA_VERSION}\b", first), first

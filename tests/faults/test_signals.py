"""Signals: kill -9 during run creation leaves no hidden half-made folder once the next run starts,
kill -9 mid-training loses at most the last flush, and a double Ctrl-C 30 ms apart always ends the
run "stopped", never "running"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, list_runs

from .conftest import REPO

# Many scalars per step: closing the run then commits a large last batch, so a second Ctrl-C 30 ms
# after the first lands while the run is being closed (where it used to leave it "running").
LOOP = textwrap.dedent("""
    import sys, time
    from gradwatch.trainer.run import Run
    with Run(sys.argv[1], name="looping") as run:
        print(run.path, flush=True)
        step = 0
        while True:
            run.log(step, loss=1.0 / (step + 1), **{f"metric_{i}": float(step) for i in range(200)})
            if step % 50 == 0:
                run.flush()
                print("flushed", step, flush=True)
            step += 1
""")

CREATE_FOREVER = textwrap.dedent("""
    import sys
    from gradwatch.trainer.run import Run
    print("ready", flush=True)
    while True:
        Run(sys.argv[1], name="churn").finish()
""")


def _spawn(code: str, logdir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(logdir)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_double_ctrl_c_30_ms_apart_always_ends_the_run_stopped(tmp_path):
    for attempt in range(4):
        proc = _spawn(LOOP, tmp_path)
        path = proc.stdout.readline().strip()
        assert proc.stdout.readline().startswith("flushed")
        time.sleep(0.05 * attempt)  # interrupt at different points of the loop
        proc.send_signal(signal.SIGINT)
        time.sleep(0.03)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        with RunReader(path) as reader:
            assert reader.status() == "stopped", (attempt, reader.meta.get("status"), reader.meta.get("error"))


def test_kill_9_mid_training_keeps_every_flushed_record(tmp_path):
    proc = _spawn(LOOP, tmp_path)
    path = proc.stdout.readline().strip()
    flushed = -1
    while flushed < 300:
        flushed = int(proc.stdout.readline().split()[1])
    proc.kill()
    proc.wait(timeout=30)
    with RunReader(path) as reader:
        assert reader.status() == "stale"  # the process is gone: reported, not "running"
        steps = set(reader.scalars()[0]["step"].tolist())
    assert set(range(flushed + 1)) <= steps


def test_kill_9_during_run_creation_leaves_nothing_the_next_run_does_not_clean(tmp_path):
    for attempt in range(3):
        proc = _spawn(CREATE_FOREVER, tmp_path)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.17 * attempt)
        proc.kill()
        proc.wait(timeout=30)
    Run(tmp_path, name="next").finish()  # creating a run removes what dead creators left
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".building-")]
    assert hidden == []
    entries = list_runs(tmp_path)
    assert entries and all(e.error is None for e in entries), [e.error for e in entries if e.error]
    assert {e.status for e in entries} <= {"finished", "stale"}

"""Job control trusts nothing read from the logdir: a planted `.jobs/<id>.state.json` naming another
process group and a `.stop` dated 1970 cannot make Stop signal anything but the supervisor this
dashboard spawned, whose identity (pid and kernel start ticks) the dashboard keeps itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gradwatch.dashboard.jobs import JobManager
from gradwatch.trainer.runlog.process import process_alive, process_start_ticks
from tests.dashboard.test_dashboard_jobs import FakeTrainerJobs, _wait

JOB_ID = "j20261207-120000-abcdef"


@pytest.fixture
def victim():
    """An unrelated process of this user in its own process group (what a planted state names)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _plant(logdir, victim_pid: int) -> None:
    jobs = logdir / ".jobs"
    jobs.mkdir(parents=True)
    (jobs / f"{JOB_ID}.json").write_text(json.dumps({
        "job_id": JOB_ID, "preset": "overfit", "name": "planted", "overrides": {}, "created": time.time(),
        "command": ["true"], "logdir": str(logdir)}))
    (jobs / f"{JOB_ID}.state.json").write_text(json.dumps({
        "pid": victim_pid, "pid_start_ticks": process_start_ticks(victim_pid), "pgid": victim_pid,
        "child_pid": victim_pid, "started": time.time(), "run_id": None}))
    (jobs / f"{JOB_ID}.stop").write_text(json.dumps({"requested": 0}))


@pytest.mark.parametrize("with_identity_dir", [False, True])
def test_a_planted_job_state_cannot_make_stop_signal_another_process(tmp_path, victim, with_identity_dir):
    logdir = tmp_path / "logs"
    _plant(logdir, victim.pid)
    jobs = JobManager(logdir, identity_dir=tmp_path / "cache" / "jobs" if with_identity_dir else None)
    assert jobs.get(JOB_ID).active  # the planted job looks running...
    for _ in range(3):
        jobs.stop(JOB_ID)  # ...but Stop, even repeated past the grace period, signals nothing of it
    time.sleep(0.2)
    assert victim.poll() is None and process_alive(victim.pid)


def test_a_planted_identity_in_the_logdir_is_not_read(tmp_path, victim):
    """Only the dashboard's private folder holds identities; one planted beside the job is ignored."""
    logdir = tmp_path / "logs"
    _plant(logdir, victim.pid)
    (logdir / ".jobs" / f"{JOB_ID}.identity.json").write_text(json.dumps(
        {"pid": victim.pid, "start_ticks": process_start_ticks(victim.pid), "uid": os.getuid()}))
    JobManager(logdir, identity_dir=tmp_path / "cache" / "jobs").stop(JOB_ID)
    time.sleep(0.2)
    assert victim.poll() is None


def test_stop_reaches_the_job_the_dashboard_started_from_another_worker(tmp_path):
    identities = tmp_path / "cache" / "jobs"
    jobs = FakeTrainerJobs(tmp_path / "logs", max_jobs=1, identity_dir=identities)
    job = jobs.start("overfit", {"epochs": "3"}, name="fake")
    _wait(lambda: "step" in jobs.get(job.job_id).log_tail)
    saved = json.loads((identities / f"{job.job_id}.json").read_text())
    assert saved["start_ticks"] == process_start_ticks(saved["pid"])
    assert oct(identities.stat().st_mode & 0o777) == "0o700"
    worker = FakeTrainerJobs(tmp_path / "logs", max_jobs=1, identity_dir=identities)  # another gunicorn worker
    assert worker.stop(job.job_id).stop_requested is not None
    done = _wait(lambda: (j := jobs.get(job.job_id)).state == "stopped" and j)
    assert done.exit_code == 0

"""dashboard.jobs: spawn a supervised trainer, find its run, refuse beyond the limit, stop it cleanly.

A torch-free stand-in trainer (tests.dashboard.fake_trainer) replaces `gradwatch
train`; everything else - supervisor process, job files, signals - is the real thing.
"""

import sys
import time

import pytest

from gradwatch.dashboard.jobs import JobError, JobManager, option_arguments
from gradwatch.dashboard.views import launch as launch_logic
from gradwatch.trainer.options import OptionsError
from gradwatch.trainer.presets import resolve
from gradwatch.trainer.runlog import RunReader


class FakeTrainerJobs(JobManager):
    def command(self, job_id, preset, name, overrides):
        return [sys.executable, "-m", "tests.dashboard.fake_trainer", "--logdir", str(self.logdir),
                "--name", name, "--job-id", job_id, "--interval", "0.05"]


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_command_line_matches_the_cli_contract(tmp_path):
    jobs = JobManager(tmp_path, max_jobs=2, python="python")
    command = jobs.command("j20250101-000000-abcdef", "overfit", "try1", {"batch_size": "32", "clip_norm": None,
                                                                          "early_stopping": True})
    assert command[:4] == ["python", "-m", "gradwatch", "train"]
    assert command[command.index("--preset") + 1] == "overfit"
    assert command[command.index("--job-id") + 1] == "j20250101-000000-abcdef"
    assert option_arguments({"batch_size": "32", "clip_norm": None, "early_stopping": True}) == [
        "--batch-size", "32", "--clip-norm", "none", "--early-stopping", "true"]
    with pytest.raises(JobError):
        option_arguments({"nope": 1})


def test_invalid_options_are_refused_with_the_cli_message(tmp_path):
    jobs = JobManager(tmp_path, max_jobs=2)
    with pytest.raises(OptionsError) as refused:
        jobs.start("overfit", {"dropout": "1.5"})
    with pytest.raises(OptionsError) as cli:
        resolve("overfit", {"dropout": "1.5"})
    assert str(refused.value) == str(cli.value)
    with pytest.raises(OptionsError, match="unknown preset"):
        jobs.start("nope", {})
    with pytest.raises(JobError, match="invalid run name"):
        jobs.start("overfit", {}, name="../evil")
    assert not (tmp_path / ".jobs").exists() or not list((tmp_path / ".jobs").glob("j*.json"))


def test_start_find_run_limit_and_stop(tmp_path):
    jobs = FakeTrainerJobs(tmp_path, max_jobs=1)
    job = jobs.start("overfit", {"epochs": "3"}, name="fake")
    assert job.state in ("starting", "running") and job.overrides == {"epochs": "3"}
    job = _wait(lambda: (j := jobs.get(job.job_id)).run_id and j)
    assert job.state == "running" and job.run_id.endswith(job.run_id.split("-")[-1])
    with RunReader(tmp_path / job.run_id) as reader:
        assert reader.meta["job_id"] == job.job_id and reader.status() == "running"
    # Any worker (here: a second manager on the same folder) sees the job and enforces the limit.
    other = FakeTrainerJobs(tmp_path, max_jobs=1)
    assert [j.job_id for j in other.list()] == [job.job_id]
    with pytest.raises(JobError, match="already running"):
        other.start("overfit", {}, name="second")
    _wait(lambda: "step" in other.get(job.job_id).log_tail)
    stopping = other.stop(job.job_id)
    assert stopping.stop_requested is not None
    done = _wait(lambda: (j := jobs.get(job.job_id)).state == "stopped" and j)
    assert done.exit_code == 0 and not done.active
    with RunReader(tmp_path / job.run_id) as reader:
        assert reader.meta["status"] == "stopped"
    assert jobs.stop(job.job_id).state == "stopped"  # stopping a finished job is a no-op


def test_launch_and_stop_impl_refuse_in_read_only_mode(tmp_path):
    jobs = FakeTrainerJobs(tmp_path, max_jobs=1)
    result = launch_logic.launch_impl(jobs, read_only=True, preset="overfit", name="x", values={})
    assert not result["ok"] and "read-only" in result["message"]
    assert jobs.list() == []
    stopped = launch_logic.stop_impl(jobs, read_only=True, job_id="j20250101-000000-abcdef")
    assert not stopped["ok"] and "read-only" in stopped["message"]

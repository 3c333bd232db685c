"""`gradwatch ui` as a new user runs it: it binds its port before anything else (a port in use is a
one-line error, no demo run started, no process left behind), serves with gunicorn, and owns the
demo runs it started (stopping the dashboard stops them; `--keep-demo` leaves them training)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gradwatch.dashboard.jobs import JobManager

REPO = Path(__file__).resolve().parents[2]


def ui(logdir: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gradwatch", "ui", "--logdir", str(logdir), "--port", str(port), *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "GRADWATCH_CACHE_DIR": str(logdir.parent / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_everything(proc: subprocess.Popen, logdir: Path) -> None:
    """Whatever a failing test left: the ui's process group, then any job in its log directory."""
    if session_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    if logdir.exists():
        jobs = JobManager(logdir, 8)
        for job in jobs.list():
            if job.active and job.pid:
                for _ in range(2):
                    jobs.stop(job.job_id)


def test_a_port_in_use_is_one_line_and_leaves_nothing_behind(tmp_path):
    logdir = tmp_path / "logs"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = ui(logdir, port, "--demo")
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            stop_everything(proc, logdir)
    assert proc.returncode == 2
    assert err.strip().count("\n") == 0 and f"127.0.0.1:{port}" in err and "in use" in err, err
    assert "dashboard on" not in out  # it never claimed to be serving
    assert not session_alive(proc.pid)
    runs = [p for p in logdir.iterdir() if not p.name.startswith(".")] if logdir.exists() else []
    assert runs == [] and (not logdir.exists() or JobManager(logdir, 8).list() == [])  # no demo run started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status == 200 and "gunicorn" in (response.headers.get("Server") or "")
    except OSError:
        return False


@pytest.mark.slow
def test_stopping_the_dashboard_stops_its_demo_runs(tmp_path):
    logdir, port = tmp_path / "logs", free_port()
    proc = ui(logdir, port, "--demo", "--workers", "1")
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 90, "the dashboard (served by gunicorn)")
        jobs = JobManager(logdir, 8)
        started = wait_for(lambda: [j for j in jobs.list() if j.active and j.pid] if len(
            [j for j in jobs.list() if j.active and j.pid]) == 4 else None, 60, "4 demo runs")
        os.kill(proc.pid, signal.SIGTERM)  # what stopping a service does (Ctrl-C sends SIGINT: the same path)
        proc.wait(timeout=90)
        ended = {job.job_id: job for job in jobs.list()}
        assert all(not ended[job.job_id].active for job in started), [j.state for j in ended.values()]
        assert {ended[job.job_id].state for job in started} <= {"stopped", "finished"}
        for job in started:
            with pytest.raises(ProcessLookupError):
                os.kill(job.pid, 0)
        assert not session_alive(proc.pid)
    finally:
        stop_everything(proc, logdir)

"""Supervisor of one dashboard-launched training job: `python -m gradwatch.dashboard.jobrunner <job>.json`.

Runs in its own session (the dashboard spawns it with start_new_session), as leader of the process
group the trainer also belongs to. It starts the trainer, records pids and the run id in
`<job>.state.json` (the only writer of that file), turns a stop request into SIGINT -> SIGTERM ->
SIGKILL with grace periods, and records the exit code when the trainer ends. Imports neither dash
nor torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gradwatch.dashboard.jobs import KILL_GRACE_S, STOP_GRACE_S, _read_json, _write_json_atomic
from gradwatch.trainer.runlog.process import process_start_ticks

POLL_S = 0.25


class Supervisor:
    def __init__(self, request_path: Path):
        self.request = json.loads(request_path.read_text())
        self.job_id = self.request["job_id"]
        self.dir = request_path.parent
        self.state_path = self.dir / f"{self.job_id}.state.json"
        self.stop_path = self.dir / f"{self.job_id}.stop"
        self.log_path = self.dir / f"{self.job_id}.log"
        self.logdir = Path(self.request["logdir"])
        self.stop_at: float | None = None
        self.sent: set[str] = set()
        self.state: dict = {}
        self.child: subprocess.Popen | None = None

    def save(self, **changes) -> None:
        self.state.update(changes)
        _write_json_atomic(self.state_path, self.state)

    def _on_signal(self, signum, frame) -> None:
        # The group SIGINT reaches the trainer directly; we only start the escalation clock.
        if self.stop_at is None:
            self.stop_at = time.monotonic()
        if signum == signal.SIGTERM and self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGTERM)
            self.sent.add("SIGTERM")

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        started = time.time()
        with open(self.log_path, "ab", buffering=0) as log:
            try:
                self.child = subprocess.Popen(
                    self.request["command"], cwd=self.request.get("cwd"), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                log.write(f"cannot start the trainer: {exc}\n".encode())
                self.save(pid=os.getpid(), pid_start_ticks=process_start_ticks(os.getpid()), pgid=os.getpgid(0),
                          started=started, exit_code=127, ended=time.time(), run_id=None)
                return 127
            self.save(pid=os.getpid(), pid_start_ticks=process_start_ticks(os.getpid()), pgid=os.getpgid(0),
                      child_pid=self.child.pid, started=started, run_id=None)
            while True:
                code = self.child.poll()
                if code is not None:
                    break
                if self.state.get("run_id") is None:
                    run_id = self.find_run(started)
                    if run_id:
                        self.save(run_id=run_id)
                self.escalate()
                time.sleep(POLL_S)
        run_id = self.run_from_output() or self.state.get("run_id") or self.find_run(started)
        self.save(exit_code=code, ended=time.time(), run_id=run_id, run_status=self.run_status(run_id))
        return 0

    def escalate(self) -> None:
        if self.stop_at is None and self.stop_path.exists():
            # Stop asked but our group never got the signal (e.g. another host): deliver it.
            self.stop_at = time.monotonic()
            self.child.send_signal(signal.SIGINT)
        if self.stop_at is None:
            return
        waited = time.monotonic() - self.stop_at
        if waited > STOP_GRACE_S and "SIGTERM" not in self.sent:
            self.child.send_signal(signal.SIGTERM)
            self.sent.add("SIGTERM")
        elif waited > STOP_GRACE_S + KILL_GRACE_S and "SIGKILL" not in self.sent:
            self.child.kill()
            self.sent.add("SIGKILL")

    def find_run(self, started: float) -> str | None:
        """The run folder whose metadata carries this job id (named <time>-<name>-<hex>)."""
        name = self.request.get("name", "")
        try:
            candidates = [e for e in os.scandir(self.logdir)
                          if f"-{name}-" in e.name and e.is_dir() and e.stat().st_mtime >= started - 5]
        except OSError:
            return None
        from gradwatch.trainer.runlog import RunLogError, RunReader

        for entry in candidates:
            try:
                with RunReader(entry.path) as reader:
                    if reader.meta.get("job_id") == self.job_id:
                        return entry.name
            except RunLogError:
                continue
        return None

    def run_from_output(self) -> str | None:
        """The CLI prints the run folder as its last stdout line."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 4096))
                lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return None
        if not lines:
            return None
        candidate = Path(lines[-1].rsplit("\r", 1)[-1])
        if not candidate.is_absolute():
            candidate = Path(self.request.get("cwd") or ".") / candidate
        with contextlib.suppress(OSError):
            if candidate.is_dir() and candidate.resolve().parent == self.logdir.resolve():
                return candidate.name
        return None

    def run_status(self, run_id: str | None) -> str | None:
        if not run_id:
            return None
        from gradwatch.trainer.runlog import RunLogError, RunReader

        try:
            with RunReader(self.logdir / run_id) as reader:
                return reader.meta.get("status")
        except RunLogError:
            return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m gradwatch.dashboard.jobrunner <logdir>/.jobs/<job_id>.json", file=sys.stderr)
        return 2
    path = Path(argv[1])
    if _read_json(path) is None:
        print(f"cannot read job request {path}", file=sys.stderr)
        return 2
    return Supervisor(path).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Training jobs started from the dashboard: spawn, list, stop - with all state on disk.

A job is a trainer process (`gradwatch train ...`) run under a small supervisor
(`python -m gradwatch.dashboard.jobrunner`) in its own session, so it keeps running when the page closes,
when the gunicorn worker that started it is recycled, or when the dashboard restarts.

State lives in `<logdir>/.jobs/` (list_runs skips dot-folders), one writer per file so no two
processes ever rewrite the same file:

    <job_id>.json        the request (dashboard, once): preset, options, name, command, created
    <job_id>.state.json  the supervisor's view: pids, run id, exit code, ended (supervisor only)
    <job_id>.stop        a stop request (dashboard): the time it was asked
    <job_id>.log         the trainer's stdout and stderr

Any gunicorn worker can therefore list jobs and stop one: stop = SIGINT to the job's process group
(the trainer marks its run "stopped" and exits); the supervisor escalates to SIGTERM and SIGKILL if
the trainer has not exited after a grace period.

Nothing read from the logdir decides which process gets a signal: anyone who can write the logdir
could plant a state file naming another process. The identity of each supervisor the dashboard
spawned (pid and kernel start ticks, read from /proc right after the spawn) is kept by the dashboard
itself, in memory and in a private folder under its cache directory (shared by gunicorn workers),
and is checked against the kernel before every signal: same start ticks, still the leader of its own
process group and session, still this user's. The escalation clock is the dashboard's too.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gradwatch.trainer.options import OPTIONS_BY_NAME
from gradwatch.trainer.presets import get_preset, resolve
from gradwatch.trainer.runlog.process import process_alive, process_start_ticks

STOP_GRACE_S = 20.0  # SIGINT -> SIGTERM after this long
KILL_GRACE_S = 5.0  # SIGTERM -> SIGKILL after this long
JOB_ID_PATTERN = re.compile(r"^j[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


class JobError(Exception):
    """A job request that cannot be carried out; the message says why and what would work."""


@dataclass
class Job:
    job_id: str
    preset: str
    name: str
    overrides: dict
    created: float
    state: str  # starting | running | stopping | finished | failed | stopped | lost
    pid: int | None
    run_id: str | None
    exit_code: int | None
    ended: float | None
    stop_requested: float | None
    log_tail: str

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "stopping")

    def as_dict(self) -> dict:
        return dict(self.__dict__, active=self.active)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def option_arguments(overrides: dict) -> list[str]:
    """CLI arguments for option overrides: --batch-size 32 --dropout 0.5 --data none ..."""
    args = []
    for name, value in overrides.items():
        if name not in OPTIONS_BY_NAME:
            raise JobError(f"unknown option {name!r}")
        if value is None:
            text = "none"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        args += [f"--{name.replace('_', '-')}", text]
    return args


def _new_job_id() -> str:
    return time.strftime("j%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class JobManager:
    """Jobs of one log directory. Stateless: every call reads the files (any worker, any time)."""

    def __init__(self, logdir: str | os.PathLike, max_jobs: int = 4, python: str | None = None, *,
                 data_dirs: tuple[Path, ...] | None = None, max_model_bytes: int | None = None,
                 identity_dir: str | os.PathLike | None = None):
        """identity_dir: a private folder of the dashboard (under its cache directory) where the
        identities of the supervisors it spawned are kept for every worker; None keeps them in this
        process only."""
        from .config import DEFAULT_MAX_MODEL_MB
        from .launch_policy import default_data_dirs

        self.logdir = Path(logdir).resolve()
        self.dir = self.logdir / ".jobs"
        self.max_jobs = max_jobs
        self.python = python or sys.executable
        self.data_dirs = tuple(data_dirs) if data_dirs is not None else default_data_dirs(self.logdir)
        self.max_model_bytes = max_model_bytes or DEFAULT_MAX_MODEL_MB * 2**20
        self.identity_dir = Path(identity_dir) if identity_dir is not None else None
        self._identities: dict[str, dict] = {}

    # ---- paths ------------------------------------------------------------------------------
    def _path(self, job_id: str, suffix: str) -> Path:
        if not JOB_ID_PATTERN.match(job_id or ""):
            raise JobError(f"invalid job id {job_id!r}")
        return self.dir / f"{job_id}{suffix}"

    @contextlib.contextmanager
    def _lock(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- starting -----------------------------------------------------------------------------
    def validate(self, preset: str, overrides: dict) -> dict:
        """The full options (trainer.presets.resolve); OptionsError with the CLI's message if invalid."""
        get_preset(preset)
        return resolve(preset, overrides)

    def command(self, job_id: str, preset: str, name: str, overrides: dict) -> list[str]:
        return [self.python, "-m", "gradwatch", "train", "--preset", preset, "--logdir", str(self.logdir),
                "--name", name, "--job-id", job_id, *option_arguments(overrides)]

    def start(self, preset: str, overrides: dict | None = None, name: str | None = None) -> Job:
        """Validate, then spawn a supervised trainer. Raises OptionsError (invalid options, with the
        same message as the CLI) or JobError (too many running jobs, bad name, cannot spawn)."""
        overrides = {k: v for k, v in (overrides or {}).items()}
        options = self.validate(preset, overrides)
        from .launch_policy import LaunchRefused, check_data_path, check_model_memory

        try:
            data = check_data_path(options.get("data"), self.data_dirs)
            check_model_memory(options, self.max_model_bytes)
        except LaunchRefused as exc:
            raise JobError(str(exc)) from None
        if data is not None:
            overrides["data"] = data  # the checked, resolved path: what the trainer opens
        name = (name or preset).strip()
        from gradwatch.trainer.runlog.schema import RUN_NAME_PATTERN

        if not RUN_NAME_PATTERN.match(name):
            raise JobError(f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if importlib.util.find_spec("gradwatch.trainer.train") is None:
            raise JobError("the training side of gradwatch (gradwatch.trainer.train) cannot be imported here")
        with self._lock():
            running = [job for job in self.list() if job.active]
            if len(running) >= self.max_jobs:
                raise JobError(
                    f"{len(running)} runs are already running (the limit is {self.max_jobs}); stop one first"
                )
            job_id = _new_job_id()
            request = {
                "job_id": job_id, "preset": preset, "name": name, "overrides": overrides, "created": time.time(),
                "command": self.command(job_id, preset, name, overrides), "logdir": str(self.logdir),
                "cwd": os.getcwd(),  # relative --data paths mean what they mean to the dashboard
            }
            _write_json_atomic(self._path(job_id, ".json"), request)
            self._spawn(job_id)
        return self.get(job_id)

    def _spawn(self, job_id: str) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "gradwatch.dashboard.jobrunner", str(self._path(job_id, ".json"))],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise JobError(f"cannot start the trainer: {exc}") from exc
        # Who we started, read from the kernel now (it is our child: its pid cannot be reused yet).
        self._remember(job_id, {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid), "uid": os.getuid(),
                                "stop_requested": None})
        # Reap the supervisor when it exits (else it lingers as a zombie of this worker).
        threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self._path(job_id, ".state.json").exists():
            if proc.poll() is not None:
                raise JobError(f"the job supervisor exited at once (code {proc.returncode})")
            time.sleep(0.02)

    # ---- the identities of the processes this dashboard spawned --------------------------------
    def _identity_path(self, job_id: str) -> Path | None:
        if self.identity_dir is None:
            return None
        self._path(job_id, "")  # validates the id
        return self.identity_dir / f"{job_id}.json"

    def _remember(self, job_id: str, identity: dict) -> None:
        self._identities[job_id] = identity
        path = self._identity_path(job_id)
        if path is not None:
            from .config import ensure_private_dir

            ensure_private_dir(self.identity_dir)
            _write_json_atomic(path, identity)

    def _identity(self, job_id: str) -> dict | None:
        """The supervisor this dashboard spawned for `job_id`, or None (not ours, or forgotten)."""
        path = self._identity_path(job_id)
        if path is not None:
            found = _read_json(path)
            if isinstance(found, dict):
                return found
        return self._identities.get(job_id)

    @staticmethod
    def _verified_group(identity: dict | None) -> int | None:
        """The process group to signal, only if the kernel confirms it is the supervisor we spawned:
        same pid and start ticks, leader of its own process group and session, owned by us."""
        if not isinstance(identity, dict):
            return None
        pid, ticks = identity.get("pid"), identity.get("start_ticks")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or not isinstance(ticks, int):
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            owner = os.stat(f"/proc/{pid}").st_uid
        except (OSError, IndexError):
            return None
        state, pgrp, session, start = fields[0], int(fields[2]), int(fields[3]), int(fields[19])
        if state in ("Z", "X") or start != ticks or pgrp != pid or session != pid or owner != os.getuid():
            return None
        return pid

    # ---- reading ------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        request = _read_json(self._path(job_id, ".json"))
        if request is None:
            raise JobError(f"no job {job_id!r}")
        state = _read_json(self._path(job_id, ".state.json")) or {}
        stop = _read_json(self._path(job_id, ".stop"))
        return self._job(request, state, stop)

    def list(self, limit: int = 50) -> list[Job]:
        """Jobs newest first (active ones always included)."""
        if not self.dir.is_dir():
            return []
        ids = sorted((p.name[:-5] for p in self.dir.glob("j*.json") if not p.name.endswith(".state.json")),
                     reverse=True)
        jobs = []
        for job_id in ids:
            if not JOB_ID_PATTERN.match(job_id):
                continue
            try:
                job = self.get(job_id)
            except JobError:
                continue
            if job.active or len(jobs) < limit:
                jobs.append(job)
        return jobs

    def _job(self, request: dict, state: dict, stop: dict | None) -> Job:
        job_id = request["job_id"]
        stop_time = (stop or {}).get("requested")
        exit_code = state.get("exit_code")
        supervisor_alive = process_alive(state.get("pid"), state.get("pid_start_ticks"))
        if not state:
            created = float(request.get("created") or 0)
            status = "starting" if time.time() - created < 30 else "lost"
        elif "exit_code" in state and state.get("ended"):
            status = _exit_state(exit_code, stop_time is not None, state.get("run_status"))
        elif supervisor_alive:
            status = "stopping" if stop_time else "running"
        else:
            status = "lost"
        return Job(
            job_id=job_id, preset=request.get("preset", ""), name=request.get("name", ""),
            overrides=request.get("overrides") or {}, created=float(request.get("created") or 0), state=status,
            pid=state.get("child_pid"), run_id=state.get("run_id"), exit_code=exit_code, ended=state.get("ended"),
            stop_requested=stop_time, log_tail=self.log_tail(job_id),
        )

    def log_tail(self, job_id: str, lines: int = 3, max_bytes: int = 4096) -> str:
        path = self._path(job_id, ".log")
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - max_bytes))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        # Progress bars rewrite one line with carriage returns: keep the latest state of each line.
        cleaned = [line.rsplit("\r", 1)[-1].strip() for line in text.replace("\r\n", "\n").split("\n")]
        return "\n".join([line for line in cleaned if line][-lines:])

    def running_count(self) -> int:
        return sum(1 for job in self.list() if job.active)

    # ---- stopping -----------------------------------------------------------------------------
    def stop(self, job_id: str) -> Job:
        """Ask a job to stop: SIGINT to its process group (the trainer marks the run stopped).
        A second request after the grace period kills the group outright."""
        job = self.get(job_id)
        if not job.active:
            return job
        now = time.time()
        if not self._path(job_id, ".stop").exists():
            # The supervisor reads this request too (a job started by another dashboard, or one whose
            # identity was lost, is stopped by its own supervisor, which signals only its own child).
            _write_json_atomic(self._path(job_id, ".stop"), {"requested": now})
        identity = self._identity(job_id)
        group = self._verified_group(identity)
        if group is not None:
            asked = identity.get("stop_requested")
            if not isinstance(asked, (int, float)) or isinstance(asked, bool):
                self._remember(job_id, dict(identity, stop_requested=now))
                asked = now
            sig = signal.SIGINT
            if now - float(asked) > STOP_GRACE_S + KILL_GRACE_S:
                sig = signal.SIGKILL  # the supervisor did not manage: end the whole group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        return self.get(job_id)


def _exit_state(exit_code, stop_requested: bool, run_status: str | None) -> str:
    if run_status in ("finished", "failed", "stopped"):
        return run_status
    if stop_requested:
        return "stopped"
    return "finished" if exit_code == 0 else "failed"

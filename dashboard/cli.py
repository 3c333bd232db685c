"""The dashboard's commands of the `gradwatch` CLI: `ui` (serve the web app) and `export` (HTML report).

    gradwatch ui [--logdir DIR] [--host H] [--port P] [--read-only] [--demo] [--max-jobs N]
    gradwatch export RUN_DIR -o report.html

`gradwatch.cli` composes these with the trainer's commands; nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time

from gradwatch.trainer.cli import EXIT_OK, UsageError, check_run_dir

from .config import (
    DEFAULT_LOGDIR,
    DEFAULT_MAX_JOBS,
    ENV_ALLOWED_HOSTS,
    ENV_IMPORT_CACHE,
    ENV_LOGDIR,
    ENV_WRITE_TOKEN,
    Settings,
    SettingsError,
    ensure_private_dir,
    parse_hosts,
    validate_logdir,
)

DEMO_PRESETS = ("overfit", "regularized", "vanishing", "exploding")


def add_commands(commands) -> None:
    """Add `ui` and `export` to an argparse subparsers object (see gradwatch.cli)."""
    ui = commands.add_parser("ui", help="serve the dashboard (live runs, diagnosis, compare, launch)",
                             description="Serve the gradwatch dashboard.", allow_abbrev=False)
    ui.add_argument("--logdir", default=os.environ.get(ENV_LOGDIR, DEFAULT_LOGDIR),
                    help=f"directory of run folders, or a URL (file://, s3://, gs://, az://...) or a network "
                         f"filesystem, imported into --cache (default: ${ENV_LOGDIR} or {DEFAULT_LOGDIR})")
    ui.add_argument("--cache", default=None, metavar="DIR",
                    help=f"local folder a remote logdir is imported into (default: ${ENV_IMPORT_CACHE} or a "
                         "per-user cache folder)")
    ui.add_argument("--write-token", default=None, metavar="T",
                    help=f"accept runs pushed over HTTP with this token (default: ${ENV_WRITE_TOKEN}; unset: none)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    ui.add_argument("--read-only", action="store_true", help="refuse launching, stopping and notes (server-side)")
    ui.add_argument("--demo", action="store_true",
                    help=f"start the lesson's key presets ({', '.join(DEMO_PRESETS)}) in the background")
    ui.add_argument("--keep-demo", action="store_true",
                    help="leave the --demo runs training when the dashboard stops (default: they stop with it)")
    ui.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    ui.add_argument("--max-jobs", type=int, default=None,
                    help=f"most runs launched from the dashboard at once (default {DEFAULT_MAX_JOBS})")
    ui.add_argument("--allowed-hosts", default=None, metavar="HOSTS",
                    help="comma-separated host names the dashboard answers to (default: localhost, 127.0.0.1, "
                         f"::1, this machine's name and --host; ${ENV_ALLOWED_HOSTS}; * for any)")
    ui.add_argument("--debug", action="store_true",
                    help="Dash debug mode on Flask's development server (development only; default: gunicorn)")

    export = commands.add_parser("export", help="write a run's report as one self-contained HTML file",
                                 allow_abbrev=False)
    export.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (inside a log directory)")
    export.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the HTML file to write")
    export.add_argument("--cache", default=None, metavar="DIR", help="where a remote run (LOGDIR_URL/RUN_ID) is imported")


def start_demo(settings: Settings) -> list[str]:
    """Launch the demo presets through the job manager (skipping ones already running)."""
    from .config import job_identity_dir
    from .jobs import JobError, JobManager

    jobs = JobManager(settings.logdir, max(settings.max_jobs, len(DEMO_PRESETS)),
                      identity_dir=job_identity_dir(settings))
    running = {job.preset for job in jobs.list() if job.active}
    started = []
    for preset in DEMO_PRESETS:
        if preset in running:
            continue
        try:
            job = jobs.start(preset, {}, f"demo-{preset}")
        except (JobError, ValueError) as exc:
            print(f"demo: {preset} not started: {exc}", file=sys.stderr)
            continue
        started.append(job.job_id)
        print(f"demo: started {preset} (job {job.job_id})")
    return started


def bind_port(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is a one-line error
    with nothing started and nothing left behind (not a demo launched, then a server that cannot
    listen)."""
    try:
        return socket.create_server((host, port), reuse_port=False, backlog=2048)
    except OSError as exc:
        reason = "in use (another dashboard?)" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise UsageError(f"gradwatch ui: error: cannot listen on {host}:{port}: {reason}; "
                         f"pick another with --port") from None


def stop_demo(settings: Settings, job_ids: list[str], wait_s: float = 30.0) -> None:
    """Stop the demo runs this dashboard started (SIGINT: each run is marked stopped), waiting for
    them to end; a job still running after `wait_s` is killed."""
    from .config import job_identity_dir
    from .jobs import JobError, JobManager

    # The identities the demo's start recorded: Stop signals the supervisors this dashboard spawned.
    jobs = JobManager(settings.logdir, max(settings.max_jobs, len(DEMO_PRESETS)),
                      identity_dir=job_identity_dir(settings))
    for job_id in job_ids:
        with contextlib.suppress(JobError, OSError):
            jobs.stop(job_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(JobError, OSError):
            if not any(jobs.get(job_id).active for job_id in job_ids):
                break
        time.sleep(0.2)
    else:
        for job_id in job_ids:  # a second request past the grace period kills the group
            with contextlib.suppress(JobError, OSError):
                jobs.stop(job_id)
    if job_ids:
        print(f"demo: stopped {len(job_ids)} run(s) (--keep-demo leaves them training)", file=sys.stderr)


class GunicornServer:
    """gunicorn serving the dashboard on an already-bound socket; each worker builds its own app
    (after the fork: no SQLite or diskcache handle crosses a fork)."""

    def __init__(self, settings: Settings, listener: socket.socket, workers: int):
        from gunicorn.app.base import BaseApplication

        fd = listener.detach()  # gunicorn owns the descriptor from here on
        from . import gunicorn_conf

        # The Procfile's serving settings (gunicorn_conf: the worker that cuts off slow clients, its
        # threads and request limits), on this socket.
        options = {"bind": [f"fd://{fd}"], "workers": max(1, workers), "threads": gunicorn_conf.threads,
                   "worker_class": gunicorn_conf.worker_class, "timeout": gunicorn_conf.timeout,
                   "keepalive": gunicorn_conf.keepalive, "limit_request_line": gunicorn_conf.limit_request_line,
                   "limit_request_fields": gunicorn_conf.limit_request_fields,
                   "limit_request_field_size": gunicorn_conf.limit_request_field_size,
                   "loglevel": "warning", "accesslog": None, "preload_app": False}

        class Application(BaseApplication):
            def load_config(self):
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self):
                from .app import create_app

                return create_app(settings).server

        self.application = Application()

    def run(self) -> None:
        self.application.run()


def cmd_ui(args) -> int:
    try:
        network = {"allowed_hosts": parse_hosts(args.allowed_hosts), "bind_host": args.host,
                   "import_cache": args.cache, "write_token": args.write_token}
        settings = Settings.from_env(logdir=args.logdir, read_only=args.read_only or None, max_jobs=args.max_jobs,
                                     **network)
        if args.demo and settings.read_only:
            raise SettingsError("--demo launches runs and cannot be combined with --read-only")
        if args.demo and settings.max_jobs < len(DEMO_PRESETS):
            settings = Settings.from_env(logdir=args.logdir, max_jobs=len(DEMO_PRESETS), **network)
        if args.keep_demo and not args.demo:
            raise SettingsError("--keep-demo applies to --demo only")
        if not 0 <= args.port <= 65535:
            raise SettingsError(f"--port must be 0..65535, got {args.port}")
    except SettingsError as exc:
        raise UsageError(f"gradwatch ui: error: {exc}") from None
    listener = bind_port(args.host, args.port)
    try:  # a bad log directory or cache folder is one error now, before any demo run starts
        validate_logdir(settings.logdir)
        ensure_private_dir(settings.cache_dir)
    except (SettingsError, OSError) as exc:
        listener.close()
        raise UsageError(f"gradwatch ui: error: {exc}") from None
    if args.debug:
        from .app import create_app

        try:
            app = create_app(settings)
        except SettingsError as exc:
            listener.close()
            raise UsageError(f"gradwatch ui: error: {exc}") from None
        listener.close()  # Flask's development server binds the port itself
    else:
        server = GunicornServer(settings, listener, args.workers)
    started = start_demo(settings) if args.demo else []
    try:
        source = f"imported from {settings.source} into {settings.logdir}" if settings.source else \
            f"in {settings.logdir}"
        print(f"gradwatch dashboard on http://{args.host}:{args.port}/ (runs {source}"
              f"{', read-only' if settings.read_only else ''}"
              f"{', accepting pushed runs' if settings.write_token else ''})", flush=True)
        if args.debug:
            app.run(host=args.host, port=args.port, debug=True, use_reloader=False)
        else:
            server.run()
    finally:
        if started and not args.keep_demo:
            stop_demo(settings, started)
    return EXIT_OK


def cmd_export(args) -> int:
    run_dir = check_run_dir(args.run_dir, args.cache)
    from .export import export_run

    print(export_run(run_dir, args.output))
    return EXIT_OK


COMMANDS = {"ui": cmd_ui, "export": cmd_export}

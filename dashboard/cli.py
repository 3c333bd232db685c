"""The dashboard's commands of the `gradwatch` CLI: `ui` (serve the web app) and `export` (HTML report).

    gradwatch ui [--logdir DIR] [--host H] [--port P] [--read-only] [--demo] [--max-jobs N]
    gradwatch export RUN_DIR -o report.html

`gradwatch.cli` composes these with the trainer's commands; nothing here imports torch.
"""

from __future__ import annotations

import os
import sys

from gradwatch.trainer.cli import EXIT_OK, UsageError, check_run_dir

from .config import (
    DEFAULT_LOGDIR,
    DEFAULT_MAX_JOBS,
    ENV_ALLOWED_HOSTS,
    ENV_LOGDIR,
    Settings,
    SettingsError,
    parse_hosts,
)

DEMO_PRESETS = ("overfit", "regularized", "vanishing", "exploding")


def add_commands(commands) -> None:
    """Add `ui` and `export` to an argparse subparsers object (see gradwatch.cli)."""
    ui = commands.add_parser("ui", help="serve the dashboard (live runs, diagnosis, compare, launch)",
                             description="Serve the gradwatch dashboard.", allow_abbrev=False)
    ui.add_argument("--logdir", default=os.environ.get(ENV_LOGDIR, DEFAULT_LOGDIR),
                    help=f"directory of run folders (default: ${ENV_LOGDIR} or {DEFAULT_LOGDIR})")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    ui.add_argument("--read-only", action="store_true", help="refuse launching, stopping and notes (server-side)")
    ui.add_argument("--demo", action="store_true",
                    help=f"start the lesson's key presets ({', '.join(DEMO_PRESETS)}) in the background")
    ui.add_argument("--max-jobs", type=int, default=None,
                    help=f"most runs launched from the dashboard at once (default {DEFAULT_MAX_JOBS})")
    ui.add_argument("--allowed-hosts", default=None, metavar="HOSTS",
                    help="comma-separated host names the dashboard answers to (default: localhost, 127.0.0.1, "
                         f"::1, this machine's name and --host; ${ENV_ALLOWED_HOSTS}; * for any)")
    ui.add_argument("--debug", action="store_true", help="Dash debug mode (development only)")

    export = commands.add_parser("export", help="write a run's report as one self-contained HTML file",
                                 allow_abbrev=False)
    export.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (inside a log directory)")
    export.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the HTML file to write")


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


def cmd_ui(args) -> int:
    try:
        network = {"allowed_hosts": parse_hosts(args.allowed_hosts), "bind_host": args.host}
        settings = Settings.from_env(logdir=args.logdir, read_only=args.read_only or None, max_jobs=args.max_jobs,
                                     **network)
        if args.demo and settings.read_only:
            raise SettingsError("--demo launches runs and cannot be combined with --read-only")
        if args.demo and settings.max_jobs < len(DEMO_PRESETS):
            settings = Settings.from_env(logdir=args.logdir, max_jobs=len(DEMO_PRESETS), **network)
        if not 0 <= args.port <= 65535:
            raise SettingsError(f"--port must be 0..65535, got {args.port}")
    except SettingsError as exc:
        raise UsageError(f"gradwatch ui: error: {exc}") from None
    from .app import create_app

    try:
        app = create_app(settings)  # checks the log directory and the cache folder
    except SettingsError as exc:
        raise UsageError(f"gradwatch ui: error: {exc}") from None
    if args.demo:
        start_demo(settings)
    print(f"gradwatch dashboard on http://{args.host}:{args.port}/ (runs in {settings.logdir}"
          f"{', read-only' if settings.read_only else ''})", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)
    return EXIT_OK


def cmd_export(args) -> int:
    check_run_dir(args.run_dir)
    from .export import export_run

    print(export_run(args.run_dir, args.output))
    return EXIT_OK


COMMANDS = {"ui": cmd_ui, "export": cmd_export}

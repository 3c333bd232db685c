"""`python -m dashboard`: serve the dashboard, or export a run's report.

    python -m dashboard [--logdir DIR] [--host H] [--port P] [--read-only] [--demo] [--max-jobs N]
    python -m dashboard export RUN_DIR [-o report.html]
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import DEFAULT_LOGDIR, DEFAULT_MAX_JOBS, ENV_LOGDIR, Settings, SettingsError

DEMO_PRESETS = ("overfit", "regularized", "vanishing", "exploding")


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard export",
                                     description="Write a run's report as one self-contained HTML file.")
    parser.add_argument("run_dir", help="the run folder (inside a log directory)")
    parser.add_argument("-o", "--output", help="output file (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    from trainer.runlog import RunLogError

    from .export import export_run

    try:
        path = export_run(args.run_dir, args.output)
    except RunLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description="Serve the gradwatch dashboard.")
    parser.add_argument("--logdir", default=os.environ.get(ENV_LOGDIR, DEFAULT_LOGDIR),
                        help=f"directory of run folders (default: ${ENV_LOGDIR} or {DEFAULT_LOGDIR})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--read-only", action="store_true",
                        help="refuse launching, stopping and notes (server-side)")
    parser.add_argument("--demo", action="store_true",
                        help=f"start the lesson's key presets ({', '.join(DEMO_PRESETS)}) in the background")
    parser.add_argument("--max-jobs", type=int, default=None,
                        help=f"most runs launched from the dashboard at once (default {DEFAULT_MAX_JOBS})")
    parser.add_argument("--debug", action="store_true", help="Dash debug mode (development only)")
    return parser


def start_demo(settings: Settings) -> list[str]:
    """Launch the demo presets through the job manager (skipping ones already running)."""
    from .jobs import JobError, JobManager

    jobs = JobManager(settings.logdir, max(settings.max_jobs, len(DEMO_PRESETS)))
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    args = serve_parser().parse_args(argv)
    try:
        settings = Settings.from_env(logdir=args.logdir, read_only=args.read_only or None, max_jobs=args.max_jobs)
        if args.demo and settings.read_only:
            raise SettingsError("--demo launches runs and cannot be combined with --read-only")
        if args.demo and settings.max_jobs < len(DEMO_PRESETS):
            settings = Settings.from_env(logdir=args.logdir, max_jobs=len(DEMO_PRESETS))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .app import create_app

    app = create_app(settings)
    if args.demo:
        start_demo(settings)
    print(f"gradwatch dashboard on http://{args.host}:{args.port}/ (runs in {settings.logdir}"
          f"{', read-only' if settings.read_only else ''})")
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A torch-free stand-in for `gradwatch train` in the job tests: a live synthetic run, stopped by signals.

    python -m tests.dashboard.fake_trainer --logdir L --name N --job-id J [--steps N]
"""

from __future__ import annotations

import os
import time

from gradwatch.testing import LiveRun


def fake_trainer_main(argv: list[str] | None = None) -> int:
    """A stand-in for `gradwatch train` in job tests (no torch): writes a live run with the
    given name and job id, prints the run folder last, and marks the run stopped on SIGINT/SIGTERM.

        python -m tests.dashboard.fake_trainer --logdir L --name N --job-id J [--steps N]
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--job-id", default=None)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=0.05)
    args, _ = parser.parse_known_args(argv)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.name}-{os.getpid() % 10000:04d}"
    live = LiveRun(args.logdir, args.name, run_id=run_id, layers=2, step_interval_s=args.interval)
    live.writer.set_meta_now(job_id=args.job_id)
    status = "finished"
    try:
        for _ in range(args.steps):
            live.write_step()
            time.sleep(args.interval)
            print(f"step {live.step}", flush=True)
    except KeyboardInterrupt:
        status = "stopped"
    live.stop(status)
    print(live.path, flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(fake_trainer_main(sys.argv[1:]))

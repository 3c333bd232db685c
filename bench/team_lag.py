"""Team logdir, end to end: N concurrent live runs (separate processes, separate spools) publish segments
into one logdir; one importer (as a dashboard host runs it) imports them into a local cache. Prints the
lag from each record's log time to its visibility in the cache (p50/p95) and the importer's CPU time per
second of wall time.

    python bench/team_lag.py [--runs 20] [--seconds 60] [--logdir file:///shared/path | s3://bucket/x]
    python bench/team_lag.py --smoke          # 3 runs for 6 s: proves the bench works, no figures

The writers are scalar-only Runs (no torch import: 20 trainers on a small machine would measure the
machine, not the transport); each logs `loss` every --step-interval seconds. Target (issue 22): p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR, REPO, percentile  # noqa: E402

WRITER = """
import sys, time
from gradwatch.trainer.run import Run
logdir, name, seconds, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
with Run(logdir, name=name) as run:
    print(run.id, flush=True)
    end, step = time.time() + seconds, 0
    while time.time() < end:
        run.log(step, loss=1.0 / (step + 1))
        step += 1
        time.sleep(interval)
"""


class TimedImporter:
    """The dashboard's importer loop, with the CPU time of its own thread counted."""

    def __init__(self, store, cache: Path, interval_s: float):
        from gradwatch.trainer.runlog.importer import Importer

        self.importer = Importer(store, cache)
        self.interval_s = interval_s
        self.cpu_s = 0.0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            before = time.thread_time()
            self.importer.poll()
            self.cpu_s += time.thread_time() - before
            self.polls += 1
            self._stop.wait(self.interval_s)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()


def new_walls(cache: Path, seen: dict) -> list[float]:
    walls = []
    for run_id in (n for n in os.listdir(cache) if not n.startswith(".")):
        db = cache / run_id / "run.sqlite"
        if not db.is_file():
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT seq, wall FROM scalars WHERE name = 'loss' AND seq > ? ORDER BY seq",
                                (seen.get(run_id, 0),)).fetchall()
        finally:
            conn.close()
        if rows:
            seen[run_id] = rows[-1][0]
            walls += [w for _, w in rows]
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step-interval", type=float, default=0.1)
    parser.add_argument("--poll", type=float, default=1.0, help="importer poll interval (the dashboard's default)")
    parser.add_argument("--logdir", default=None, help="a URL (default: a fresh file:// folder)")
    parser.add_argument("--smoke", action="store_true", help="3 runs, 6 s: check the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.seconds = 3, 6.0
    from gradwatch.trainer.runlog import stores
    from gradwatch.trainer.runlog.importer import DEFAULT_POLL_S
    from gradwatch.trainer.runlog.publisher import PUBLISH_INTERVAL_S

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-team-lag-", dir=BENCH_DIR))
    logdir = args.logdir or (tmp / "shared").as_uri()
    cache = tmp / "cache"
    script = tmp / "writer.py"
    script.write_text(WRITER)
    importer = TimedImporter(stores.open_store(stores.classify(logdir)), cache, args.poll).start()
    procs = []
    for i in range(args.runs):
        env = dict(os.environ, GRADWATCH_SPOOL=str(tmp / f"spool-{i}"), PYTHONPATH=str(REPO.parent))
        procs.append(subprocess.Popen([sys.executable, str(script), logdir, f"live-{i:02d}", str(args.seconds),
                                       str(args.step_interval)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True))
    seen, lags = {}, []
    started = time.time()
    cpu_start = importer.cpu_s
    while any(p.poll() is None for p in procs):
        now = time.time()
        lags += [now - w for w in new_walls(cache, seen)]
        time.sleep(0.1)
    wall = time.time() - started
    cpu = importer.cpu_s - cpu_start
    importer.stop()
    result = {
        "bench": "team_lag", "runs": args.runs, "seconds": args.seconds, "step_interval_s": args.step_interval,
        "logdir": "file:// (temp)" if args.logdir is None else args.logdir,
        "publish_interval_s": PUBLISH_INTERVAL_S, "importer_poll_s": args.poll or DEFAULT_POLL_S,
        "records_seen_live": len(lags), "lag_p50_s": round(percentile(lags, 50), 3),
        "lag_p95_s": round(percentile(lags, 95), 3), "lag_max_s": round(max(lags), 3) if lags else None,
        "importer_cpu_s_per_s": round(cpu / wall, 4), "importer_polls": importer.polls, "target_p95_s": 5.0,
    }
    print(json.dumps(result, indent=2))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""20 and 50 viewers polling a live run at 1 Hz while it trains: callback latency, the server's and the
simulated viewers' CPU per poll, and the trainer's step time with and without them.

A real training process (torch, the Run API, statistics every 10 steps, the writer's default 0.2 s
flush) trains for 4 x WINDOW seconds; the viewers are on during the 2nd and 4th windows. At the start
of a busy window one tab opens the Run page (every live chart drawn once over HTTP); each simulated
viewer starts from that page's live-chart stores, then sends the live poll callback every second at
its own random phase with every live chart's store, as the page does, and applies each answer as the
page's clientside applier does (so each holds its own cursors). Redraws a poll asks for are not made:
the bench models the poll callback, which is what the targets are about. Step times in busy windows
are compared with those in quiet windows of the same run (same process, same warm-up).

What runs where: the trainer, 2 gunicorn workers x 4 threads and the viewers' HTTP clients (threads of
this process, plain http.client, ~1-2 ms CPU per poll) share this machine's cores. A real viewer's
browser runs elsewhere; its CPU here is counted anyway (reported separately as
viewer_client_cpu_ms_per_poll), and the gunicorn workers' own CPU per poll (server_cpu_ms_per_poll,
from /proc, above the quiet windows' rate) is the number the server's capacity follows.

    python bench/dashboard_viewers.py [--viewers 20,50] [--window 10]
Targets: poll callback p95 < 300 ms at 50 viewers; step time with 20 viewers within 10% of none.
Each viewer count gets its own trainer and server, its quiet and busy windows interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR, REPO, DashClient, Gunicorn, percentile  # noqa: E402


def train_main(logdir: str, seconds: float, every: int) -> None:
    """The trainer: prints one JSON line of (wall, step seconds) pairs when done."""
    import torch
    from torch import nn

    from gradwatch.trainer import Run

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256),
                          nn.ReLU(), nn.Linear(256, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(128, 512), torch.randint(0, 2, (128,))
    samples = []
    with Run(logdir, "viewers", config={"preset": "bench", "model": "mlp", "every": every}) as run:
        run.watch(model, every=every)
        print("ready", flush=True)
        start = time.time()
        step = 0
        while time.time() - start < seconds:
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            run.log(step, train_loss=loss.item(), lr=0.01)
            samples.append((time.time(), time.perf_counter() - t0))
            step += 1
    print(json.dumps(samples), flush=True)


def worker_cpu_s(master_pid: int) -> float | None:
    """User+system CPU seconds of the gunicorn master's worker processes so far (Linux /proc), or None."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:  # fields after "(comm)": state, ppid, ..., utime (12), stime (13)
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def open_tab(base_url: str, run_id: str, info: dict) -> dict:
    """What one browser tab holds after opening the Run page: every live chart drawn once, and its
    channel store (cursor, revision, trace keys). {live store id: store}."""
    from gradwatch.dashboard import ids
    from gradwatch.dashboard.views.run_charts import LIVE_CHARTS

    client = DashClient(base_url)
    values = {ids.RUN_ID: run_id, ids.SEL_RANGE: {"from": None, "to": None}, "run-info": info,
              ids.SEL_LAYER: {"layer": info["param_layers"][0], "param": "weight"},
              ids.SEL_STEP: {"step": None, "follow": True}, ids.SEL_ROWS: {"filter": "", "collapse": None},
              ids.FLAGS_DATA: [], ids.NOTES_DATA: [], ids.FIRST_PAINT_STAGE: 1,
              ids.RUN_SHAPE: {"layers": len(info["layers"]), "activations": 0},
              **{ids.refresh_store(chart.id): 0 for chart in LIVE_CHARTS}}
    live = {}
    for chart in LIVE_CHARTS:
        _, _, body = client.call(f"..{chart.id}.figure...", values, f"{ids.SEL_RANGE}.data")
        live[ids.live_store(chart.id)] = body["response"][ids.live_store(chart.id)]["data"]
    return live


class Viewer(threading.Thread):
    """One browser tab on the Run page, opened at the window's start (`live`: the live charts' stores
    it got then): the live poll callback every `period` seconds with every live chart's store, as the
    page sends it, and each answer applied as the page's clientside applier does (cursor advances only
    on a payload for its own cursor and revision). Redraws the poll asks for are not made: this models
    the poll callback, what the targets are about."""

    def __init__(self, base_url: str, deps: list, run_id: str, live: dict, period: float,
                 stop: threading.Event):
        super().__init__(daemon=True)
        self.client = DashClient(base_url, deps)
        self.run_id, self.period, self.stop = run_id, period, stop
        self.live = json.loads(json.dumps(live))  # a tab's own copy
        self.latencies: list[float] = []
        self.bytes: list[int] = []
        self.polls = 0
        self.errors = 0

    def run(self) -> None:
        from gradwatch.dashboard import ids

        # Viewers poll at random moments within a second, not in lockstep.
        self.stop.wait(random.random() * self.period)
        meta = {"status": "running", "running": True, "ticks": 0}
        tick = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            tick += 1
            state = {ids.POLL_TICK: tick, ids.RUN_ID: self.run_id, ids.LIVE_META: meta, **self.live,
                     ids.SEL_STEP: {"step": None, "follow": True}, ids.RUN_STEP_SLIDER: 0}
            try:
                seconds, size, body = self.client.call(f"..{ids.DELTA}.data...", state, f"{ids.POLL_TICK}.data")
            except Exception:
                self.errors += 1
                body, seconds, size = None, 0.0, 0
            self.polls += 1
            if body and tick > 1:  # the first poll of a tab catches up with its initial charts
                self.latencies.append(seconds)
                self.bytes.append(size)
            if body:
                response = body["response"]
                delta = response.get(ids.DELTA, {}).get("data") or {}
                meta = response.get(ids.LIVE_META, {}).get("data", meta)
                for chart, payload in delta.items():  # assets/gradwatch.js's applyDelta rule
                    key = ids.live_store(chart)
                    held = self.live.get(key)
                    if held and isinstance(payload, dict) and payload.get("base") == held.get("cursor") \
                            and payload.get("rev") == held.get("rev"):
                        self.live[key] = dict(held, cursor=payload["to"],
                                              appended=held.get("appended", 0) + payload.get("added", 0))
            next_at += self.period
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="20,50", help="comma-separated viewer counts (default 20,50)")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    for count in [int(v) for v in str(args.viewers).split(",") if v.strip()]:
        measure(argparse.Namespace(viewers=count, window=args.window, every=args.every))
    return 0


def measure(args) -> dict:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-viewers-", dir=BENCH_DIR))
    logdir = tmp / "logs"
    logdir.mkdir()
    server = Gunicorn(logdir, tmp / "cache")
    trainer = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "train", str(logdir), str(4 * args.window), str(args.every)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert trainer.stdout.readline().strip() == "ready"
        t_start = time.time()
        from gradwatch.dashboard.data import RunStore

        run_id = next(p.name for p in logdir.iterdir() if not p.name.startswith("."))
        time.sleep(1.0)
        info = RunStore(logdir, None).run_info(run_id)
        info = {k: info[k] for k in ("run_id", "layers", "param_layers", "tensors", "first_step", "last_logged_step")}
        deps = DashClient(server.url).deps
        windows, viewers, cpu = [], [], []
        for index in range(4):
            begin = t_start + index * args.window
            time.sleep(max(0.0, begin - time.time()))
            stop = threading.Event()
            if index % 2 == 1:
                live = open_tab(server.url, run_id, info)  # the tabs open together: one page load's stores
            # CPU is counted from here: the polls' cost, not the page load's.
            cpu_start = (worker_cpu_s(server.proc.pid), time.process_time(), time.time())
            if index % 2 == 1:
                group = [Viewer(server.url, deps, run_id, live, 1.0, stop) for _ in range(args.viewers)]
                for viewer in group:
                    viewer.start()
                viewers += group
            time.sleep(max(0.0, begin + args.window - time.time()))
            stop.set()
            windows.append((begin, begin + args.window, index % 2 == 1))
            for viewer in viewers:
                viewer.join(timeout=30)  # their last polls are counted in their window
            cpu_end = (worker_cpu_s(server.proc.pid), time.process_time(), time.time())
            server_s = None if cpu_start[0] is None or cpu_end[0] is None else cpu_end[0] - cpu_start[0]
            cpu.append({"viewers": index % 2 == 1, "server_s": server_s, "clients_s": cpu_end[1] - cpu_start[1],
                        "seconds": cpu_end[2] - cpu_start[2]})
        samples = json.loads(trainer.stdout.readline())
        trainer.wait(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
        server.stop()
    margin = 1.5  # ignore the ramp at each window edge
    quiet, busy = [], []
    for wall, seconds in samples:
        for begin, end, with_viewers in windows:
            if begin + margin <= wall < end - 0.2:
                (busy if with_viewers else quiet).append(seconds)
    polls = sum(v.polls for v in viewers)

    def per_poll_ms(field):  # CPU of the busy windows above the quiet windows' rate, per poll
        if any(w[field] is None for w in cpu) or not polls:
            return None
        quiet_rate = sum(w[field] for w in cpu if not w["viewers"]) / sum(w["seconds"] for w in cpu if not w["viewers"])
        busy = [w for w in cpu if w["viewers"]]
        excess = sum(w[field] for w in busy) - quiet_rate * sum(w["seconds"] for w in busy)
        return round(1000 * excess / polls, 2)

    latencies = [s for v in viewers for s in v.latencies]
    sizes = [b for v in viewers for b in v.bytes]
    shutil.rmtree(tmp, ignore_errors=True)
    quiet_median, busy_median = percentile(quiet, 50), percentile(busy, 50)
    result = {
        "bench": "dashboard_viewers", "viewers": args.viewers, "poll_hz": 1.0, "stats_every": args.every,
        "cpu_count": os.cpu_count(), "polls": len(latencies), "poll_errors": sum(v.errors for v in viewers),
        "poll_p50_ms": round(percentile(latencies, 50) * 1000, 1), "poll_p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "poll_bytes_p50": int(percentile(sizes, 50)) if sizes else None,
        "step_ms_no_viewers": round(quiet_median * 1000, 3), "step_ms_with_viewers": round(busy_median * 1000, 3),
        "step_time_ratio": round(busy_median / quiet_median, 3), "steps_compared": [len(quiet), len(busy)],
        "server_cpu_ms_per_poll": per_poll_ms("server_s"), "viewer_client_cpu_ms_per_poll": per_poll_ms("clients_s"),
        "cpu_s_by_window": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in w.items()} for w in cpu],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "targets": {"poll_p95_ms": 300, "step_time_ratio": 1.10},
    }
    print(f"{args.viewers} viewers at 1 Hz: poll p50 {result['poll_p50_ms']} ms, p95 {result['poll_p95_ms']} ms "
          f"({result['polls']} polls, {result['poll_errors']} errors); training step median "
          f"{result['step_ms_no_viewers']} ms without viewers, {result['step_ms_with_viewers']} ms with "
          f"(x{result['step_time_ratio']}) on {os.cpu_count()} CPUs; CPU per poll: server "
          f"{result['server_cpu_ms_per_poll']} ms, simulated viewer's client {result['viewer_client_cpu_ms_per_poll']} ms; "
          f"load average {result['load_average']}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        train_main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())

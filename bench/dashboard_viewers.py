"""20 and 50 viewers polling a live run at 1 Hz while it trains: callback latency, and the trainer's
step time with and without them.

A real training process (torch, the Run API, statistics every 10 steps) trains for 4 x WINDOW seconds;
20 simulated viewers (HTTP clients that behave like the Run page: they draw the charts once, then send the
live poll callback every second with their own cursors) are on during the 2nd and 4th windows. Step times
in viewer windows are compared with those in quiet windows of the same run (same process, same warm-up).

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


class Viewer(threading.Thread):
    """One browser tab on the Run page: initial charts, then the live poll every `period` seconds."""

    def __init__(self, base_url: str, run_id: str, info: dict, period: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.client = DashClient(base_url)
        self.run_id, self.info, self.period, self.stop = run_id, info, period, stop
        self.latencies: list[float] = []
        self.bytes: list[int] = []
        self.errors = 0

    def run(self) -> None:
        # Viewers arrive at random moments within a second, not in lockstep.
        self.stop.wait(random.random())
        values = {"run-id": self.run_id, "sel-range": {"from": None, "to": None}, "refresh-fig-loss": 0,
                  "refresh-fig-grad-time": 0, "run-info": self.info,
                  "sel-layer": {"layer": self.info["param_layers"][0], "param": "weight"}}
        live = {}
        for chart in ("fig-loss", "fig-grad-time"):  # the page's live line charts, drawn once
            for _attempt in range(3):  # a kept-alive connection the server closed: count it, try again
                try:
                    _, _, body = self.client.call(f"..{chart}.figure...", values, "sel-range.data")
                    break
                except Exception:
                    self.errors += 1
            else:
                return
            live[f"live-{chart}"] = body["response"][f"live-{chart}"]["data"]
        meta = {"status": "running", "running": True, "ticks": 0}
        tick = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            tick += 1
            state = {"poll-tick": tick, "run-id": self.run_id, "live-meta": meta, **live,
                     "sel-step": {"step": None, "follow": True}, "run-step-slider": 0}
            try:
                seconds, size, body = self.client.call("..delta.data...", state, "poll-tick.data")
            except Exception:
                self.errors += 1
                body, seconds, size = None, 0.0, 0
            if body and tick > 2:  # the first polls of a tab catch up with its initial charts
                self.latencies.append(seconds)
                self.bytes.append(size)
            if body:
                response = body["response"]
                delta = response.get("delta", {}).get("data") or {}
                meta = response.get("live-meta", {}).get("data", meta)
                for chart, payload in delta.items():  # what the page's clientside applier does
                    if f"live-{chart}" in live and isinstance(payload, dict) and "to" in payload:
                        live[f"live-{chart}"] = dict(live[f"live-{chart}"], cursor=payload["to"])
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
        windows = []
        viewers: list[Viewer] = []
        for index in range(4):
            begin = t_start + index * args.window
            time.sleep(max(0.0, begin - time.time()))
            stop = threading.Event()
            if index % 2 == 1:
                group = [Viewer(server.url, run_id, info, 1.0, stop) for _ in range(args.viewers)]
                for viewer in group:
                    viewer.start()
                viewers += group
            time.sleep(max(0.0, begin + args.window - time.time()))
            stop.set()
            windows.append((begin, begin + args.window, index % 2 == 1))
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
        "targets": {"poll_p95_ms": 300, "step_time_ratio": 1.10},
    }
    print(f"{args.viewers} viewers at 1 Hz: poll p50 {result['poll_p50_ms']} ms, p95 {result['poll_p95_ms']} ms "
          f"({result['polls']} polls, {result['poll_errors']} errors); training step median "
          f"{result['step_ms_no_viewers']} ms without viewers, {result['step_ms_with_viewers']} ms with "
          f"(x{result['step_time_ratio']}) on {os.cpu_count()} CPUs")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        train_main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())

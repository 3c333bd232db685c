"""20 and 50 viewers watching a live run at 1 Hz while it trains, redrawing as browsers do: the poll
callback's latency, the latency of each tick with the redraws its answer leads to, and the training
process's CPU time per step with and without them.

A real training process (torch, the Run API, statistics every 10 steps, the writer's default 0.2 s
flush) trains for 4 x WINDOW seconds; the viewers are on during the 2nd and 4th windows. At the start
of a busy window one tab opens the Run page (every chart drawn once over HTTP); each simulated viewer
starts from that tab's state, then sends the live poll callback every second at its own random phase
and handles each answer as the browser's dash-renderer and the page's clientside code do (Tab): the
delta extends the figures (Plotly's extendTraces on the figure dicts), and every server callback the
answer triggers (a chart redraw asked for by a refresh store, the flags panel and the charts that
take its flags, the step slider's view update) is requested and its answer applied in turn. So each
viewer costs the server what a browser tab costs it.

Training slowdown is the training process's own CPU time per step (time.process_time: the training
thread and the run writer's thread) in busy windows over quiet windows of the same run: what the
viewers make the trainer do, not how the machine's cores are shared out (the wall-time ratio is
reported too, and on a machine where trainer, server and viewers share two cores it mostly measures
the sharing).

What runs where: the trainer, the gunicorn workers (gunicorn_conf, as the Procfile serves) and the
viewers' HTTP clients (threads of this process, plain http.client) share this machine's cores. A real
viewer's browser runs elsewhere; the CPU its simulation spends here is reported separately
(viewer_client_cpu_ms_per_poll; client_apply_cpu_ms_per_poll is the part applying answers to figures),
and the gunicorn workers' own CPU per poll (server_cpu_ms_per_poll, from /proc, above the quiet windows'
rate) is the number the server's capacity follows.

    python bench/dashboard_viewers.py [--viewers 20,50] [--window 10]
    python bench/dashboard_viewers.py --viewers 2 --window 4     # a smoke run: it works, not figures
Targets: poll callback p95 < 300 ms at 50 viewers; training step CPU time with 20 viewers within 10%
of none. Each viewer count gets its own trainer and server, its quiet and busy windows interleaved.
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
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR, REPO, DashClient, Gunicorn, percentile  # noqa: E402


def train_main(logdir: str, seconds: float, every: int) -> None:
    """The trainer: prints one JSON line of (wall, step seconds, step CPU seconds) when done."""
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
            t0, c0 = time.perf_counter(), time.process_time()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            run.log(step, train_loss=loss.item(), lr=0.01)
            # Wall time and this process's CPU time (training thread and writer thread) per step: the
            # CPU time is what the dashboard's readers can add to training, whatever the machine's load.
            samples.append((time.time(), time.perf_counter() - t0, time.process_time() - c0))
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


class Tab:
    """What one browser tab holds on the Run page and what its dash-renderer does with an answer.

    `values` are the props the page's callbacks read ({(id, prop): value}), `figures` every chart's
    figure. `answer()` applies a callback's response the way the renderer does: each output prop is
    set, extendData is appended to the figure's traces (Plotly's extendTraces, with its trimming),
    and every server callback that has a set prop among its Inputs is then requested, whether or not
    the value changed (the renderer does not compare), with their answers applied in turn. The delta
    store is applied by the page's clientside applyDelta rule (assets/gradwatch.js). So a tab costs
    the server what a browser costs it: the poll and every redraw the poll's answer leads to."""

    def __init__(self, client: DashClient, values: dict, figures: dict | None = None):
        self.client = client
        self.values = values
        self.figures = figures if figures is not None else {}
        self.server_callbacks = [d for d in client.deps if not d.get("clientside_function")]
        self.requests: list[tuple[str, float]] = []  # (output, seconds) of every follow-up request
        self.client_cpu_s = 0.0  # applying answers to figure state, as the browser would (not the server's)

    def request(self, spec: dict, changed: list[str]) -> tuple[float, int, dict | None]:
        def entry(item):
            if item["id"].startswith("{"):  # a wildcard (flag cards): none on the page in this bench
                return []
            return dict(item, value=self.values.get((item["id"], item["property"])))

        outputs = []
        for part in spec["output"].strip(".").split("..."):
            ident, prop = part.rsplit(".", 1)
            outputs.append({"id": ident, "property": prop})
        body = {"output": spec["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
                "inputs": [entry(i) for i in spec["inputs"]], "state": [entry(s) for s in spec.get("state", [])],
                "changedPropIds": changed}
        start = time.perf_counter()
        status, content = self.client._request("POST", "/_dash-update-component", json.dumps(body).encode())
        seconds = time.perf_counter() - start
        if status == 204:
            return seconds, 0, None
        if status != 200:
            raise RuntimeError(f"{spec['output'][:60]!r} answered HTTP {status}: {content[:200]!r}")
        return seconds, len(content), json.loads(content)

    def answer(self, body: dict | None, rounds: int = 4) -> None:
        """Apply one answer and request what it triggers (breadth-first, as the renderer queues them)."""
        changed = self._apply(body)
        for _ in range(rounds):
            if not changed:
                return
            triggered = [(spec, [f"{i['id']}.{i['property']}" for i in spec["inputs"]
                                 if (i["id"], i["property"]) in changed]) for spec in self.server_callbacks]
            changed = set()
            for spec, props in triggered:
                if props:
                    seconds, _, reply = self.request(spec, props)
                    self.requests.append((spec["output"], seconds))
                    changed |= self._apply(reply)

    def _apply(self, body: dict | None) -> set:
        from gradwatch.dashboard import ids

        if not body:
            return set()
        start = time.thread_time()
        changed = set()
        for ident, props in body.get("response", {}).items():
            for prop, value in props.items():
                if prop == "figure":
                    self.figures[ident] = value
                elif prop == "extendData":
                    _extend(self.figures.get(ident), value)
                else:
                    self.values[(ident, prop)] = value
                changed.add((ident, prop))
        delta = body.get("response", {}).get(ids.DELTA, {}).get("data")
        if delta:
            self._apply_delta(delta)
        self.client_cpu_s += time.thread_time() - start
        return changed

    def _apply_delta(self, delta: dict) -> None:
        """assets/gradwatch.js applyDelta: a payload extends its chart only when it was made for the
        cursor and revision the tab holds; then the chart's store moves to the payload's cursor."""
        from gradwatch.dashboard import ids

        for chart, payload in delta.items():
            key = (ids.live_store(chart), "data")
            held = self.values.get(key)
            if not held or not isinstance(payload, dict) or payload.get("rev") != held.get("rev") \
                    or payload.get("base") != held.get("cursor"):
                continue
            if payload.get("extend"):
                _extend(self.figures.get(chart), payload["extend"])
            self.values[key] = dict(held, cursor=payload["to"], appended=held.get("appended", 0) + payload.get("added", 0))


def _encode(values: dict) -> list:
    return [[ident, prop, value] for (ident, prop), value in values.items()]


def _decode(items: list) -> dict:
    return {(ident, prop): value for ident, prop, value in items}


def _extend(figure: dict | None, extend) -> None:
    """Plotly.extendTraces on a figure dict: append each key's new points to its traces, keeping at
    most maxPoints (a number, or one per key) of the newest."""
    if not figure or not extend:
        return
    update, indices = extend[0], extend[1]
    max_points = extend[2] if len(extend) > 2 else None
    traces = figure.get("data") or []
    for key, columns in update.items():
        for position, index in enumerate(indices):
            if index >= len(traces):
                continue
            current = traces[index].get(key)
            current = list(current) if isinstance(current, list) else []
            current.extend(columns[position])
            limit = max_points.get(key) if isinstance(max_points, dict) else max_points
            if isinstance(limit, int) and len(current) > limit:
                current = current[-limit:]
            traces[index][key] = current


def open_tab(base_url: str, run_id: str, info: dict) -> Tab:
    """One browser tab after opening the Run page: the page's stores, and every chart drawn once
    (each chart's callback, as the renderer fires them at load, answers applied)."""
    from gradwatch.dashboard import ids
    from gradwatch.dashboard.views.run_charts import CHARTS

    client = DashClient(base_url)
    stores = {ids.RUN_ID: run_id, ids.SEL_RANGE: {"from": None, "to": None}, "run-info": info,
              ids.SEL_LAYER: {"layer": info["param_layers"][0], "param": "weight"},
              ids.SEL_STEP: {"step": None, "follow": True, "latest": info.get("last_logged_step")},
              ids.SEL_ROWS: {"filter": "", "collapse": None}, ids.FLAGS_DATA: [], ids.NOTES_DATA: [],
              ids.FIRST_PAINT_STAGE: 1, ids.RUN_SHAPE: {"layers": len(info["layers"]), "activations": 0},
              ids.LIVE_META: {"status": info["status"], "running": True, "last_logged": info.get("last_logged_step"),
                              "ticks": 0, "flags_cursor": info["cursors"]["flags"],
                              "notes_cursor": info["cursors"]["notes"]},  # as the page's layout sets it
              ids.POLL_TICK: 0,
              **{ids.refresh_store(chart.id): 0 for chart in CHARTS}, ids.REFRESH_FLAGS: 0, ids.REFRESH_NOTES: 0}
    values = {(ident, "data"): value for ident, value in stores.items()}
    values.update({(ids.RUN_STEP_SLIDER, "value"): info.get("last_logged_step") or 0,
                   (ids.RUN_STEP_SLIDER, "max"): info.get("last_logged_step") or 0,
                   (ids.RUN_STEP_SLIDER, "min"): info.get("first_step") or 0,
                   (ids.RUN_FOLLOW, "value"): ["follow"], (ids.RUN_LAYER, "value"): info["param_layers"][0],
                   (ids.RUN_PARAM, "value"): "weight"})
    tab = Tab(client, values)
    for chart in CHARTS:
        spec = next(d for d in client.deps if f"{chart.id}.figure" in d["output"])
        _, _, body = tab.request(spec, [f"{ids.refresh_store(chart.id)}.data"])
        tab._apply(body)
    tab.requests.clear()
    return tab


class Viewer(threading.Thread):
    """One browser tab on the Run page (a copy of `tab`, opened at the window's start): the live poll
    callback every `period` seconds, each answer applied and followed as the page does (Tab.answer):
    the delta extends the figures, and each redraw, flags or notes refresh and slider move the answer
    asks for is requested like the browser requests it."""

    def __init__(self, base_url: str, deps: list, tab: Tab, period: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.tab = Tab(DashClient(base_url, deps), _decode(json.loads(json.dumps(_encode(tab.values)))),
                       json.loads(json.dumps(tab.figures)))
        self.period, self.stop = period, stop
        self.latencies: list[float] = []  # the poll callback
        self.tick_seconds: list[float] = []  # the poll and every request its answer led to
        self.bytes: list[int] = []
        self.polls = 0
        self.errors = 0
        self.followups = 0

    def run(self) -> None:
        from gradwatch.dashboard import ids

        tab = self.tab
        poll_spec = next(d for d in tab.client.deps if d["output"].startswith(f"..{ids.DELTA}.data"))
        # Viewers poll at random moments within a second, not in lockstep.
        self.stop.wait(random.random() * self.period)
        tick = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            tick += 1
            tab.values[(ids.POLL_TICK, "data")] = tick  # the clientside gate's output
            before = len(tab.requests)
            try:
                seconds, size, body = tab.request(poll_spec, [f"{ids.POLL_TICK}.data"])
                started = time.perf_counter()
                tab.answer(body)
                follow_up = time.perf_counter() - started
            except Exception:
                self.errors += 1
                body, seconds, size, follow_up = None, 0.0, 0, 0.0
            self.polls += 1
            if body is not None and tick > 1:  # the first poll of a tab catches up with its initial charts
                self.latencies.append(seconds)
                self.tick_seconds.append(seconds + follow_up)
                self.bytes.append(size)
            self.followups += len(tab.requests) - before
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
        info = {k: info[k] for k in ("run_id", "layers", "param_layers", "tensors", "first_step", "last_logged_step",
                                     "status", "cursors")}
        deps = DashClient(server.url).deps
        windows, viewers, cpu = [], [], []
        for index in range(4):
            begin = t_start + index * args.window
            time.sleep(max(0.0, begin - time.time()))
            stop = threading.Event()
            if index % 2 == 1:
                tab = open_tab(server.url, run_id, info)  # the tabs open together: one page load's stores
            # CPU is counted from here: the polls' cost, not the page load's.
            cpu_start = (worker_cpu_s(server.proc.pid), time.process_time(), time.time())
            if index % 2 == 1:
                group = [Viewer(server.url, deps, tab, 1.0, stop) for _ in range(args.viewers)]
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
    quiet, busy, quiet_cpu, busy_cpu = [], [], [], []
    for wall, seconds, cpu_seconds in samples:
        for begin, end, with_viewers in windows:
            if begin + margin <= wall < end - 0.2:
                (busy if with_viewers else quiet).append(seconds)
                (busy_cpu if with_viewers else quiet_cpu).append(cpu_seconds)
    polls = sum(v.polls for v in viewers)

    def per_poll_ms(field):  # CPU of the busy windows above the quiet windows' rate, per poll
        if any(w[field] is None for w in cpu) or not polls:
            return None
        quiet_rate = sum(w[field] for w in cpu if not w["viewers"]) / sum(w["seconds"] for w in cpu if not w["viewers"])
        busy = [w for w in cpu if w["viewers"]]
        excess = sum(w[field] for w in busy) - quiet_rate * sum(w["seconds"] for w in busy)
        return round(1000 * excess / polls, 2)

    latencies = [s for v in viewers for s in v.latencies]
    ticks = [s for v in viewers for s in v.tick_seconds]
    followups = [seconds for v in viewers for _, seconds in v.tab.requests]
    client_cpu_ms = 1000 * sum(v.tab.client_cpu_s for v in viewers) / max(1, polls)
    sizes = [b for v in viewers for b in v.bytes]
    shutil.rmtree(tmp, ignore_errors=True)
    quiet_median, busy_median = percentile(quiet, 50), percentile(busy, 50)
    quiet_cpu_median, busy_cpu_median = percentile(quiet_cpu, 50), percentile(busy_cpu, 50)
    result = {
        "bench": "dashboard_viewers", "viewers": args.viewers, "poll_hz": 1.0, "stats_every": args.every,
        "cpu_count": os.cpu_count(), "polls": len(latencies), "poll_errors": sum(v.errors for v in viewers),
        "poll_p50_ms": round(percentile(latencies, 50) * 1000, 1), "poll_p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "poll_bytes_p50": int(percentile(sizes, 50)) if sizes else None,
        "tick_p95_ms": round(percentile(ticks, 95) * 1000, 1),
        "redraw_requests_per_poll": round(len(followups) / max(1, polls), 3),
        "redraw_p95_ms": round(percentile(followups, 95) * 1000, 1) if followups else None,
        "client_apply_cpu_ms_per_poll": round(client_cpu_ms, 3),
        "redraws_per_poll_by_output": {name[:48]: round(n / max(1, polls), 3) for name, n in sorted(
            Counter(output for v in viewers for output, _ in v.tab.requests).items(), key=lambda kv: -kv[1])},
        "step_cpu_ms_no_viewers": round(quiet_cpu_median * 1000, 3),
        "step_cpu_ms_with_viewers": round(busy_cpu_median * 1000, 3),
        "step_cpu_ratio": round(busy_cpu_median / quiet_cpu_median, 3),
        "step_ms_no_viewers": round(quiet_median * 1000, 3), "step_ms_with_viewers": round(busy_median * 1000, 3),
        "step_time_ratio": round(busy_median / quiet_median, 3), "steps_compared": [len(quiet), len(busy)],
        "server_cpu_ms_per_poll": per_poll_ms("server_s"), "viewer_client_cpu_ms_per_poll": per_poll_ms("clients_s"),
        "cpu_s_by_window": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in w.items()} for w in cpu],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "targets": {"poll_p95_ms": 300, "step_cpu_ratio": 1.10},
    }
    print(f"{args.viewers} viewers at 1 Hz: poll p50 {result['poll_p50_ms']} ms, p95 {result['poll_p95_ms']} ms "
          f"({result['polls']} polls, {result['poll_errors']} errors); with the redraws the answers lead to "
          f"({result['redraw_requests_per_poll']} requests per poll, p95 {result['redraw_p95_ms']} ms) a tick's p95 is "
          f"{result['tick_p95_ms']} ms; training step CPU median {result['step_cpu_ms_no_viewers']} ms without viewers, "
          f"{result['step_cpu_ms_with_viewers']} ms with (x{result['step_cpu_ratio']}); wall median "
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

"""Opening a big run: 200,000 logged steps x 20 layers (8 M statistics rows, 1 M scalars).

Measures, against the real server (gunicorn, 2 workers x 4 threads) and a headless browser:
- first paint: navigation -> loss curve and gradient flow drawn, in a fresh browser context (cold server
  cache) and again (warm cache);
- server time and response size of every Run-page callback, called over HTTP as the browser calls them;
- per-tick payload of the live poll: proportional to the new records, independent of the history.

    python bench/dashboard_scale.py            # prints a table, then one JSON line
Targets (docs/dashboard.md): first paint < 2 s, < 300 ms per callback, payload ~ new records only.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR, DashClient, Gunicorn, big_run, launch_browser  # noqa: E402

RUN_CALLBACKS = (  # (output marker, changed prop, what it draws)
    ("..fig-loss.figure...", "sel-range.data", "loss/accuracy/signals"),
    ("..fig-signals.figure...", "sel-range.data", "training signals"),
    ("..fig-grad-time.figure...", "sel-range.data", "per-layer series"),
    ("..fig-hist-grad.figure...", "sel-layer.data", "histogram heatmaps"),
    ("fig-flow.figure", "sel-step.data", "gradient flow"),
    ("fig-weights-epoch.figure", "sel-layer.data", "weights by epoch"),
    ("..flags-panel.children...", "refresh-flags.data", "flags panel"),
)
FIRST_PAINT_JS = """() => {
  const loss = document.querySelector('#fig-loss .js-plotly-plot');
  const flow = document.querySelector('#fig-flow .gtitle');
  return !!(loss && loss.data && loss.data.some(t => t.meta === 'scalar:train_loss') && flow);
}"""
ALL_CHARTS_JS = """() => ['fig-loss','fig-acc','fig-flow','fig-grad-time','fig-hist-grad','fig-hist-weight',
  'fig-weights-epoch','fig-ratio','fig-act','fig-signals'].every(id => {
    const gd = document.querySelector('#' + id + ' .js-plotly-plot');
    return gd && gd.layout && (gd.layout.title || (gd.layout.annotations || []).length); })"""


def run_values(run_id: str, info: dict) -> dict:
    return {"run-id": run_id, "sel-range": {"from": None, "to": None},
            "sel-layer": {"layer": info["param_layers"][0], "param": "weight"},
            "sel-step": {"step": None, "follow": True, "latest": info["last_logged_step"]},
            "refresh-scalars": 0, "refresh-layers": 0, "refresh-hist": 0, "refresh-epochs": 0, "refresh-flags": 0,
            "flags-data": [], "run-info": info}


def time_callbacks(client: DashClient, run_id: str, info: dict, label: str) -> list[dict]:
    values = run_values(run_id, info)
    rows = []
    for marker, changed, what in RUN_CALLBACKS:
        seconds, size, _ = client.call(marker, values, changed)
        rows.append({"callback": what, "cache": label, "ms": round(seconds * 1000, 1), "kb": round(size / 1024, 1)})
    return rows


def first_paint(context, url: str) -> dict:
    """Seconds from navigation to: the page shell (run header), the first chart with data (loss curve
    and gradient flow), every chart drawn."""
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#run-status", timeout=120_000)
    shell = time.perf_counter() - start
    page.wait_for_function(FIRST_PAINT_JS, timeout=120_000, polling=20)
    painted = time.perf_counter() - start
    page.wait_for_function(ALL_CHARTS_JS, timeout=120_000, polling=50)
    complete = time.perf_counter() - start
    page.close()
    return {"shell_s": round(shell, 3), "first_paint_s": round(painted, 3), "all_charts_s": round(complete, 3)}


REPEATS = 5


def wait_for_diagnosis(context, url: str) -> None:
    """Until the run's (background) diagnosis is done and cached: the flags panel stops saying so."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("() => { const p = document.querySelector('#flags-panel');"
                           " return p && p.innerText && !/^Diagnosing|diagnosing this large run/.test(p.innerText); }", timeout=600_000, polling=500)
    page.close()


def median_paint(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def poll_payloads(tmp: Path) -> list[dict]:
    """Poll payload bytes vs new records per tick, for a short and a long live history."""
    from gradwatch.dashboard.data import RunStore
    from gradwatch.dashboard.views import run as logic
    from gradwatch.testing import LiveRun

    out = []
    for history in (100, 20_000):
        live = LiveRun(tmp / "live", f"live-{history}", layers=20, histograms=False)
        for _ in range(history):
            live.write_step()
            if live.step % 2000 == 0:
                live.writer.flush()
        live.writer.flush()
        store = RunStore(tmp / "live", tmp / "cache")
        scalars = logic.scalars_impl(store, live.run_id, None, [], None)["live"]
        layers = logic.layers_impl(store, live.run_id, None, None, [], None)["live"]
        for new in (1, 10, 100):
            for _ in range(new):
                live.write_step()
            live.writer.flush()
            start = time.perf_counter()
            result = logic.poll_impl(store, live.run_id, scalars, layers, None, {})
            seconds = time.perf_counter() - start
            payload = len(json.dumps(result["delta"]))
            out.append({"history_steps": history, "new_steps": new, "poll_ms": round(seconds * 1000, 1),
                        "payload_bytes": payload, "bytes_per_new_step": round(payload / new),
                        "redraw": sorted(result["refresh"] & {"scalars", "layers"})})
            # Like the page: advance each channel's cursor (a redraw would rebuild it).
            for name, state in (("scalars", scalars), ("layers", layers)):
                if name in result["delta"]:
                    state["cursor"] = result["delta"][name]["to"]
        live.stop()
    return out


def small_run(logdir: Path) -> str:
    """A 300-step run with the same 20 layers beside the big one: the size-independent baseline."""
    from gradwatch.testing import make_run

    if not (logdir / "small").exists():
        make_run(logdir, "small", steps=300, layers=20, every=1, epochs=10, bias=False, activations=False)
    return "small"


def main() -> int:
    logdir, generated = big_run()
    small_run(logdir)
    results = {"steps": 200_000, "layers": 20, "generated_s": None if generated is None else round(generated, 1)}
    cache = Path(tempfile.mkdtemp(prefix="gw-scale-cache-", dir=BENCH_DIR))
    server = Gunicorn(logdir, cache / "c")
    try:
        client = DashClient(server.url)
        from gradwatch.dashboard.data import RunStore

        info = RunStore(logdir, None).run_info("big")
        info = {k: info[k] for k in ("run_id", "layers", "param_layers", "tensors", "first_step", "last_logged_step")}
        playwright, browser = launch_browser()
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1100})
            cold = first_paint(context, server.url + "/run?run=big")  # cold server cache, empty browser cache
            wait_for_diagnosis(context, server.url + "/run?run=big")  # its background thread would skew the rest
            timings = time_callbacks(client, "big", info, "warm")
            # A returning viewer, and the same page on a 300-step run, alternated and repeated (the
            # machine is noisy): the medians say whether a run's length shows in its first paint.
            warm_runs, small_runs = [], []
            for _ in range(REPEATS):
                warm_runs.append(first_paint(context, server.url + "/run?run=big"))
                small_runs.append(first_paint(context, server.url + "/run?run=small"))
            warm, small = median_paint(warm_runs), median_paint(small_runs)
        finally:
            browser.close()
            playwright.stop()
        shutil.rmtree(cache / "c", ignore_errors=True)  # cold cache again, for per-callback cold times
        server.stop()
        server = Gunicorn(logdir, cache / "c2")
        client = DashClient(server.url)
        start = time.perf_counter()
        client.session.get(server.url + "/run?run=big")
        index_s = time.perf_counter() - start
        cold_timings = time_callbacks(client, "big", info, "cold")
    finally:
        server.stop()
        shutil.rmtree(cache, ignore_errors=True)
    payloads = poll_payloads(Path(tempfile.mkdtemp(prefix="gw-poll-", dir=BENCH_DIR)))
    for label, paint in (("first visit (cold server and browser caches)", cold), (f"returning viewer (warm, median of {REPEATS})", warm),
                         (f"returning viewer, a 300-step run (baseline, median of {REPEATS})", small)):
        print(f"{label}: shell {paint['shell_s']:.2f} s, first chart {paint['first_paint_s']:.2f} s, "
              f"all charts {paint['all_charts_s']:.2f} s")
    print(f"index page: {index_s * 1000:.0f} ms")
    print(f"{'callback':24} {'cache':6} {'ms':>8} {'KiB':>8}")
    for row in cold_timings + timings:
        print(f"{row['callback']:24} {row['cache']:6} {row['ms']:8.1f} {row['kb']:8.1f}")
    print(f"{'history':>8} {'new':>5} {'poll ms':>8} {'bytes':>8} {'B/step':>7}")
    for row in payloads:
        print(f"{row['history_steps']:8} {row['new_steps']:5} {row['poll_ms']:8.1f} {row['payload_bytes']:8} "
              f"{row['bytes_per_new_step']:7}")
    worst = max(r["ms"] for r in cold_timings + timings if r["callback"] != "flags panel")
    results.update(shell_cold_s=cold["shell_s"], shell_warm_s=warm["shell_s"],
                   first_paint_cold_s=cold["first_paint_s"], first_paint_warm_s=warm["first_paint_s"],
                   all_charts_cold_s=cold["all_charts_s"], all_charts_warm_s=warm["all_charts_s"],
                   first_paint_small_run_s=small["first_paint_s"],
                   first_paint_ratio_big_to_small=round(warm["first_paint_s"] / small["first_paint_s"], 2),
                   index_ms=round(index_s * 1000, 1), callbacks=cold_timings + timings,
                   worst_callback_ms=worst, poll=payloads)
    print(json.dumps({"bench": "dashboard_scale", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Opening a big run: 200,000 logged steps x 20 layers (8 M statistics rows, 1 M scalars); and the Run
page of a big model: 1,000 parameter tensors vs 10, both 20,000 optimizer steps (`--models`).

Measures, against the real server (gunicorn, 2 workers x 4 threads) and a headless browser:
- first paint: navigation -> loss curve and gradient flow drawn, in a fresh browser context (cold server
  cache) and again (warm cache);
- server time and response size of every Run-page callback, called over HTTP as the browser calls them;
- per-tick payload of the live poll: proportional to the new records, independent of the history.

    python bench/dashboard_scale.py            # both parts: prints tables, then one JSON line each
    python bench/dashboard_scale.py --models   # only the model-size part (1,000 vs 10 tensors)
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
    ("..fig-loss.figure...", "sel-range.data", "loss"),
    ("..fig-signals.figure...", "sel-range.data", "training signals"),
    ("..fig-grad-heat.figure...", "sel-range.data", "all-layers heatmap"),
    ("..fig-grad-time.figure...", "sel-range.data", "per-layer series"),
    ("..fig-hist-grad.figure...", "sel-layer.data", "histogram heatmap"),
    ("fig-flow.figure", "sel-step.data", "gradient flow"),
    ("fig-weights-epoch.figure", "sel-layer.data", "weights by epoch"),
    ("..flags-panel.children...", "refresh-flags.data", "flags panel"),
)
FIRST_PAINT_JS = """() => {
  const loss = document.querySelector('#fig-loss .js-plotly-plot');
  const flow = document.querySelector('#fig-flow .gtitle');
  return !!(loss && loss.data && loss.data.some(t => t.meta === 'scalar:train_loss') && flow);
}"""
ALL_CHARTS_JS = """(ids) => ids.every(id => {
    const gd = document.querySelector('#' + id + ' .js-plotly-plot');
    return gd && gd.layout && (gd.layout.title || (gd.layout.annotations || []).length); })"""
SCRIPT_BYTES_JS = """() => performance.getEntriesByType('resource').filter(r => r.initiatorType === 'script'
  || /\\.js(\\?|$)/.test(r.name)).reduce((n, r) => n + (r.encodedBodySize || r.transferSize || 0), 0)"""


def run_values(run_id: str, info: dict) -> dict:
    return {"run-id": run_id, "sel-range": {"from": None, "to": None},
            "sel-layer": {"layer": info["param_layers"][0], "param": "weight"},
            "sel-step": {"step": None, "follow": True, "latest": info["last_logged_step"]},
            "sel-rows": {"filter": "", "collapse": None}, "notes-data": [],
            "run-shape": {"layers": len(info["layers"]), "activations": 0},
            **{f"refresh-{chart_id}": 0 for chart_id in chart_ids()}, "refresh-flags": 0,
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
    script_bytes = page.evaluate(SCRIPT_BYTES_JS)
    page.wait_for_function(ALL_CHARTS_JS, arg=chart_ids(), timeout=120_000, polling=50)
    complete = time.perf_counter() - start
    page.close()
    return {"shell_s": round(shell, 3), "first_paint_s": round(painted, 3), "all_charts_s": round(complete, 3),
            "script_kib_at_first_paint": round(script_bytes / 1024)}


def chart_ids() -> list[str]:
    from gradwatch.dashboard.views.run_charts import CHARTS

    return [chart.id for chart in CHARTS]


REPEATS = 5


def wait_for_diagnosis(context, url: str) -> None:
    """Until the run's (background) diagnosis is done and cached: the flags panel stops saying so."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("() => { const p = document.querySelector('#flags-panel');"
                           " return p && p.innerText && !/^Diagnosing|diagnosing this large run/.test(p.innerText); }", timeout=600_000, polling=500)
    page.close()


def median_paint(runs: list[dict]) -> dict:
    runs = [{k: v for k, v in r.items() if not k.startswith("script")} for r in runs]
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def poll_payloads(tmp: Path) -> list[dict]:
    """Poll payload bytes vs new records per tick, for a short and a long live history."""
    from gradwatch.dashboard import ids
    from gradwatch.dashboard.data import RunStore
    from gradwatch.dashboard.views import run as logic
    from gradwatch.dashboard.views import run_charts
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
        # The loss chart (scalars channel) and the per-layer lines (layers channel), as the page draws them.
        charts = (ids.FIG_LOSS, ids.FIG_GRAD_TIME)
        states = {chart_id: run_charts.render(run_charts.BY_ID[chart_id], store,
                                              run_charts.ChartArgs(run_id=live.run_id))["live"] for chart_id in charts}
        for new in (1, 10, 100):
            for _ in range(new):
                live.write_step()
            live.writer.flush()
            start = time.perf_counter()
            result = logic.poll_impl(store, live.run_id, states, None)
            seconds = time.perf_counter() - start
            payload = len(json.dumps(result["delta"], default=str))
            out.append({"history_steps": history, "new_steps": new, "poll_ms": round(seconds * 1000, 1),
                        "payload_bytes": payload, "bytes_per_new_step": round(payload / new),
                        "redraw": sorted(result["refresh"] & set(charts))})
            # Like the page: advance each chart's cursor (a redraw would rebuild it).
            for chart_id, state in states.items():
                if chart_id in result["delta"]:
                    state["cursor"] = result["delta"][chart_id]["to"]
        live.stop()
    return out


def small_run(logdir: Path) -> str:
    """A 300-step run with the same 20 layers beside the big one: the size-independent baseline."""
    from gradwatch.testing import make_run

    if not (logdir / "small").exists():
        make_run(logdir, "small", steps=300, layers=20, every=1, epochs=10, bias=False, activations=False)
    return "small"


MODEL_STEPS = 20_000
MODEL_EVERY = 50  # statistics every 50th optimizer step: 400 logged steps
MODEL_SIZES = {"tensors-10": 5, "tensors-1000": 500}  # Linear layers, weight + bias each
MODEL_ROUNDS = 5


def model_runs() -> Path:
    """Two runs of 20,000 optimizer steps: 10 and 1,000 parameter tensors (generated once, reused)."""
    from gradwatch.testing import make_run
    from gradwatch.trainer.runlog import schema

    logdir = BENCH_DIR / f"models-{MODEL_STEPS}-every{MODEL_EVERY}-v{schema.SCHEMA_VERSION}"
    for name, layers in MODEL_SIZES.items():
        if not (logdir / name / ".complete").exists():
            shutil.rmtree(logdir / name, ignore_errors=True)
            make_run(logdir, name, steps=MODEL_STEPS, layers=layers, every=MODEL_EVERY, epochs=20, bias=True,
                     activations=False, hist_every=10, step_seconds=0.01)
            (logdir / name / ".complete").write_text("")
    return logdir


def model_size() -> dict:
    """Server CPU time per Run-page callback (each chart's read + figure + JSON) and of the page
    layout (the first paint's server part), 1,000 vs 10 tensors, interleaved, cold and warm cache;
    the bytes each chart sends; then first paint in the browser, interleaved."""
    import plotly.io as pio

    from gradwatch.dashboard.config import Settings
    from gradwatch.dashboard.context import AppContext
    from gradwatch.dashboard.data import RunStore
    from gradwatch.dashboard.pages import run as run_page
    from gradwatch.dashboard.views.run_charts import CHARTS, render

    logdir = model_runs()
    cpu: dict = {}
    sent: dict = {}
    for _ in range(MODEL_ROUNDS):
        for name in MODEL_SIZES:
            cache = Path(tempfile.mkdtemp(prefix="gw-models-", dir=BENCH_DIR))
            store = RunStore(logdir, cache)
            info = store.run_info(name)
            args = run_page.chart_args(name, {"layer": {"layer": info["param_layers"][0], "param": "weight"},
                                              "step": {"step": None, "follow": True}}, [],
                                       run_page._run_shape(info), dict(info))
            for label in ("cold", "warm"):
                for chart in CHARTS:
                    start = time.process_time()
                    figure = pio.to_json(render(chart, store, args)["figure"], validate=False)
                    cpu.setdefault((chart.id, label, name), []).append(time.process_time() - start)
                    sent[(chart.id, name)] = len(figure)
            ctx = AppContext.from_settings(Settings(logdir=logdir, cache_dir=cache / "page"))  # a cold cache
            for label in ("cold", "warm"):
                start = time.process_time()
                pio.to_json(run_page.layout(ctx, run=name).to_plotly_json(), validate=False)
                cpu.setdefault(("page layout", label, name), []).append(time.process_time() - start)
            shutil.rmtree(cache, ignore_errors=True)
    small, big = MODEL_SIZES
    rows = []
    for chart_id in [c.id for c in CHARTS] + ["page layout"]:
        for label in ("cold", "warm"):
            s_ms = statistics.median(cpu[(chart_id, label, small)]) * 1000
            b_ms = statistics.median(cpu[(chart_id, label, big)]) * 1000
            rows.append({"chart": chart_id, "cache": label, "ms_10": round(s_ms, 1), "ms_1000": round(b_ms, 1),
                         "ratio": round(b_ms / max(s_ms, 1e-6), 2),
                         "kib_10": round(sent.get((chart_id, small), 0) / 1024, 1),
                         "kib_1000": round(sent.get((chart_id, big), 0) / 1024, 1)})
    paints = {name: [] for name in MODEL_SIZES}
    server = Gunicorn(logdir, Path(tempfile.mkdtemp(prefix="gw-models-srv-", dir=BENCH_DIR)) / "c")
    try:
        playwright, browser = launch_browser()
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1100})
            for name in MODEL_SIZES:  # warm-up: the caches of the first visit are not what is compared
                first_paint(context, server.url + f"/run?run={name}")
            for _ in range(MODEL_ROUNDS):
                for name in MODEL_SIZES:
                    paints[name].append(first_paint(context, server.url + f"/run?run={name}"))
        finally:
            browser.close()
            playwright.stop()
    finally:
        server.stop()
    paint = {name: median_paint(runs) for name, runs in paints.items()}
    script_kib = max(r["script_kib_at_first_paint"] for runs in paints.values() for r in runs)
    print(f"model size: {MODEL_STEPS:,} optimizer steps, statistics every {MODEL_EVERY}; server CPU ms "
          f"(process time, median of {MODEL_ROUNDS} interleaved rounds) and figure KiB per chart")
    print(f"{'chart':20} {'cache':6} {'10 t ms':>8} {'1000 t ms':>10} {'ratio':>6} {'10 t KiB':>9} {'1000 t KiB':>10}")
    for row in rows:
        print(f"{row['chart']:20} {row['cache']:6} {row['ms_10']:8.1f} {row['ms_1000']:10.1f} {row['ratio']:6.2f} "
              f"{row['kib_10']:9.1f} {row['kib_1000']:10.1f}")
    for name, value in paint.items():
        print(f"first paint, {name}: shell {value['shell_s']:.2f} s, first chart {value['first_paint_s']:.2f} s, "
              f"all charts {value['all_charts_s']:.2f} s")
    ratio = round(paint[big]["first_paint_s"] / paint[small]["first_paint_s"], 2)
    print(f"first paint ratio 1000/10 tensors: {ratio}; JavaScript before the first chart: {script_kib} KiB")
    return {"bench": "dashboard_scale:models", "callbacks": rows, "first_paint": paint,
            "first_paint_ratio": ratio, "script_kib_at_first_paint": script_kib}


def main() -> int:
    if "--models" in sys.argv[1:]:
        print(json.dumps(model_size()))
        return 0
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
        client.get("/run?run=big")
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
    print(json.dumps(model_size()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

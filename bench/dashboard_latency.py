"""Write-to-screen latency while live, measured in a real browser.

A writer (the real RunWriter, default 0.2 s flush interval, as the trainer uses) logs one optimizer step
every 50 ms and remembers each step's wall time. The Run page (default polling) is open in headless
Chromium; a script in the page notes the moment each new step first appears in the loss chart's data.
Delay = seen - logged, on the same clock. Target: p95 < 1 s.

    python bench/dashboard_latency.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR, Gunicorn, launch_browser, percentile  # noqa: E402

WATCH_JS = """() => {
  window.__seen = {};
  setInterval(() => {
    const gd = document.querySelector('#fig-loss .js-plotly-plot');
    if (!gd || !gd.data) return;
    const trace = gd.data.find(t => t.meta === 'scalar:train_loss');
    if (!trace) return;
    const now = Date.now() / 1000;
    const xs = trace.x;
    for (let i = xs.length - 1; i >= 0 && window.__seen[xs[i]] === undefined; i--) window.__seen[xs[i]] = now;
  }, 5);
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--step-interval", type=float, default=0.05)
    args = parser.parse_args()
    from gradwatch.dashboard.config import DEFAULT_POLL_MS
    from gradwatch.testing import LiveRun
    from gradwatch.trainer.runlog.writer import DEFAULT_FLUSH_INTERVAL_S

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-latency-", dir=BENCH_DIR))
    logdir = tmp / "logs"
    live = LiveRun(logdir, "latency", layers=4, step_interval_s=args.step_interval,
                   flush_interval_s=DEFAULT_FLUSH_INTERVAL_S)
    live.write_step()
    server = Gunicorn(logdir, tmp / "cache")
    playwright, browser = launch_browser()
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(server.url + "/run?run=latency")
        page.wait_for_function("() => { const gd = document.querySelector('#fig-loss .js-plotly-plot');"
                               " return gd && gd.data && gd.data.some(t => t.meta === 'scalar:train_loss'); }",
                               timeout=60_000)
        page.evaluate(WATCH_JS)
        first_live_step = live.step
        live.start()
        time.sleep(args.seconds)
        live.stop()
        time.sleep(2)
        seen = {int(k): v for k, v in page.evaluate("() => window.__seen").items()}
    finally:
        browser.close()
        playwright.stop()
        server.stop()
    delays = [seen[s] - live.walls[s] for s in sorted(live.walls) if s >= first_live_step and s in seen]
    missing = [s for s in live.walls if s >= first_live_step and s not in seen]
    shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "dashboard_latency", "poll_ms": DEFAULT_POLL_MS, "writer_flush_s": DEFAULT_FLUSH_INTERVAL_S,
        "steps_logged": len(delays) + len(missing), "steps_seen": len(delays), "missing": len(missing),
        "p50_s": round(percentile(delays, 50), 3), "p95_s": round(percentile(delays, 95), 3),
        "max_s": round(max(delays), 3) if delays else None, "target_p95_s": 1.0,
    }
    print(f"write-to-screen delay over {len(delays)} steps: p50 {result['p50_s']:.3f} s, p95 {result['p95_s']:.3f} s,"
          f" max {result['max_s']:.3f} s (poll {DEFAULT_POLL_MS} ms, writer flush {DEFAULT_FLUSH_INTERVAL_S} s);"
          f" {len(missing)} steps never shown")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

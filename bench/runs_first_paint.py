"""The Runs page's first paint at 10, 500 and 2,000 runs in the logdir (a sweep; a team's logdir), in
headless Chromium against gunicorn: the time from navigation to the first table rows on screen, on a cold
summary cache and warm (a second visit), and until no row is still "reading…".

    python bench/runs_first_paint.py [--counts 10,500,2000]
    python bench/runs_first_paint.py --smoke      # 3 and 10 runs: proves the bench works, no figures

Target (issue 22): first paint at 500 and 2,000 runs within 1.5x of the 10-run logdir.
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
from dashboard_common import BENCH_DIR, Gunicorn, launch_browser  # noqa: E402
from dashboard_runs import make_runs  # noqa: E402

ROWS = "table.runs tbody tr"
COMPLETE_JS = "() => document.querySelectorAll('table.runs tbody tr').length > 0 && " \
              "!document.querySelector('table.runs tbody tr.pending-row')"


def visit(browser, url: str) -> dict:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        start = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_selector(ROWS, timeout=300_000)
        first = time.perf_counter() - start
        page.wait_for_function(COMPLETE_JS, timeout=600_000, polling=100)
        complete = time.perf_counter() - start
        rows = page.locator(ROWS).count()
    finally:
        page.close()
    return {"first_paint_s": round(first, 3), "complete_s": round(complete, 3), "rows_shown": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,500,2000")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    counts = [3, 10] if args.smoke else [int(c) for c in args.counts.split(",")]
    results = []
    playwright, browser = launch_browser()
    try:
        for count in counts:
            logdir, _ = make_runs(count)
            cache = Path(tempfile.mkdtemp(prefix="gw-paint-cache-", dir=BENCH_DIR))
            server = Gunicorn(logdir, cache / "c")
            try:
                cold = visit(browser, server.url)
                warm = visit(browser, server.url)
            finally:
                server.stop()
                shutil.rmtree(cache, ignore_errors=True)
            results.append({"runs": count, "cold": cold, "warm": warm})
    finally:
        browser.close()
        playwright.stop()
    base = results[0]["warm"]["first_paint_s"] or float("nan")
    for row in results:
        row["warm_vs_smallest"] = round(row["warm"]["first_paint_s"] / base, 2)
    print(json.dumps({"bench": "runs_first_paint", "results": results, "target_ratio": 1.5}, indent=2))


if __name__ == "__main__":
    main()

"""The Run page on a real model with 197 parameter tensors in 12 repeated blocks (recorded with the Run
API, real torch): the all-layers heatmaps, grouping, the name filter, flagged layers, the gradient-flow
bars, and the log loss axis of the exploding run. Every test also fails on a browser console error.

Screenshots of each view go to /tmp/shots (GRADWATCH_SHOTS to change) for a look by eye.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader

from .block_model import BLOCKS, DEAD_BLOCK, record_block_model_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a real server: not the fast lane
SHOTS = Path(os.environ.get("GRADWATCH_SHOTS", "/tmp/shots"))

FIGURE = """([id, meta]) => {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!gd || !gd.data) return null;
  const trace = gd.data.find(t => t.meta === meta);
  return trace ? {y: Array.from(trace.y || []), x: Array.from(trace.x || []), orientation: trace.orientation || null,
                  title: (gd.layout.title && gd.layout.title.text) || ''} : null;
}"""


def figure_trace(page, fig_id: str, meta: str):
    return page.evaluate(FIGURE, [fig_id, meta])


def wait_trace(page, fig_id: str, meta: str, predicate=lambda t: True, timeout=30_000):
    page.wait_for_function(f"""() => {{ const f = ({FIGURE})(['{fig_id}', '{meta}']); return !!f; }}""",
                           timeout=timeout)
    handle = None
    for _ in range(int(timeout / 250)):
        handle = figure_trace(page, fig_id, meta)
        if handle and predicate(handle):
            return handle
        page.wait_for_timeout(250)
    raise AssertionError(f"{fig_id}/{meta}: {handle and {k: v for k, v in handle.items() if k != 'x'}}")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def block_run(logdir):
    run_id = record_block_model_run(logdir)
    with RunReader(logdir / run_id) as reader:
        tensors = reader.tensors()
    params = tensors[tensors["role"] == "param"]
    assert len(params) >= 150
    return {"id": run_id, "param_layers": list(dict.fromkeys(params["layer"])),
            "activations": list(dict.fromkeys(tensors.loc[tensors["role"] != "param", "layer"]))}


def test_heatmap_has_one_row_per_layer_in_forward_order_and_per_block_when_grouped(server, new_page, block_run):
    page = new_page()
    page.goto(server.url + f"/run?run={block_run['id']}&group=0")
    heat = wait_trace(page, "fig-grad-heat", "heatmap")
    assert heat["y"] == block_run["param_layers"]  # every layer, forward order
    flow = wait_trace(page, "fig-flow", "flow")
    assert flow["orientation"] == "h" and flow["y"] == block_run["param_layers"]  # hundreds of bars: horizontal
    shot(page, "run-blocks-expanded-1500")

    grouped = new_page(viewport=(1280, 900))
    grouped.goto(server.url + f"/run?run={block_run['id']}")  # many layers: grouped by default
    rows = wait_trace(grouped, "fig-grad-heat", "heatmap")["y"]
    assert rows == ["embed"] + [f"blocks.{i}.*" for i in range(BLOCKS)] + ["ln_f", "head"]
    assert grouped.locator("#run-row-group input").is_checked()
    shot(grouped, "run-blocks-grouped-1280")
    # Unticking "group blocks" expands them again (and the URL says so).
    grouped.locator("#run-row-group input").uncheck()
    wait_trace(grouped, "fig-grad-heat", "heatmap", lambda t: t["y"] == block_run["param_layers"])
    grouped.wait_for_url(re.compile(r"group=0"))


def test_filtering_by_name_narrows_every_per_layer_chart(server, new_page, block_run):
    page = new_page(viewport=(1920, 1080))
    page.goto(server.url + f"/run?run={block_run['id']}")
    wait_trace(page, "fig-grad-heat", "heatmap")
    page.fill("#run-row-filter", "attn.q")
    page.press("#run-row-filter", "Enter")
    wanted = [layer for layer in block_run["param_layers"] if "attn.q" in layer]
    assert len(wanted) == BLOCKS
    heat = wait_trace(page, "fig-grad-heat", "heatmap", lambda t: t["y"] == wanted)
    assert "12 layers" in heat["title"]
    wait_trace(page, "fig-flow", "flow", lambda t: list(t["x"] if t["orientation"] != "h" else t["y"]) == wanted)
    page.wait_for_url(re.compile(r"filter=attn\.q"))
    # A glob works too, and the line chart draws just the matching layers.
    page.fill("#run-row-filter", "blocks.1*.mlp.fc2")
    page.press("#run-row-filter", "Enter")
    fc2 = [layer for layer in block_run["param_layers"] if re.fullmatch(r"blocks\.1\d*\.mlp\.fc2", layer)]
    wait_trace(page, "fig-grad-heat", "heatmap", lambda t: t["y"] == fc2)
    page.wait_for_function("""(wanted) => {
      const gd = document.querySelector('#fig-grad-time .js-plotly-plot');
      const shown = gd && gd.data ? gd.data.map(t => t.meta).filter(m => m && m.startsWith('layer:')) : [];
      return JSON.stringify(shown) === JSON.stringify(wanted); }""", arg=[f"layer:{layer}" for layer in fc2])
    shot(page, "run-blocks-filtered-1920")


def test_a_flagged_layer_is_marked_in_its_heatmap(server, new_page, block_run):
    page = new_page()
    page.goto(server.url + f"/run?run={block_run['id']}")
    page.locator(".flag-card", has_text="Dead").first.wait_for(timeout=60_000)
    dead = f"blocks.{DEAD_BLOCK}.mlp.act"
    heat = wait_trace(page, "fig-act", "heatmap")
    assert heat["y"] == block_run["activations"]
    marked = wait_trace(page, "fig-act", "flagged")
    assert marked["y"] == [dead]
    page.locator("#fig-act").scroll_into_view_if_needed()
    shot(page, "run-blocks-flagged-1500")


def test_exploding_loss_axis_is_logarithmic_with_a_toggle(server, new_page):
    page = new_page(viewport=(1280, 900))
    page.goto(server.url + "/run?run=exploding")
    page.wait_for_function("() => { const gd = document.querySelector('#fig-loss .js-plotly-plot');"
                           " return gd && gd.layout && gd.layout.yaxis.type === 'log'; }", timeout=60_000)
    page.locator("#fig-loss .updatemenu-button", has_text="linear").click()
    page.wait_for_function("() => document.querySelector('#fig-loss .js-plotly-plot').layout.yaxis.type === 'linear'")
    page.locator("#fig-loss .updatemenu-button", has_text="log").click()
    page.wait_for_function("() => document.querySelector('#fig-loss .js-plotly-plot').layout.yaxis.type === 'log'")
    shot(page, "run-exploding-1280")


def test_compare_and_run_pages_have_nothing_overlapping(server, new_page):
    """Subplot titles and axis titles of Compare keep apart; at 1280 and 1920 px."""
    for width in (1280, 1920):
        page = new_page(viewport=(width, 1000))
        page.goto(server.url + "/compare?runs=overfit,regularized,exploding")
        page.locator("#cmp-curves .gtitle").first.wait_for()
        page.wait_for_load_state("networkidle")
        boxes = page.evaluate("""() => {
          const root = document.querySelector('#cmp-curves');
          const pick = sel => Array.from(root.querySelectorAll(sel)).map(e => e.getBoundingClientRect())
            .filter(r => r.width > 0).map(r => [r.left, r.top, r.right, r.bottom]);
          return {titles: pick('.annotation-text'), axes: pick('.g-xtitle text, .g-x2title text')};
        }""")
        overlaps = [(a, b) for a in boxes["titles"] for b in boxes["axes"]
                    if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
        assert boxes["titles"] and boxes["axes"] and not overlaps
        shot(page, f"compare-{width}")


# Uncompressed bytes of JavaScript a Run page has loaded when its first charts are drawn (2,107,113
# when written; 2,807,000 before). Issue 14 asks for 2.0 MB; what gets there so far: plotly.js with
# only scatter, bar and heatmap (904 KiB instead of the 1,465 KiB cartesian bundle), no Dash
# polyfill, no dash_table. Still over: Dash's own scripts (renderer, core and html components,
# React: 1,071 KiB) plus dcc's dropdown and slider chunks (75 KiB), which load beside the graph's.
# This bound keeps what was won from creeping back.
SCRIPT_BUDGET_BYTES = 2_110_000
SCRIPTS_AT_FIRST_PAINT = """() => {
  const loss = document.querySelector('#fig-loss .js-plotly-plot');
  if (!(loss && loss.data && document.querySelector('#fig-flow .gtitle'))) return null;
  return performance.getEntriesByType('resource').filter(r => r.initiatorType === 'script' || /\\.js(\\?|$)/.test(r.name))
    .map(r => [r.name, r.decodedBodySize]);
}"""


def test_javascript_before_the_first_chart_stays_within_its_budget(server, new_page, block_run):
    page = new_page()
    page.goto(server.url + f"/run?run={block_run['id']}&group=0")
    scripts = page.wait_for_function(SCRIPTS_AT_FIRST_PAINT, timeout=60_000, polling=20).json_value()
    names = [name for name, _ in scripts]
    assert any("plotly-gradwatch.min.js" in n for n in names) and any("regenerator-runtime" in n for n in names)
    assert not any("polyfill@" in n or "dash_table/bundle" in n or "plotly-cartesian" in n for n in names)
    assert all(size > 0 for _, size in scripts)  # every script counted (same-origin: sizes are exposed)
    total = sum(size for _, size in scripts)
    assert total <= SCRIPT_BUDGET_BYTES, f"{total:,} bytes of JavaScript before the first chart:\n" + "\n".join(
        f"{size:>9,} {name}" for name, size in scripts)
    # The partial bundle draws every trace type the page uses: heatmap (a float32 z with gaps), bars,
    # scatter, log axes.
    wait_trace(page, "fig-grad-heat", "heatmap")
    drawn = page.evaluate("""() => ({
      heatmap: !!document.querySelector('#fig-grad-heat .heatmaplayer image'),
      bars: document.querySelectorAll('#fig-flow .bars path').length,
      lines: document.querySelectorAll('#fig-loss .scatterlayer .js-line').length,
      logFlow: document.querySelector('#fig-flow .js-plotly-plot')._fullLayout.xaxis.type })""")
    assert drawn["heatmap"] and drawn["bars"] >= len(block_run["param_layers"]) and drawn["lines"] >= 1
    assert drawn["logFlow"] == "log"

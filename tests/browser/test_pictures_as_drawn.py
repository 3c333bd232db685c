"""Pictures that must not mislead, checked in headless Chromium on the figure as plotly drew it
(`_fullData` / `_fullLayout`: what plotly used after its own defaults, not what the server sent):

- the update-to-weight ratio heatmap's middle colour sits at 1e-3 (plotly ignores `zmid` once
  zmin/zmax are fixed: it once sat at 1e-5, drawing 200x-too-large ratios blue);
- a layer whose gradient is exactly 0 has the shortest gradient-flow bar, labelled "0" (it was the
  tallest), and its heatmap cells are labelled grey "exactly 0", not blank;
- Compare keeps every run readable next to a diverged one (log axis), lists a run without a
  validation loss in its legend, and orders the layers of runs with different layers input -> output;
- many long layer names (22 BERT-like layers) get horizontal bars with room for each name.

Runs are recorded with the real Run API on tiny torch models, plus fixture runs (gradwatch.testing).
"""

from __future__ import annotations

import pytest

from gradwatch.testing import make_run

from .conftest import Server

pytestmark = pytest.mark.browser

FULL = """([id, meta]) => {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!gd || !gd._fullData) return null;
  const i = gd._fullData.findIndex(t => t.meta === meta);
  if (i < 0) return null;
  const t = gd._fullData[i];
  return {zmin: t.zmin, zmax: t.zmin === undefined ? null : t.zmax, colorscale: t.colorscale || null,
          x: Array.from(t.x || []), y: Array.from(t.y || []), text: t.text ? Array.from(t.text) : null,
          orientation: t.orientation || null, height: gd._fullLayout.height};
}"""


def full_trace(page, fig_id: str, meta: str, timeout: float = 30_000):
    page.wait_for_function(f"() => !!({FULL})(['{fig_id}', '{meta}'])", timeout=timeout)
    return page.evaluate(FULL, [fig_id, meta])


def record(logdir, name: str, layers: list[str], *, dead: str | None = None, steps: int = 6) -> str:
    """A real run of an MLP whose Linear layers have the given dotted names; `dead`'s output is
    multiplied by 0, so every gradient of that layer is exactly 0. Logs train_loss only (no val)."""
    import torch
    from torch import nn

    from gradwatch import Run

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.names = layers
            root = nn.Module()  # nested modules, so each Linear's path is its dotted name
            for path in layers:
                parent = root
                parts = path.split(".")
                for part in parts[:-1]:
                    if not hasattr(parent, part):
                        parent.add_module(part, nn.Module())
                    parent = getattr(parent, part)
                parent.add_module(parts[-1], nn.Linear(8, 8))
            for name, child in root.named_children():
                self.add_module(name, child)

        def forward(self, x):
            for path in self.names:
                out = torch.relu(self.get_submodule(path)(x))
                x = out * 0.0 + x if path == dead else out
            return x

    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    with Run(logdir=str(logdir), name=name, config={"layers": len(layers)}) as run:
        run.watch(model, every=1)
        for step in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(step, train_loss=loss.item())
        return run.id


BERT_LAYERS = [f"bert.encoder.layer.{i}.attention.self.{part}" for i in range(7) for part in ("query", "key", "value")]
BERT_LAYERS.append("classifier.dense_output")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("pictures") / "logs"
    make_run(logdir, "exploding", steps=200, pathology="exploding", layers=4)
    make_run(logdir, "overfit", steps=200, pathology="overfit")
    make_run(logdir, "healthy", steps=200)  # no overfitting flag, a validation loss
    make_run(logdir, "long-names-flag", steps=40, flags=[{  # a flag naming 8 long layers
        "rule": "custom_check", "severity": "warning", "layers": BERT_LAYERS[:8], "first_step": 3, "last_step": 30,
        "evidence": {"x": 1}, "explanation": "a flag on many long layer names", "remedies": [], "remedy_ids": []}])
    runs = {
        "dead": record(logdir, "dead-layer", ["fc1", "fc2", "out"], dead="fc2"),
        "deeper": record(logdir, "deeper", ["fc1", "fc2", "fc3", "out"]),
        "bert": record(logdir, "bert-like", BERT_LAYERS, steps=3),
        "logdir": logdir,
    }
    server = Server(logdir, tmp_path_factory.mktemp("pictures-cache") / "c")
    yield server, runs
    server.stop()


def test_update_ratio_colour_at_1e_3_is_the_middle_of_the_scale(pictures, page):
    server, _ = pictures
    page.goto(server.url + "/run?run=exploding")
    heat = full_trace(page, "fig-ratio", "heatmap")
    # The scale is drawn from zmin to zmax: 1e-3 (log10 = -3) must sit exactly halfway.
    assert heat["zmin"] < -3 < heat["zmax"]
    assert (-3 - heat["zmin"]) / (heat["zmax"] - heat["zmin"]) == pytest.approx(0.5, abs=0.01)
    # The exploding run's ratios of 0.2-0.45 are on the red ("too large") side of the centre.
    assert heat["zmax"] > -0.5


def test_a_zero_gradient_layer_is_the_shortest_bar_and_labelled_in_the_heatmap(pictures, page):
    server, runs = pictures
    page.goto(server.url + f"/run?run={runs['dead']}")
    bars = full_trace(page, "fig-flow", "flow")
    lengths = dict(zip(bars["x"], bars["y"]))
    assert set(lengths) == {"fc1", "fc2", "out"}
    assert lengths["fc2"] < min(lengths["fc1"], lengths["out"])  # zero: the shortest, not the tallest
    assert bars["text"][bars["x"].index("fc2")] == "0"
    zero = full_trace(page, "fig-grad-heat", "heatmap-zero")
    assert "fc2" in zero["y"]
    legend = page.locator("#fig-grad-heat .legendtext").all_text_contents()
    assert any("exactly 0" in text for text in legend)


def test_compare_keeps_runs_readable_beside_a_diverged_one_and_lists_runs_without_val_loss(pictures, page):
    server, runs = pictures
    page.goto(server.url + f"/compare?runs=exploding,overfit,{runs['dead']}")
    page.wait_for_function("() => { const gd = document.querySelector('#cmp-curves .js-plotly-plot');"
                           " return gd && gd._fullLayout && gd.data && gd.data.length > 3; }", timeout=30_000)
    layout = page.evaluate("""() => {
      const gd = document.querySelector('#cmp-curves .js-plotly-plot');
      const ax = gd._fullLayout.yaxis4;
      return {type: ax.type, range: ax.range,
              legend: gd._fullData.filter(t => t.showlegend).map(t => t.name),
              notes: (gd._fullLayout.annotations || []).map(a => a.text)};
    }""")
    assert layout["type"] == "log"
    low, high = layout["range"]  # log10 units: the overfit run's losses (~0.005-0.7) fill the panel
    assert low < -2 and 0 < high < 2  # not squeezed under the exploding run's 1e3+
    assert any("exploding: up to" in text for text in layout["notes"])  # it leaves the chart, named
    assert sorted(layout["legend"]) == sorted(["exploding", "overfit", "dead-layer"])
    page.locator("#cmp-curves .legendtext", has_text="dead-layer").wait_for()


def test_compare_gradient_flow_orders_layers_input_to_output(pictures, page):
    server, runs = pictures
    page.goto(server.url + f"/compare?runs={runs['dead']},{runs['deeper']}")
    page.wait_for_function("() => { const gd = document.querySelector('#cmp-flow .js-plotly-plot');"
                           " return gd && gd._fullLayout && gd._fullLayout.xaxis._categories.length >= 4; }",
                           timeout=30_000)
    order = page.evaluate("() => document.querySelector('#cmp-flow .js-plotly-plot')._fullLayout.xaxis._categories")
    assert list(order) == ["fc1", "fc2", "fc3", "out"]


def test_many_long_layer_names_get_horizontal_bars_with_room_for_each(pictures, page):
    server, runs = pictures
    page.goto(server.url + f"/run?run={runs['bert']}")
    bars = full_trace(page, "fig-flow", "flow")
    assert bars["orientation"] == "h"
    assert bars["y"] == BERT_LAYERS  # every name once, in forward order
    assert bars["height"] / len(BERT_LAYERS) >= 14  # px per bar
    ticks = page.locator("#fig-flow .yaxislayer-above .ytick text").all_text_contents()
    assert len(set(ticks)) == len(BERT_LAYERS)  # one legible label per row
    heat = full_trace(page, "fig-grad-heat", "heatmap")
    rows = page.locator("#fig-grad-heat .yaxislayer-above .ytick text").all_text_contents()
    assert sorted(rows) == sorted(set(heat["y"])) and len(rows) == len(BERT_LAYERS)  # every row named


def test_runs_page_shows_the_users_config_and_names_the_rules_of_flags(pictures, page):
    server, runs = pictures
    page.goto(server.url + "/")
    row = page.locator(f'tr[data-run="{runs["dead"]}"]')
    row.wait_for()
    assert "layers=3" in row.locator("td.config").inner_text()  # Run(config={"layers": 3})
    exploding = page.locator('tr[data-run="exploding"] .flag-badges')
    exploding.locator(".badge", has_text="critical").wait_for()
    assert "exploding_gradient" in exploding.inner_text()


def test_a_finished_run_without_accuracy_has_no_empty_half_row_and_short_runs_tick_whole_steps(pictures, page):
    server, runs = pictures
    page.goto(server.url + f"/run?run={runs['bert']}")  # 3 steps, train_loss only, finished
    full_trace(page, "fig-loss", "scalar:train_loss")
    assert not page.locator("#fig-acc").is_visible()  # no "no accuracy logged yet" half-row
    loss_box, flow_box = page.locator("#fig-loss").bounding_box(), page.locator("#fig-signals").bounding_box()
    assert loss_box["width"] > 0.9 * flow_box["width"]  # the loss chart takes the whole row
    ticks = page.locator("#fig-loss .xaxislayer-above .xtick text").all_text_contents()
    assert ticks and all(t.strip().lstrip("−-").isdigit() for t in ticks), ticks  # 0 1 2, never 0.5
    assert len(set(ticks)) == len(ticks)


def test_the_best_epoch_is_marked_without_an_overfitting_flag(pictures, page):
    server, _ = pictures
    page.goto(server.url + "/run?run=healthy")
    page.locator("#fig-loss .annotation-text", has_text="best epoch").wait_for()
    assert page.locator("#fig-loss .annotation-text", has_text="overfitting").count() == 0


def test_a_live_runs_header_duration_goes_on(pictures, page):
    from gradwatch.testing import LiveRun

    server, runs = pictures
    live = LiveRun(runs["logdir"], "live-duration", layers=2, step_interval_s=0.2)
    try:
        live.start()
        page.goto(server.url + "/run?run=live-duration")
        page.locator("#run-status", has_text="running").wait_for()
        first = page.locator("#run-duration").inner_text()
        page.wait_for_function(f"() => document.querySelector('#run-duration').textContent !== {first!r}",
                               timeout=20_000)
    finally:
        live.stop()


def test_a_lone_flag_card_spans_the_panel_at_1440_px_and_its_code_scrolls_inside_it(pictures, new_page):
    server, _ = pictures
    page = new_page(viewport=(1440, 900))
    page.goto(server.url + "/run?run=overfit")
    card = page.locator(".flag-card").first
    card.wait_for()
    cards = page.locator(".flag-card").count()
    panel = page.locator(".flag-list").bounding_box()
    columns = min(cards, int((panel["width"] + 10) // 370))  # 360 px cards, 10 px gaps
    assert card.bounding_box()["width"] > 0.9 * (panel["width"] - 10 * (columns - 1)) / columns  # no empty columns
    card.locator("details.flag-evidence summary").click() if card.locator("details.flag-evidence").count() else None
    for code in card.locator("pre.remedy-code").all():
        box, inner = code.bounding_box(), card.bounding_box()
        if box["width"]:
            assert box["x"] + box["width"] <= inner["x"] + inner["width"] + 1  # inside the card
            assert code.evaluate("e => getComputedStyle(e).overflowX") == "auto"


@pytest.mark.parametrize("run", ["long-names-flag", "bert", "exploding"])
def test_nothing_is_wider_than_a_1440_px_window(pictures, new_page, run):
    """A flag's layer chips once sat on one unbreakable line: the page was 2,500 px wide."""
    server, runs = pictures
    page = new_page(viewport=(1440, 900))
    page.goto(server.url + f"/run?run={runs.get(run, run)}")
    page.locator(".flag-card, #flags-panel p").first.wait_for()
    full_trace(page, "fig-flow", "flow")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1440

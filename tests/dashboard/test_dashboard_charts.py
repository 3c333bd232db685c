"""The Run page's chart registry (views/run_charts.py) and the layer grouping behind the big-model views.

The fetch count is a deterministic stand-in for a zoom's cost: SQLite connections opened on run
databases (the notes and the flags come from the page's stores, never from another read).
"""

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradwatch.dashboard import figures, ids
from gradwatch.dashboard import layer_groups as groups
from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.views import run_charts
from gradwatch.testing import make_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_connections(monkeypatch):
    """Counts sqlite3.connect calls on run databases (the shared diskcache is not a run read)."""
    opened = []
    real = sqlite3.connect

    def counting(database, *args, **kwargs):
        if "runlog" in str(database) or str(database).endswith(".sqlite") or "/logs/" in str(database):
            opened.append(str(database))
        return real(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting)
    return opened


def test_one_zoom_opens_the_run_once_per_chart_on_a_cold_cache(tmp_path, run_connections):
    make_run(tmp_path / "logs", "r", steps=200, layers=6, pathology="vanishing")
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    info = store.run_info("r")
    notes = [{"step": 5, "text": "hi", "author": "a", "layer": None}]
    zoomed = [chart for chart in run_charts.CHARTS if "range" in chart.inputs]
    assert len(zoomed) >= 8
    run_connections.clear()
    for chart in zoomed:
        before = len(run_connections)
        args = run_charts.ChartArgs(run_id="r", range_from=20, range_to=120, layer="net.0", notes=tuple(notes),
                                    shape={"layers": len(info["layers"])}, info=info)
        run_charts.render(chart, store, args)
        # At most one read per chart; charts drawing the same data view share its cached read.
        assert len(run_connections) - before <= 1, f"{chart.id} opened the run {len(run_connections) - before} times"
    views = {chart.view for chart in zoomed}
    assert len(run_connections) == len(views) <= len(zoomed)
    # A step change redraws only the charts that show one step: one read each.
    run_connections.clear()
    stepped = [chart for chart in run_charts.CHARTS if "step" in chart.inputs]
    for chart in stepped:
        run_charts.render(chart, store, run_charts.ChartArgs(run_id="r", step={"step": 50, "follow": False}))
    assert stepped and len(run_connections) == len(stepped)


def test_the_page_wires_every_declared_chart_and_the_browser_code_names_none(tmp_path):
    from gradwatch.dashboard.app import create_app
    from gradwatch.dashboard.config import Settings

    (tmp_path / "logs").mkdir()
    app = create_app(Settings(logdir=tmp_path / "logs", cache_dir=tmp_path / "cache"))
    outputs = " ".join(app.callback_map)
    for chart in run_charts.CHARTS:
        assert f"{chart.id}.figure" in outputs
        assert (f"{ids.live_store(chart.id)}.data" in outputs) == (chart in run_charts.LIVE_CHARTS)
    script = (REPO / "dashboard" / "assets" / "gradwatch.js").read_text()
    assert "fig-" not in script  # figure ids come from the page (ids.LIVE_CHARTS), not from the script
    exported = [chart.id for chart in run_charts.CHARTS if chart.export]
    assert ids.FIG_GRAD_HEAT in exported and ids.FIG_LOSS in exported


def test_export_holds_every_exported_chart(tmp_path):
    from gradwatch.dashboard.export import render_report

    make_run(tmp_path, "r", steps=60, layers=3)
    report = render_report(RunStore(tmp_path, None), "r")
    for chart in run_charts.CHARTS:
        assert (f'id="{chart.id}"' in report) == chart.export


LAYERS = ["wte", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.mlp.fc1", "blocks.1.attn.q", "blocks.1.attn.k",
          "blocks.1.mlp.fc1", "ln_f", "head"]


def test_layer_filter_takes_substrings_and_globs():
    assert groups.filter_layers(LAYERS, "attn") == [n for n in LAYERS if ".attn." in n]
    assert groups.filter_layers(LAYERS, "blocks.1.*") == ["blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.mlp.fc1"]
    assert groups.filter_layers(LAYERS, "*.q, head") == ["blocks.0.attn.q", "blocks.1.attn.q", "head"]
    assert groups.filter_layers(LAYERS, "HEAD") == ["head"]
    assert groups.filter_layers(LAYERS, "") == LAYERS


def test_grouping_collapses_repeated_blocks_only():
    rows = groups.groups(LAYERS)
    assert [label for label, _ in rows] == ["wte", "blocks.0.*", "blocks.1.*", "ln_f", "head"]
    assert dict(rows)["blocks.1.*"] == ["blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.mlp.fc1"]
    lesson = ["net.0", "net.1", "net.2"]  # one layer per "block": nothing changes
    assert groups.groups(lesson) == [(n, [n]) for n in lesson]
    assert not groups.should_collapse(lesson, None) and groups.should_collapse(lesson, True)
    many = [f"h.{i}.{p}" for i in range(12) for p in ("a", "b", "c", "d", "e")]
    assert groups.should_collapse(many, None) and not groups.should_collapse(many, False)


def test_group_values_combine_as_their_quantity_does():
    table = pd.DataFrame({"b.0.x": [3.0, np.nan], "b.0.y": [4.0, np.nan], "c": [1.0, 2.0]}, index=[10, 20])
    rows = groups.groups(list(table.columns))
    rss = groups.aggregate(table, "rss", rows)
    assert rss.loc[10, "b.0.*"] == pytest.approx(5.0) and np.isnan(rss.loc[20, "b.0.*"])
    assert groups.aggregate(table, "mean", rows).loc[10, "b.0.*"] == pytest.approx(3.5)
    assert groups.flagged_rows(rows, [{"rule": "dead_relu", "layers": ["b.0.y"]}]) == {"b.0.*": "dead_relu"}


def test_heatmap_has_a_row_per_layer_in_forward_order_and_marks_flagged_rows():
    steps = np.arange(0, 50, 10)
    table = pd.DataFrame({name: 10.0 ** -np.arange(5) * (i + 1) for i, name in enumerate(LAYERS)}, index=steps)
    fig = figures.layer_heatmap(table, title="t", value_label="gradient norm", flagged={"blocks.1.attn.k": "x"})
    heat = next(t for t in fig.data if t.meta == "heatmap")
    assert list(heat.y) == LAYERS and fig.layout.yaxis.autorange == "reversed"
    assert np.asarray(heat.z, dtype=float).shape == (len(LAYERS), len(steps))
    assert float(heat.z[0][1]) == pytest.approx(-1.0)  # log10 colour: 0.1 -> -1
    marked = next(t for t in fig.data if t.meta == "flagged")
    assert list(marked.y) == ["blocks.1.attn.k"]
    assert "%{y}" in heat.hovertemplate and "step %{x}" in heat.hovertemplate


def test_flow_bars_turn_horizontal_for_many_layers_and_loss_goes_log_over_three_decades():
    names = [f"blocks.{i}.fc" for i in range(40)]
    flow = {"layers": names, "grad_norm": [1.0] * 40, "grad_max_abs": [2.0] * 40, "nonfinite": [0] * 40, "step": 3}
    fig = figures.gradient_flow_chart(flow)
    assert fig.data[0].orientation == "h" and list(fig.data[0].y) == names and fig.layout.height >= 40 * 14
    few = figures.gradient_flow_chart(dict(flow, layers=names[:5], grad_norm=[1.0] * 5, grad_max_abs=[2.0] * 5,
                                           nonfinite=[0] * 5))
    assert few.data[0].orientation == "v"
    exploding = {"train_loss": {"steps": [0, 1, 2], "values": [1.0, 50.0, 2e21], "bad_steps": []}}
    assert figures.scalar_chart(exploding, "loss").layout.yaxis.type == "log"
    calm = {"train_loss": {"steps": [0, 1, 2], "values": [1.0, 0.7, 0.5], "bad_steps": []}}
    fig = figures.scalar_chart(calm, "loss")
    assert fig.layout.yaxis.type == "linear" and [b.label for b in fig.layout.updatemenus[0].buttons] == ["linear", "log"]


def test_line_chart_keeps_a_chosen_few_layers_of_a_big_model():
    order = [f"blocks.{i}.fc" for i in range(30)]
    chosen = run_charts.line_layers(order, "blocks.7.fc", [{"layers": ["blocks.20.fc"]}], "")
    assert chosen == ["blocks.0.fc", "blocks.7.fc", "blocks.20.fc", "blocks.29.fc"]
    assert run_charts.line_layers(order, None, [], "blocks.1*") == ["blocks.1.fc"] + [f"blocks.1{i}.fc" for i in range(10)]
    assert run_charts.line_layers(order[:5], None, [], "") == order[:5]


def test_run_charts_imports_only_downward():
    """views/run.py is split by job; the chart registry imports the facts it needs, never the page's
    poll, reducer or URL modules (which import it): no import cycle."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    source = Path(run_charts.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.level}
    assert imported <= {None, "data", "run_facts", "shared_reads"}, imported  # shared_reads: a leaf (no views)
    code = ("import sys, gradwatch.dashboard.views.run_charts; "
            "print(sorted(m for m in sys.modules if m.startswith('gradwatch.dashboard.views.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "views.run'" not in loaded and "run_live" not in loaded and "run_reducer" not in loaded, loaded

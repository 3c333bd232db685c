"""dashboard.figures: pure builders produce the traces, axes and marks the pages rely on."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from gradwatch.dashboard import figures
from gradwatch.trainer.runlog import schema


def _series(steps, values, bad=()):
    return {"steps": list(steps), "values": list(values), "bad_steps": list(bad)}


def test_loss_chart_train_vs_validation_with_overfitting_marks_and_notes():
    series = {"train_loss": _series(range(100), np.linspace(1, 0.1, 100)),
              "epoch_train_loss": _series([9, 19, 29], [0.8, 0.5, 0.2]),
              "val_loss": _series([9, 19, 29], [0.7, 0.5, 0.9]),
              "train_acc": _series([9], [0.5])}
    notes = [{"step": 15, "text": "<b>look</b> & see", "author": "<i>ann</i>", "layer": None}]
    fig = figures.scalar_chart(series, "loss", notes=notes,
                               overfitting={"best_step": 19, "best_epoch": 2, "onset_step": 19, "last_step": 29})
    assert isinstance(fig, go.Figure)
    keys = figures.trace_keys(fig)
    assert keys[0] == figures.NOTES_KEY
    assert keys[1:] == ["scalar:train_loss", "scalar:epoch_train_loss", "scalar:val_loss"]
    note_text = fig.data[0].hovertext[0]
    assert "&lt;b&gt;look&lt;/b&gt; &amp; see" in note_text and "<b>look" not in note_text
    assert "&lt;i&gt;ann" in note_text
    texts = [a.text for a in fig.layout.annotations]
    assert "best epoch 2" in texts and "overfitting" in texts
    assert any(s.type == "rect" for s in fig.layout.shapes)


def test_scalar_chart_marks_nonfinite_values_and_handles_missing_group():
    series = {"train_loss": _series([0, 1], [0.5, 0.4], bad=[2, 3])}
    fig = figures.scalar_chart(series, "loss")
    assert "bad:train_loss" in figures.trace_keys(fig)
    empty = figures.scalar_chart(series, "accuracy")
    assert "no accuracy logged yet" in empty.layout.annotations[0].text


def test_signals_chart_takes_the_other_scalars_and_logs_wide_gradient_norms():
    series = {"grad_norm_total": _series(range(5), [1e-2, 1, 1e2, 1e4, 1e6]), "lr": _series(range(5), [1e-3] * 5),
              "my_metric": _series(range(5), [1, 2, 3, 4, 5]), "train_loss": _series(range(5), [1] * 5)}
    fig = figures.signals_chart(series)
    keys = figures.trace_keys(fig)
    assert keys[1:] == ["scalar:grad_norm_total", "scalar:lr", "scalar:my_metric"]
    assert fig.layout.yaxis.type == "log"


def test_gradient_flow_log_scale_layers_in_order_nonfinite_in_red():
    flow = {"step": 40, "layers": ["fc1", "fc2", "fc3"], "grad_norm": [1e-8, 1e-3, float("inf")],
            "grad_max_abs": [1e-9, 1e-4, float("inf")], "nonfinite": [0, 0, 5]}
    fig = figures.gradient_flow_chart(flow, selected_layer="fc2")
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[0].x) == ["fc1", "fc2", "fc3"]
    assert fig.data[0].marker.color[2] == "#c62828"
    assert fig.data[0].text[2] == "NaN/Inf"
    assert "step 40" in fig.layout.title.text


def test_layer_lines_with_update_ratio_guide_and_log_axis():
    table = pd.DataFrame({"fc1": [1e-3, 2e-3], "fc2": [0.0, 1e-4]}, index=pd.Index([0, 10], name="step"))
    fig = figures.layer_lines_chart(table, title="ratio", y_title="r", log_y=True, guide=1e-3, selected_layer="fc2")
    assert figures.trace_keys(fig) == [figures.NOTES_KEY, "layer:fc1", "layer:fc2"]
    assert fig.data[2].y[0] is None  # zero cannot sit on a log axis
    assert fig.data[2].line.width > fig.data[1].line.width
    assert any(s.y0 == 1e-3 and s.y1 == 1e-3 for s in fig.layout.shapes)


def test_histogram_heatmap_appends_rows_per_step():
    counts = np.zeros((3, schema.HIST_LEN), dtype=np.int64)
    counts[:, schema.HIST_ZERO_INDEX + 10] = [5, 50, 500]
    fig = figures.histogram_heatmap([0, 10, 20], counts, kind="gradient", tensor="fc1.weight")
    heat = fig.data[1]
    assert heat.meta == "hist" and heat.transpose is True
    lo, hi = figures.hist_band(counts)
    assert (lo, hi) == (schema.HIST_ZERO_INDEX - 4, schema.HIST_ZERO_INDEX + 14)  # used bins + a decade
    assert len(heat.z) == 3 and len(heat.z[0]) == hi - lo + 1 and list(heat.y) == list(range(lo, hi + 1))
    assert heat.z[2][schema.HIST_ZERO_INDEX + 10 - lo] == round(float(np.log10(501)), 2)


def test_round_sig_keeps_significant_digits():
    values = np.array([123456.789, 0.000123456, -2.5e-9, 0.0, np.nan, np.inf])
    out = figures.round_sig(values, 3)
    assert out[:4].tolist() == [123000.0, 0.000123, -2.5e-9, 0.0]
    assert np.isnan(out[4]) and np.isinf(out[5])


def test_lesson_figure_loss_beside_weight_mean_and_std():
    mean = pd.DataFrame({"fc1": [0.0, 0.01]}, index=[1, 2])
    std = pd.DataFrame({"fc1": [0.1, 0.3]}, index=[1, 2])
    fig = figures.weights_by_epoch_chart({"x_label": "epoch", "mean": mean, "std": std,
                                          "loss": {"val_loss": [(1, 0.5), (2, 0.7)]}})
    names = [t.name for t in fig.data]
    assert names == ["validation loss", "fc1", "fc1"]
    assert fig.layout.xaxis.title.text == "epoch"


def test_compare_charts_overlay_runs():
    runs = [{"label": f"r{i}", "epochs": [(1, 9), (2, 19)],
             "series": {"val_loss": _series([9, 19], [0.5, 0.4 + i]), "train_loss": _series([0, 1], [1, 0.9])}}
            for i in range(3)]
    fig = figures.compare_curves_chart(runs)
    assert {t.name for t in fig.data} == {"r0", "r1", "r2"}
    assert list(fig.data[0].x) == [1, 2]  # validation loss per epoch
    flow = figures.compare_flow_chart([{"label": "a", "flow": {"step": 3, "layers": ["x"], "grad_norm": [1.0]}}], 3)
    assert fig.layout.title.text and flow.layout.barmode == "group"


def test_live_extended_traces_are_plain_json_arrays():
    """plotly.py sends numpy arrays as typed-array blobs, which Plotly.extendTraces cannot extend."""
    import json

    table = pd.DataFrame({"fc1": np.array([1e-3, 2e-3])}, index=pd.Index(np.array([0, 10]), name="step"))
    sent = json.loads(figures.layer_lines_chart(table, title="t", y_title="y").to_json())
    scalars = json.loads(figures.scalar_chart({"train_loss": _series(np.arange(3), np.ones(3))}, "loss").to_json())
    for trace in sent["data"] + scalars["data"]:
        assert isinstance(trace["x"], list) and isinstance(trace["y"], list), trace["meta"]


def test_zero_gradients_are_the_shortest_bars_and_nonfinite_the_tallest():
    lengths, text = figures.flow_bar_lengths([1e-3, 0.0, float("nan"), 1e-1], [0, 0, 0, 0])
    assert lengths[1] < lengths[0] < lengths[3] == lengths[2]
    assert text == ["", "0", "NaN/Inf", ""]
    every_zero, labels = figures.flow_bar_lengths([0.0, 0.0], [0, 0])
    assert list(every_zero) == [1e-12, 1e-12] and labels == ["0", "0"]


def test_ratio_heatmap_range_is_symmetric_around_its_midpoint():
    table = pd.DataFrame({"fc1": [0.2, 0.45], "fc2": [1e-5, 1e-4]}, index=pd.Index([0, 1], name="step"))
    fig = figures.layer_heatmap(table, title="t", value_label="r", colorscale="RdBu_r", zmid=-3.0)
    heat = next(t for t in fig.data if t.meta == "heatmap")
    assert (heat.zmin + heat.zmax) / 2 == pytest.approx(-3.0)


def test_layers_of_several_runs_merge_input_to_output():
    assert figures.merged_layer_order([["fc1", "fc2", "out"], ["fc1", "fc2", "fc3", "out"]]) == \
        ["fc1", "fc2", "fc3", "out"]
    deep = ["fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "out"]  # a mean depth alone put fc3 before fc2
    assert figures.merged_layer_order([["fc1", "fc2", "out"], ["fc1", "fc2", "out"], deep]) == deep
    assert figures.flow_is_horizontal([f"bert.encoder.layer.{i}.attention.self.query" for i in range(22)])
    assert not figures.flow_is_horizontal([f"net.{i}" for i in range(10)])


def test_one_signals_panel_per_quantity_however_many_names_it_is_logged_under():
    """An HF run logs lr and grad_norm itself; gradwatch records opt_lr and the sentinel gradient
    norm: two quantities, two panels (there were four, two of them on different axes)."""
    steps = range(1, 6)
    series = {"lr": _series(steps, [5e-4, 4e-4, 3e-4, 2e-4, 1e-4]),
              schema.OPTIMIZER_LR: _series(steps, [5e-4, 4e-4, 3e-4, 2e-4, 1e-4]),
              "grad_norm_total": _series(steps, [1e-2, 1, 1e2, 1e3, 1e4]),
              schema.SENTINEL_GRAD_NORM: _series(steps, [1e-2, 1, 1e2, 1e3, 1e4]), "my_metric": _series(steps, [1] * 5)}
    fig = figures.signals_chart(series)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["total gradient norm", "learning rate", "my metric"]
    assert fig.layout.yaxis.type == "log"  # both gradient norms on the one log axis
    axes = {t.meta: t.yaxis for t in fig.data if t.meta != figures.NOTES_KEY}
    assert axes["scalar:lr"] == axes[f"scalar:{schema.OPTIMIZER_LR}"] != axes["scalar:grad_norm_total"]
    assert axes["scalar:grad_norm_total"] == axes[f"scalar:{schema.SENTINEL_GRAD_NORM}"]


def test_compare_keeps_the_others_readable_beside_a_diverged_run():
    runs = [{"label": "ok", "series": {"train_loss": _series([0, 1, 2], [0.7, 0.5, 0.3])}},
            {"label": "boom", "series": {"train_loss": _series([0, 1, 2], [0.7, 1e5, 1e21])}}]
    fig = figures.compare_curves_chart(runs)
    assert fig.layout.yaxis4.type == "log"
    low, high = fig.layout.yaxis4.range
    assert low < np.log10(0.3) and np.log10(0.7) < high < 2
    assert any("boom: up to 1e+21" in a.text for a in fig.layout.annotations)


def test_long_layer_names_put_the_legend_below_the_lines():
    names = [f"bert.encoder.layer.{i}.attention.self.query" for i in range(8)]
    table = pd.DataFrame({n: [1e-3, 2e-3] for n in names}, index=pd.Index([0, 10], name="step"))
    fig = figures.layer_lines_chart(table, title="t", y_title="g", log_y=True)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"
    assert fig.layout.height >= 360 + 8 * figures.LEGEND_ROW_PX  # room for one name a row
    short = figures.layer_lines_chart(table.rename(columns=lambda c: c[-12:]), title="t", y_title="g")
    assert short.layout.legend.orientation == "v"  # short names keep the right-hand legend

"""The Run page's logic without a server: URL state, the view reducer, and the live protocol.

The live test plays the browser's part: it keeps the points a chart shows, applies poll deltas with the
same rule as assets/gradwatch.js (apply only if the cursor and revision match), repeats ticks, and
checks the chart ends up with exactly the run's records - no duplicates, nothing missing.
"""

import numpy as np
import pytest

from gradwatch.dashboard import ids
from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.views import run as logic
from gradwatch.dashboard.views import run_charts
from gradwatch.testing import LiveRun, make_run


def draw(store, run_id, chart_id, **view):
    """One registry chart as the page draws it: {"figure", "live"}."""
    return run_charts.render(run_charts.BY_ID[chart_id], store, run_charts.ChartArgs(run_id=run_id, **view))


def test_parse_query_ignores_malformed_values_and_round_trips():
    view = logic.parse_run_query({"run": "r1", "layer": "net.0", "step": "40", "from": "90", "to": "10"})
    assert (view.layer, view.step, view.follow, view.range_from, view.range_to) == ("net.0", 40, False, 10, 90)
    bad = logic.parse_run_query({"run": "r1", "layer": "<script>", "step": "-3", "from": "x"})
    assert (bad.layer, bad.step, bad.follow, bad.range_from) == (None, None, True, None)
    search = logic.view_query_string("r1", {"layer": "net.0", "param": "bias"}, {"step": 40, "follow": False},
                                     {"from": 10, "to": 90})
    assert search == "?run=r1&layer=net.0&param=bias&step=40&from=10&to=90"
    again = logic.parse_run_query(dict(part.split("=") for part in search[1:].split("&")))
    assert (again.layer, again.param, again.step, again.range_from, again.range_to) == ("net.0", "bias", 40, 10, 90)
    assert logic.view_query_string("r1", None, {"step": None, "follow": True}, {}) == "?run=r1"


INFO = {"layers": ["net.0", "net.1", "net.2"], "param_layers": ["net.0", "net.2"], "first_step": 0,
        "last_logged_step": 500,
        "tensors": [{"layer": "net.0", "param": "weight", "role": "param"},
                    {"layer": "net.0", "param": "bias", "role": "param"},
                    {"layer": "net.2", "param": "weight", "role": "param"}]}
STATE = {"layer": "net.0", "param": "weight", "step": None, "follow": True, "from": None, "to": None, "flag": None}


def test_reducer_events():
    view = logic.reduce_view(STATE, "layer", "net.2", info=INFO)
    assert view["layer"] == "net.2" and view["param"] == "weight"
    view = logic.reduce_view(STATE, "step", 120, info=INFO, slider_max=500)
    assert view["step"] == 120 and not view["follow"]
    view = logic.reduce_view(view, "step", 500, info=INFO, slider_max=500)
    assert view["follow"] and view["step"] is None  # dragging to the end follows again
    view = logic.reduce_view(STATE, "zoom", {"xaxis.range[0]": 10.4, "xaxis.range[1]": 99.2}, info=INFO)
    assert (view["from"], view["to"]) == (10, 100)
    view = logic.reduce_view(view, "zoom", {"xaxis2.autorange": True}, info=INFO)
    assert (view["from"], view["to"]) == (None, None)
    assert logic.reduce_view(STATE, "zoom", {"autosize": True}, info=INFO) == STATE
    view = logic.reduce_view(STATE, "to", 5, info=INFO)
    view = logic.reduce_view(view, "from", 50, info=INFO)
    assert (view["from"], view["to"]) == (5, 50)


def test_flag_click_moves_to_its_layer_step_and_range():
    flags = [{"rule": "vanishing_gradient", "layers": ["net.2", "net.0"], "first_step": 100, "last_step": 200}]
    view = logic.reduce_view(STATE, "flag", 0, flags=flags, info=INFO, slider_max=500)
    assert view["layer"] == "net.2" and view["step"] == 100 and not view["follow"]
    assert view["from"] < 100 and view["to"] > 200 and view["flag"] == 0
    # An activation layer's histograms come from the closest preceding layer with parameters.
    assert logic.histogram_layer(INFO, "net.1") == "net.0"
    assert logic.layer_params(INFO, "net.1") == ["weight", "bias"]


def test_overfitting_marks_read_evidence_defensively():
    flag = {"rule": "overfitting", "first_step": 89, "last_step": 299,
            "evidence": {"best_epoch": 3, "best_step": 89, "onset_step": 89, "rising_since_step": 119}}
    assert logic.overfitting_marks([flag]) == {"best_step": 89, "best_epoch": 3, "onset_step": 119, "last_step": 299}
    bare = logic.overfitting_marks([{"rule": "overfitting", "first_step": 5, "last_step": 9, "evidence": {}}])
    assert bare["best_step"] == 5 and bare["best_epoch"] is None
    series = {"val_loss": {"steps": [0, 100, 300], "values": [1.0, 0.5, 0.9], "bad_steps": []}}
    marked = run_charts.loss_figure({"series": series}, run_charts.ChartArgs(run_id="r", flags=(flag,)))
    assert len(marked.layout.shapes) == 2 and len(marked.layout.annotations) == 2
    # No overfitting flag: the best epoch is still marked wherever a validation loss exists (the
    # lowest one, numbered by the run's epoch scalar), without an overfitting stretch.
    series["epoch"] = {"steps": [0, 100, 300], "values": [1.0, 2.0, 3.0], "bad_steps": []}
    plain = run_charts.loss_figure({"series": series}, run_charts.ChartArgs(run_id="r"))
    assert [(s.x0, s.type) for s in plain.layout.shapes] == [(100, "line")]
    assert [a.text for a in plain.layout.annotations] == ["best epoch 2"]
    del series["val_loss"]
    assert len(run_charts.loss_figure({"series": series}, run_charts.ChartArgs(run_id="r")).layout.shapes) == 0


class FakeBrowser:
    """What the page holds: each live chart's points per trace key and its channel store."""

    def __init__(self, built: dict[str, dict]):
        self.points = {}
        self.live = {}
        for chart_id, drawn in built.items():
            for trace in drawn["figure"].data:
                if trace.meta and str(trace.meta).startswith(("scalar:", "layer:")):
                    self.points[(chart_id, trace.meta)] = [(int(x), float(y)) for x, y in zip(trace.x, trace.y)
                                                           if y is not None and np.isfinite(y)]
            self.live[chart_id] = drawn["live"]

    def apply(self, delta: dict) -> list[str]:
        """assets/gradwatch.js's rule: a payload applies only on its chart's cursor and revision."""
        applied = []
        for chart_id, d in (delta or {}).items():
            store = self.live.get(chart_id)
            if not store or d["base"] != store["cursor"] or d["rev"] != store["rev"]:
                continue
            if d["extend"]:
                data, indices = d["extend"]
                for xs, ys, index in zip(data["x"], data["y"], indices):
                    self.points.setdefault((chart_id, store["keys"][index]), []).extend(zip(xs, ys))
            self.live[chart_id] = dict(store, cursor=d["to"], appended=store["appended"] + d["added"])
            applied.append(chart_id)
        return applied


def test_live_polls_are_idempotent_and_lossless(tmp_path):
    live = LiveRun(tmp_path, "live", layers=3, steps_per_epoch=5)
    store = RunStore(tmp_path, tmp_path / "cache")
    try:
        for _ in range(6):
            live.write_step()
        live.writer.flush()
        page = FakeBrowser({chart_id: draw(store, "live", chart_id, layer="net.0")
                            for chart_id in (ids.FIG_LOSS, ids.FIG_ACC, ids.FIG_GRAD_TIME)})
        meta = {"status": "running", "running": True, "ticks": 0}
        for _round in range(4):
            for _ in range(3):
                live.write_step()
            live.writer.flush()
            first = logic.poll_impl(store, "live", page.live, meta)
            repeat = logic.poll_impl(store, "live", page.live, meta)  # overlapping tick
            assert first["delta"] == repeat["delta"]
            assert set(page.apply(first["delta"])) >= {ids.FIG_LOSS, ids.FIG_GRAD_TIME}
            assert page.apply(repeat["delta"]) == []  # already applied: ignored
            meta = first["meta"]
        assert meta["running"] and meta["last_logged"] == live.step - 1
        losses = [step for step, _ in page.points[(ids.FIG_LOSS, "scalar:train_loss")]]
        assert losses == list(range(live.step))
        grads = [step for step, _ in page.points[(ids.FIG_GRAD_TIME, "layer:net.0")]]
        assert grads == list(range(live.step))
        val = page.points[(ids.FIG_LOSS, "scalar:val_loss")]
        assert [s for s, _ in val] == [4, 9, 14]
    finally:
        live.stop()
    final = logic.poll_impl(store, "live", page.live, meta)
    assert final["meta"]["status"] == "finished" and not final["meta"]["running"]
    assert "flags" in final["refresh"]  # the status changed: the flags panel is redrawn


def test_poll_asks_for_a_redraw_when_a_new_scalar_appears(tmp_path):
    live = LiveRun(tmp_path, "live", layers=2, steps_per_epoch=1000)
    store = RunStore(tmp_path, None)
    try:
        live.write_step()
        live.writer.flush()
        loss = draw(store, "live", ids.FIG_LOSS)["live"]
        signals = draw(store, "live", ids.FIG_SIGNALS)["live"]
        live.write_step({"test_loss": 1.0})
        live.writer.flush()
        result = logic.poll_impl(store, "live", {ids.FIG_LOSS: loss, ids.FIG_SIGNALS: signals}, {})
        assert ids.FIG_LOSS in result["refresh"] and ids.FIG_LOSS not in result["delta"]
        assert ids.FIG_SIGNALS in result["delta"] and ids.FIG_SIGNALS not in result["refresh"]  # its own names only
        live.write_step({"my_metric": 2.0})
        live.writer.flush()
        signals = dict(signals, cursor=result["delta"][ids.FIG_SIGNALS]["to"])
        result = logic.poll_impl(store, "live", {ids.FIG_SIGNALS: signals}, {})
        assert ids.FIG_SIGNALS in result["refresh"]
    finally:
        live.stop()


def test_hist_channel_appends_new_columns(tmp_path):
    live = LiveRun(tmp_path, "live", layers=2)
    store = RunStore(tmp_path, None)
    try:
        for _ in range(3):
            live.write_step()
        live.writer.flush()
        info = store.run_info("live")
        built = draw(store, "live", ids.FIG_HIST_GRAD, layer="net.0", param="weight", info=info)["live"]
        assert built["cursor"] == 2 and built["tensor"] == "net.0.weight" and built["kind"] == "grad"
        live.write_step()
        live.writer.flush()
        result = logic.poll_impl(store, "live", {ids.FIG_HIST_GRAD: built}, {})
        delta = result["delta"][ids.FIG_HIST_GRAD]
        assert delta["base"] == 2 and delta["to"] == 3
        data, indices = delta["extend"]
        lo, hi = built["band"]
        assert data["x"] == [[3]] and len(data["z"][0][0]) == hi - lo + 1 and indices == [1]
    finally:
        live.stop()


def test_heatmaps_are_redrawn_not_extended_while_statistics_arrive(tmp_path):
    live = LiveRun(tmp_path, "live", layers=3)
    store = RunStore(tmp_path, None)
    try:
        for _ in range(4):
            live.write_step()
        live.writer.flush()
        heat = draw(store, "live", ids.FIG_GRAD_HEAT)["live"]
        live.write_step()
        live.writer.flush()
        quiet = logic.poll_impl(store, "live", {ids.FIG_GRAD_HEAT: heat}, {"ticks": 0})
        assert ids.FIG_GRAD_HEAT not in quiet["refresh"]  # only every REDRAW_TICKS-th slow tick
        due = logic.poll_impl(store, "live", {ids.FIG_GRAD_HEAT: heat}, {"ticks": logic.REDRAW_TICKS - 1})
        assert ids.FIG_GRAD_HEAT in due["refresh"] and ids.FIG_GRAD_HEAT not in due["delta"]
    finally:
        live.stop()


def test_note_impl_validates_and_refuses_when_read_only(tmp_path):
    make_run(tmp_path, "r", steps=20)
    store = RunStore(tmp_path, None)
    refused = logic.add_note_impl(store, read_only=True, run_id="r", text="hi", author="a", step=3, layer=None)
    assert not refused["ok"] and "read-only" in refused["message"]
    assert store.notes("r") == []
    bad = logic.add_note_impl(store, read_only=False, run_id="r", text="hi", author="a", step="x", layer=None)
    assert not bad["ok"] and "step" in bad["message"]
    ok = logic.add_note_impl(store, read_only=False, run_id="r", text="hi", author="", step=3, layer="net.0")
    assert ok["ok"] and store.notes("r")[0]["author"] == "anonymous"
    missing = logic.add_note_impl(store, read_only=False, run_id="../x", text="hi", author="a", step=None,
                                  layer=None)
    assert not missing["ok"] and "invalid run id" in missing["message"]


def test_run_page_impl_reports_bad_ids_and_normalises_the_view(tmp_path):
    make_run(tmp_path, "r", steps=50)
    store = RunStore(tmp_path, None)
    page = logic.run_page_impl(store, logic.parse_run_query({"run": "nope"}))
    assert "no run 'nope'" in page["error"]
    page = logic.run_page_impl(store, logic.parse_run_query({"run": "r", "layer": "zzz", "step": "9999"}))
    assert page["error"] is None and page["view"].layer == "net.0" and page["view"].step == 49


@pytest.mark.parametrize("pathology", ["exploding", "vanishing", "overfit"])
def test_every_registered_chart_builds(tmp_path, pathology):
    make_run(tmp_path, "r", steps=120, pathology=pathology, layers=5)
    store = RunStore(tmp_path, None)
    info = store.run_info("r")
    flags = logic.flags_impl(store, "r")["flags"]
    assert flags
    args = run_charts.ChartArgs(run_id="r", range_from=10, range_to=60, layer="net.2", flags=tuple(flags),
                                step={"step": 33, "follow": False}, info=info)
    for chart in run_charts.CHARTS:
        drawn = run_charts.render(chart, store, args)
        if chart.id == ids.FIG_STEP_NORMS:  # a synthetic run records no every-step norms: it says so
            assert "no every-step gradient norms" in drawn["figure"].layout.annotations[0].text
        else:
            assert drawn["figure"].data, chart.id
        assert (drawn["live"] is not None) == (chart in run_charts.LIVE_CHARTS)
    assert run_charts.render(run_charts.BY_ID[ids.FIG_FLOW], store, args)["figure"].layout.title.text.endswith("33")


def test_a_line_chart_drawn_before_the_first_statistics_is_redrawn_when_they_arrive(tmp_path):
    live = LiveRun(tmp_path, "live", layers=2)
    store = RunStore(tmp_path, None)
    try:
        empty = draw(store, "live", ids.FIG_GRAD_TIME)["live"]  # nothing logged yet: an empty chart
        live.write_step()
        live.writer.flush()
        result = logic.poll_impl(store, "live", {ids.FIG_GRAD_TIME: empty}, {})
        assert ids.FIG_GRAD_TIME in result["refresh"] and ids.FIG_GRAD_TIME not in result["delta"]
    finally:
        live.stop()

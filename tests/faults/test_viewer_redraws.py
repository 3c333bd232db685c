"""What a viewer's browser asks of the server after a poll: a periodic re-diagnosis that finds the
same flags must not set the flags store, since six charts take it as an Input and the browser
redraws each of them whenever it is set (dash-renderer does not compare values)."""

from __future__ import annotations

from gradwatch.dashboard.app import create_app
from gradwatch.dashboard.config import Settings
from gradwatch.testing import make_run
from tests.faults.test_step_values import call_callback


def test_an_unchanged_diagnosis_leaves_the_flags_store_alone(tmp_path):
    run_dir = make_run(tmp_path / "logs", "flagged", steps=60, pathology="exploding")
    app = create_app(Settings(logdir=tmp_path / "logs", cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    state = {"run-id": run_dir.name, "flags-data": None}
    status, first = call_callback(client, app, "flags-panel", {"refresh-flags": 1}, state, "refresh-flags.data")
    assert status == 200
    flags = first["response"]["flags-data"]["data"]
    assert flags  # the exploding run is flagged: the store is set the first time
    status, again = call_callback(client, app, "flags-panel", {"refresh-flags": 2},
                                  dict(state, **{"flags-data": flags}), "refresh-flags.data")
    assert status == 200 and "flags-panel" in again["response"]
    assert "flags-data" not in again["response"]  # unchanged: the six flag-taking charts are not redrawn
    charts_taking_flags = [spec for spec in app.callback_map.values()
                           if any(i["id"] == "flags-data" for i in spec["inputs"])]
    assert len(charts_taking_flags) >= 1


def test_viewers_redrawing_the_same_chart_for_the_same_data_share_one_figure_build(tmp_path):
    import dataclasses

    from gradwatch.dashboard.data import RunStore
    from gradwatch.dashboard.views import run_charts

    run_dir = make_run(tmp_path / "logs", "flow", steps=40)
    store = RunStore(tmp_path / "logs", None)
    info = store.run_info(run_dir.name)
    builds = []
    base = run_charts.BY_ID["fig-flow"]

    def counting(data, args):
        builds.append(args.layer)
        return base.figure(data, args)

    chart = dataclasses.replace(base, id="fig-flow-counted", figure=counting)
    args = run_charts.ChartArgs(run_id=run_dir.name, layer=info["param_layers"][0], step={"step": None, "follow": True},
                                shape={"layers": len(info["layers"])})
    drawn = [run_charts.render(chart, store, args) for _ in range(10)]  # ten viewers, one new step
    assert len(builds) == 1 and all(d["figure"] is drawn[0]["figure"] for d in drawn)
    run_charts.render(chart, store, dataclasses.replace(args, layer=info["param_layers"][-1]))
    run_charts.render(chart, store, dataclasses.replace(args, step={"step": 5, "follow": False}))
    assert len(builds) == 3  # another view or other data is another figure, never a kept one

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

"""Step values are validated at every entry: a crafted `sel-step` store (NaN, inf, 2**70, strings,
dicts, lists) never reaches int() in a chart callback; `run.log(2**63)` and `run.add_flag` with a
step beyond SQLite's range or a flag without a rule are refused in one line at the call, and the
run goes on and finishes normally (the writer thread never sees them)."""

from __future__ import annotations

import json
import math

import pytest

from gradwatch.dashboard.app import create_app
from gradwatch.dashboard.config import Settings
from gradwatch.dashboard.views import run as run_logic
from gradwatch.testing import make_run
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader


def call_callback(client, app, output: str, inputs: dict, state: dict, changed: str):
    """POST one callback as the browser does (a single output goes as an object, not a list)."""
    key = next(k for k in app.callback_map if k.startswith(output + ".") or ("." + output + ".") in k)
    spec = app.callback_map[key]
    outputs = [{"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
               for part in key.strip(".").split("...")]
    body = {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [dict(i, value=inputs.get(i["id"])) for i in spec["inputs"]],
            "state": [dict(s, value=state.get(s["id"])) for s in spec["state"]], "changedPropIds": [changed]}
    response = client.post("/_dash-update-component", json=body)
    return response.status_code, (response.get_json() if response.data else None)

CRAFTED_STEPS = [math.nan, math.inf, -math.inf, 2**70, -(2**70), "abc", "1e400", {"a": 1}, [1, 2], True]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    run_dir = make_run(logdir, "good", steps=30)
    return create_app(Settings(logdir=logdir, cache_dir=tmp_path_factory.mktemp("cache"))), run_dir.name


@pytest.mark.parametrize("step", CRAFTED_STEPS, ids=repr)
def test_a_crafted_sel_step_never_gives_a_500(served, step):
    app, run_id = served
    client = app.server.test_client()
    for follow in (False, "yes", None):
        status, body = call_callback(client, app, "fig-flow", {"sel-step": {"step": step, "follow": follow}},
                                     {"run-id": run_id}, "sel-step.data")
        assert status in (200, 204), (step, body)
    status, body = call_callback(client, app, "fig-flow", {"sel-step": step}, {"run-id": run_id}, "sel-step.data")
    assert status in (200, 204), (step, body)
    for sel_step in ({"step": step, "follow": False}, step):
        chosen = run_logic.step_selection(sel_step)["step"]
        assert chosen is None or (isinstance(chosen, int) and 0 <= chosen <= 2**62)


@pytest.mark.parametrize("step", [2**63, 2**62 + 1, -1, 1.5, "3", None])
def test_run_log_refuses_a_step_sqlite_cannot_store_and_the_run_goes_on(tmp_path, step):
    with Run(tmp_path, name="steps") as run:
        run.log(0, loss=1.0)
        with pytest.raises(ValueError, match="step must be an integer") as raised:
            run.log(step, loss=2.0)
        assert "\n" not in str(raised.value)
        run.log(1, loss=0.5)
    with RunReader(run.path) as reader:
        assert reader.status() == "finished"
        df, _ = reader.scalars(names=["loss"])
    assert df["step"].tolist() == [0, 1]


@pytest.mark.parametrize("flag, words", [
    ({"severity": "info", "layers": []}, "'rule'"),
    ({"rule": "mine", "severity": ["critical"]}, "'severity'"),
    ({"rule": "mine", "severity": "info", "evidence": [1]}, "'evidence'"),
    ("not a dict", "object"),
])
def test_add_flag_refuses_a_malformed_flag_at_the_call(tmp_path, flag, words):
    with Run(tmp_path, name="flags") as run:
        with pytest.raises(ValueError, match=words):
            run.add_flag(3, flag)
        with pytest.raises(ValueError, match="step must be an integer"):
            run.add_flag(2**63, {"rule": "mine", "severity": "info"})
        run.add_flag(4, {"rule": "mine", "severity": "info", "evidence": {"x": 1.0}})
    with RunReader(run.path) as reader:
        assert reader.status() == "finished" and reader.meta["error"] is None
        flags, _ = reader.flags()
    assert [(f["rule"], f["raised_step"]) for f in flags] == [("mine", 4)]
    json.dumps(flags)

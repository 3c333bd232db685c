"""Every kind of corrupt record, and metadata a user's own code could write, gives one clear
per-run error: in the CLI (inspect, diagnose, export: one line, exit 2, never "internal error"), on
the Runs and Compare pages (an error row; the other runs unaffected) and on the Run page and its
callbacks (an error box, never an HTTP 500 or a raw exception)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from gradwatch import cli
from gradwatch.dashboard.app import create_app
from gradwatch.dashboard.config import Settings
from gradwatch.dashboard.context import AppContext
from gradwatch.dashboard.pages import compare as compare_page
from gradwatch.dashboard.pages import run as run_page
from gradwatch.dashboard.views import run as run_logic
from gradwatch.testing import make_run
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import schema
from tests.dashboard.test_dashboard_app import call_callback

FLAG = {"rule": "custom_check", "severity": "info", "layers": [], "first_step": 3, "last_step": 3,
        "evidence": {"x": 1}, "explanation": "a user flag", "remedies": [], "remedy_ids": []}

# kind -> (SQL that corrupts one record, words the error names)
# The latest gradient histogram of the first parameter: what the Run page and the export draw first.
FIRST_HIST = ("seq = (SELECT MAX(s.seq) FROM stats s JOIN tensors t ON t.id = s.tensor_id WHERE t.role = 'param'"
              " AND t.name = (SELECT name FROM tensors WHERE role = 'param' ORDER BY ord, id LIMIT 1)"
              " AND s.kind = 0 AND s.hist IS NOT NULL)")
CORRUPTIONS = {
    "hist-blob": (f"UPDATE stats SET hist = x'01ff00' WHERE {FIRST_HIST}", "histogram"),
    "hist-zlib": (f"UPDATE stats SET hist = x'78da0001' WHERE {FIRST_HIST}", "histogram"),
    "flag-body": ("UPDATE flags SET body = '{not json'", "flag #"),
    "tensor-shape": ("UPDATE tensors SET shape = '\"wide\"' WHERE id = (SELECT MIN(id) FROM tensors)", "shape"),
    "meta-json": ("UPDATE meta SET value = '{broken' WHERE key = 'started'", "metadata 'started'"),
    "meta-started": ("UPDATE meta SET value = '\"2026-12-01 09:00\"' WHERE key = 'started'", "metadata 'started'"),
    "meta-pid": (f"UPDATE meta SET value = '{10**30}' WHERE key = 'pid'", "metadata 'pid'"),
    "meta-status": ("UPDATE meta SET value = '\"exploded\"' WHERE key = 'status'", "metadata 'status'"),
    "meta-huge-int": ("UPDATE meta SET value = '1" + "0" * 400 + "' WHERE key = 'heartbeat'", "metadata 'heartbeat'"),
}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    template = make_run(root / "template", "good", steps=40, flags=[FLAG])
    for kind, (sql, _) in CORRUPTIONS.items():
        path = root / kind
        shutil.copytree(template, path)
        conn = sqlite3.connect(path / schema.DB_FILENAME)
        conn.execute(sql)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'run_id'", (json.dumps(kind),))
        conn.commit()
        conn.close()
    shutil.copytree(template, root / "good")
    shutil.rmtree(root / "template")
    return root


@pytest.fixture(scope="module")
def ctx(logdir, tmp_path_factory):
    return AppContext.from_settings(Settings(logdir=logdir, cache_dir=tmp_path_factory.mktemp("cache")))


def _cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(list(args))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_cli_reports_a_corrupt_record_in_one_line(kind, logdir, tmp_path, capsys):
    _, words = CORRUPTIONS[kind]
    errors = []
    for args in (["inspect", str(logdir / kind)], ["diagnose", str(logdir / kind)],
                 ["export", str(logdir / kind), "-o", str(tmp_path / "r.html")]):
        code, err = _cli(capsys, *args)
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        assert code in (0, 2), (args, code, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
            errors.append(err)
    # export reads every record, so each corruption is found there at least
    assert errors and all(words in e and kind in e for e in errors), errors


def test_runs_page_lists_every_corrupt_run_as_an_error_row_and_the_good_one_normally(ctx):
    summaries, pending = ctx.store.summaries(budget_s=60)
    by_id = {s["run_id"]: s for s in summaries}
    assert pending == 0 and by_id["good"]["error"] is None and by_id["good"]["status"] == "finished"
    for kind in ("meta-json", "meta-started", "meta-pid", "meta-status", "meta-huge-int", "flag-body"):  # what a listing reads
        assert by_id[kind]["error"] and CORRUPTIONS[kind][1] in by_id[kind]["error"], (kind, by_id[kind])
    page = str(__import__("gradwatch.dashboard.pages.runs", fromlist=["layout"]).layout(ctx))
    assert "Cannot list runs" not in page and "not supported between" not in page


def test_compare_page_shows_per_run_errors_beside_the_good_run(ctx):
    ids = ",".join(["good", *sorted(CORRUPTIONS)])
    page = str(compare_page.layout(ctx, runs=ids))
    assert "failed to load" not in page
    data = ctx.store.compare_runs(["good", "meta-started", "meta-pid"])
    assert [r["info"]["run_id"] for r in data["runs"]] == ["good"]
    assert "metadata 'started'" in data["errors"]["meta-started"] and "metadata 'pid'" in data["errors"]["meta-pid"]


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_run_page_and_its_callbacks_answer_without_a_500(kind, ctx, logdir, tmp_path):
    page = str(run_page.layout(ctx, run=kind))
    assert "failed to load" not in page and "Traceback" not in page
    app = create_app(ctx.settings)
    client = app.server.test_client()
    info = {"run_id": kind, "layers": ["net.0"], "param_layers": ["net.0"], "tensors": [
        {"name": "net.0.weight", "layer": "net.0", "param": "weight", "role": "param"}], "first_step": 0,
        "last_logged_step": 39}
    status, body = call_callback(client, app, "flags-panel", {}, {"run-id": kind}, "refresh-flags.data")
    assert status == 200, body
    assert "Diagnosing" not in json.dumps(body)  # the panel is answered, not left waiting
    status, body = call_callback(client, app, "fig-hist-grad", {"sel-layer": {"layer": "net.0", "param": "weight"}},
                                 {"run-id": kind, "run-info": info}, "sel-layer.data")
    assert status in (200, 204), body


def test_huge_and_crafted_step_values_clamp_instead_of_overflowing(ctx):
    for query in ({"to": "99999999999999999999"}, {"step": "1e400"}, {"from": "-5", "to": "nan"},
                  {"step": "99999999999999999999999999999", "from": "1e308", "to": "inf"}):
        page = str(run_page.layout(ctx, run="good", **query))
        assert "failed to load" not in page and "OverflowError" not in page, query
    from gradwatch.dashboard.views import run_charts

    info = ctx.store.run_info("good")
    for rng in ({"from": 10**30, "to": 10**40}, {"from": "abc", "to": [1]}, {"from": 1e400, "to": None}, "x"):
        args = run_page.chart_args("good", {"range": rng if isinstance(rng, dict) else {}}, info=info)
        assert args.range_from is None or 0 <= args.range_from <= 2**62
        for chart in run_charts.CHARTS:
            assert run_charts.render(chart, ctx.store, args)  # no OverflowError from SQLite
    assert run_logic.step_bounds({"from": 10**40, "to": 5}) == (5, 2**62)


def test_set_meta_refuses_the_keys_gradwatch_keeps_and_the_run_stays_listable(tmp_path, ctx):
    with Run(tmp_path, name="user") as run:
        with pytest.raises(ValueError, match="started"):
            run.set_meta(started="2026-12-01 09:00")
        with pytest.raises(ValueError, match="config"):
            run.set_meta(config="not a dict")
        run.set_meta(started_at="2026-12-01 09:00")  # the user's own key is kept as given
    store = AppContext.from_settings(Settings(logdir=tmp_path, cache_dir=tmp_path / ".cache")).store
    summaries, _ = store.summaries(budget_s=60)
    assert [s["status"] for s in summaries] == ["finished"] and summaries[0]["error"] is None


def test_crafted_view_state_from_a_callback_is_sanitised(ctx):
    for sel_range, sel_step in (({"from": "abc", "to": 1e400}, {"step": "1e400", "follow": False}),
                                ({"from": 10**40, "to": -3}, {"step": [1], "follow": False}), ("x", "y")):
        query = run_logic.view_query_string("good", {"layer": "net.0"}, sel_step, sel_range)
        assert query.startswith("?run=good")
        assert "inf" not in query and "abc" not in query
    view = run_logic.reduce_view({"step": None, "follow": True, "from": None, "to": None}, "step", "1e400",
                                 slider_max="oops")
    assert view["step"] == 2**62 and view["follow"] is False
    assert run_logic.reduce_view({"step": 3, "follow": False}, "step", "not a number")["step"] == 3

"""Every field of every record type is checked on read: a crafted run folder (a flag whose severity
is a list, evidence that is a list, layers or remedies that are numbers, a start time in the year
33658, a note whose author or a tensor whose name is a blob) is that run's one-line
error. The Runs page still lists every other run, the Run page and its callbacks answer without a
500, and `gradwatch inspect` / `diagnose` say what is wrong in one line."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from gradwatch import cli
from gradwatch.dashboard.app import create_app
from gradwatch.dashboard.config import Settings
from gradwatch.dashboard.context import AppContext
from gradwatch.dashboard.pages import run as run_page
from gradwatch.dashboard.pages import runs as runs_page
from gradwatch.testing import make_run
from gradwatch.trainer.runlog import schema
from tests.dashboard.test_dashboard_app import call_callback

FLAG = {"rule": "custom_check", "severity": "info", "layers": ["net.0"], "first_step": 3, "last_step": 3,
        "evidence": {"x": 1}, "explanation": "a user flag", "remedies": [], "remedy_ids": []}


def _flag(**changes) -> str:
    return json.dumps(dict(FLAG, **changes))


# kind -> (SQL that plants the crafted field, words the one-line error names)
CRAFTED = {
    "flag-severity-list": (f"UPDATE flags SET body = '{_flag(severity=['critical'])}'", "'severity'"),
    "flag-evidence-list": (f"UPDATE flags SET body = '{_flag(evidence=[1, 2])}'", "'evidence'"),
    "flag-layers-int": (f"UPDATE flags SET body = '{_flag(layers=7)}'", "'layers'"),
    "flag-remedies-int": (f"UPDATE flags SET body = '{_flag(remedies=3)}'", "'remedies'"),
    "flag-step-text": (f"UPDATE flags SET body = '{_flag(first_step='3')}'", "'first_step'"),
    "flag-raised-step": ("UPDATE flags SET raised_step = 'soon'", "flag #"),
    "meta-started-1e12": ("UPDATE meta SET value = '1e12' WHERE key = 'started'", "metadata 'started'"),
    "meta-ended-negative": ("UPDATE meta SET value = '-5' WHERE key = 'ended'", "metadata 'ended'"),
    "meta-results-list": ("INSERT OR REPLACE INTO meta(key, value) VALUES ('results', '[1]')", "metadata 'results'"),
    "note-author-int": ("INSERT INTO notes(wall, author, step, layer, text) VALUES (1.0e9, x'00ff', NULL, NULL, 'x')",
                        "'author'"),
    "scalar-step-text": ("UPDATE scalars SET step = 'soon' WHERE seq = (SELECT MIN(seq) FROM scalars WHERE name = 'val_loss')",
                         "wrong type"),
    "scalar-value-text": ("UPDATE scalars SET value = 'high' WHERE seq = (SELECT MIN(seq) FROM scalars"
                          " WHERE name = 'val_loss')", "wrong type"),
    "steps-step-text": ("UPDATE steps SET step = 'later' WHERE seq = (SELECT MAX(seq) FROM steps)", "wrong type"),
    "tensor-name-int": ("UPDATE tensors SET name = x'0102' WHERE id = (SELECT MIN(id) FROM tensors)", "'name'"),
}
LISTED = ("scalar-step-text", "scalar-value-text", "flag-severity-list", "flag-evidence-list", "flag-layers-int", "flag-remedies-int", "flag-step-text",
          "flag-raised-step", "meta-started-1e12", "meta-ended-negative", "meta-results-list")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    template = make_run(root / "template", "good", steps=40, flags=[FLAG])
    for kind, (sql, _) in CRAFTED.items():
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


def test_the_runs_page_lists_each_crafted_run_as_its_own_error_row(ctx):
    summaries, pending = ctx.store.summaries(budget_s=60)
    by_id = {s["run_id"]: s for s in summaries}
    assert pending == 0 and by_id["good"]["error"] is None and by_id["good"]["status"] == "finished"
    for kind in LISTED:
        error = by_id[kind]["error"]
        assert error and CRAFTED[kind][1] in error and "\n" not in error, (kind, by_id[kind])
    page = str(runs_page.layout(ctx))
    assert "Cannot list runs" not in page


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_cli_inspect_diagnose_and_export_say_what_is_wrong_in_one_line(kind, logdir, tmp_path, capsys):
    words = CRAFTED[kind][1]
    refused = []
    for args in (["inspect", str(logdir / kind)], ["diagnose", str(logdir / kind)],
                 ["export", str(logdir / kind), "-o", str(tmp_path / "r.html")]):
        code = cli.main(args)
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        assert code in (0, 2), (args, code, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and kind in err, (args, err)
            assert words in err or "malformed records" in err, (args, err)
            refused.append(args[0])
    assert "export" in refused  # the export reads every record
    if kind.startswith(("flag-", "meta-", "scalar-")):
        assert "diagnose" in refused


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_the_run_page_and_its_flag_panel_answer_without_a_500(kind, ctx):
    page = str(run_page.layout(ctx, run=kind))
    assert "Traceback" not in page and "failed to load" not in page
    app = create_app(ctx.settings)
    client = app.server.test_client()
    status, body = call_callback(client, app, "flags-panel", {}, {"run-id": kind}, "refresh-flags.data")
    assert status == 200, body
    assert client.get(f"/run?run={kind}").status_code == 200

"""Read-only media open read-only and display normally; every log-directory entry that is not a
readable run gets an error row; folder names with spaces or non-ASCII letters export; run names
that look like HTML are shown as text in figures and in the HTML export."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from gradwatch import cli
from gradwatch.dashboard.config import Settings
from gradwatch.dashboard.context import AppContext
from gradwatch.dashboard.export import export_run
from gradwatch.dashboard.pages import run as run_page
from gradwatch.dashboard.views import run as run_logic
from gradwatch.testing import make_run
from gradwatch.trainer.runlog import RunReader, add_note, list_runs

from .conftest import read_only


def _ctx(logdir, cache):
    return AppContext.from_settings(Settings(logdir=logdir, cache_dir=cache))


def test_runs_on_read_only_media_open_read_only_and_display_normally(tmp_path):
    logdir = tmp_path / "archive"
    make_run(logdir, "archived", steps=40)
    make_run(logdir, "second", steps=20)
    with read_only(logdir) as how:
        entries = {e.run_id: e for e in list_runs(logdir)}
        assert all(e.error is None and e.status == "finished" for e in entries.values()), entries
        with RunReader(logdir / "archived") as reader:
            assert reader.access_mode in ("ro", "immutable"), how
            assert len(reader.scalars()[0]) > 0
        ctx = _ctx(logdir, tmp_path / "cache")
        summaries, _ = ctx.store.summaries(budget_s=60)
        assert {s["run_id"]: s["error"] for s in summaries} == {"archived": None, "second": None}
        page = str(run_page.layout(ctx, run="archived"))
        assert "cannot be shown" not in page and "unable to open" not in page
        from gradwatch.dashboard.views import run_charts

        args = run_page.chart_args("archived", {}, info=ctx.store.run_info("archived"))
        assert all(run_charts.render(chart, ctx.store, args) for chart in run_charts.CHARTS)
        with pytest.raises(ValueError, match="read-only"):
            add_note(logdir / "archived", "a note")
        result = run_logic.add_note_impl(ctx.store, read_only=False, run_id="archived", text="hi", author="a",
                                         step=None, layer=None)
        assert not result["ok"] and "read-only" in result["message"]


def test_every_entry_that_is_not_a_run_gets_an_error_row(tmp_path):
    logdir = tmp_path / "logs"
    make_run(logdir, "real", steps=20)
    (logdir / "notes.txt").write_text("not a run")
    os.symlink(logdir / "real", logdir / "link-to-real")
    os.symlink(tmp_path / "nowhere", logdir / "dangling")
    outside = tmp_path / "outside"
    make_run(outside, "elsewhere", steps=20)
    os.symlink(outside / "elsewhere", logdir / "link-outside")
    store = _ctx(logdir, tmp_path / "cache").store
    summaries, _ = store.summaries(budget_s=60)
    errors = {s["run_id"]: s["error"] for s in summaries}
    assert errors["real"] is None
    assert "plain file" in errors["notes.txt"]
    for link in ("link-to-real", "dangling", "link-outside"):
        assert "symbolic link" in errors[link], errors
    listed = {e.run_id: e.error for e in list_runs(logdir)}
    assert set(listed) == set(errors) and listed["real"] is None and "symbolic link" in listed["link-outside"]


def test_folders_with_spaces_and_unicode_are_exportable(tmp_path, capsys):
    logdir = tmp_path / "logs"
    source = make_run(logdir, "plain", steps=20)
    for name in ("my run 1", "lauf-überprüfung-日本"):
        shutil.copytree(source, logdir / name)
        out = export_run(logdir / name, tmp_path / f"{name}.html")
        assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        assert cli.main(["export", str(logdir / name), "-o", str(tmp_path / "cli.html")]) == 0
        assert cli.main(["inspect", str(logdir / name)]) == 0
    capsys.readouterr()
    summaries, _ = _ctx(logdir, tmp_path / "cache").store.summaries(budget_s=60)
    assert "export" in {s["run_id"]: s["error"] for s in summaries}["my run 1"]  # says how to get it out


def test_html_in_a_run_name_is_text_in_legends_hover_and_the_export(tmp_path):
    import sqlite3

    logdir = tmp_path / "logs"
    path = make_run(logdir, "evil", steps=30)
    bad = '<a href="https://attacker.example/">click</a>'
    conn = sqlite3.connect(path / "run.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'name'", (json.dumps(bad),))
    conn.execute("UPDATE tensors SET layer = ? WHERE id = (SELECT MIN(id) FROM tensors)", (bad,))
    conn.commit()
    conn.close()
    make_run(logdir, "plain", steps=30)
    ctx = _ctx(logdir, tmp_path / "cache")
    from gradwatch.dashboard.views import compare as compare_logic

    figures = []
    from gradwatch.dashboard.views import run_charts

    args = run_page.chart_args("evil", {}, info=ctx.store.run_info("evil"))
    figures += [run_charts.render(chart, ctx.store, args)["figure"] for chart in run_charts.CHARTS]
    compared = compare_logic.compare_impl(ctx.store, ["evil", "plain"], None)
    figures += [compared["curves"], compared["flow"]]
    shown = []  # everything plotly renders as text (trace `meta` keys are never shown)
    for fig in figures:
        plain = fig.to_plotly_json()
        plain["layout"].pop("meta", None)
        for trace in plain["data"]:
            trace.pop("meta", None)
            trace.pop("legendgroup", None)
        shown.append(plain)
    text = json.dumps(shown, default=str)
    assert "<a href" not in text and "&lt;a href" in text
    report = export_run(path, tmp_path / "evil.html").read_text(encoding="utf-8")
    body = report.split("</script>", 1)[1]  # after the inlined plotly.js
    assert '<a href="https://attacker.example/">' not in body.replace("\\u003c", "<").replace("\\u003e", ">")

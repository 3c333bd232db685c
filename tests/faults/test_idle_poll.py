"""Load: a live poll that finds the run's files unchanged opens no database (two stat() calls), and
one that finds them changed does the full check."""

from __future__ import annotations

from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.views import run as run_logic
from gradwatch.testing import LiveRun
from gradwatch.trainer.runlog import add_note


def test_a_poll_that_finds_nothing_new_runs_no_query(tmp_path, monkeypatch):
    live = LiveRun(tmp_path, "live", layers=2)
    live.write_step()
    live.stop(status="running")  # its writer closed: nothing changes the files until we do
    store = RunStore(tmp_path, None)
    run_id = live.path.name
    opened = []
    real_open = store.folders.open  # every part reads through the one RunFolders

    def counting_open(rid):
        opened.append(rid)
        return real_open(rid)

    monkeypatch.setattr(store.folders, "open", counting_open)
    first = run_logic.poll_impl(store, run_id, {}, {"ticks": 0}, slow_every=1)
    assert opened == [run_id] and first["meta"]["status"] == "running"
    meta = first["meta"]
    for _ in range(run_logic.IDLE_CHECK_TICKS - 2):  # nothing written: no database opened
        meta = run_logic.poll_impl(store, run_id, {}, meta, slow_every=1)["meta"]
    assert opened == [run_id]
    add_note(live.path, "something new")
    after = run_logic.poll_impl(store, run_id, {}, meta, slow_every=1)  # the files changed: read
    assert opened == [run_id, run_id] and "notes" in after["refresh"]

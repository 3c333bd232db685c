"""A corrupt page met inside a snapshot (one read transaction) is the run's RunLogError, never a raw
sqlite3.DatabaseError: ending the transaction must not replace the error that ended it (SQLite
rolls a transaction back itself on some errors, so the COMMIT fails too)."""

from __future__ import annotations

import sqlite3

import pytest

from gradwatch import cli
from gradwatch.dashboard.data import RunStore
from gradwatch.testing import make_run
from gradwatch.trainer.runlog import RunLogError, RunReader

PAGE = 4096


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    run = make_run(logdir, "broken", steps=200)
    db = run / "run.sqlite"
    pages = db.stat().st_size // PAGE
    with open(db, "r+b") as handle:  # the schema page stays; every third page after it is garbage
        for page in range(2, pages, 3):
            handle.seek(page * PAGE + 100)
            handle.write(b"\xa5" * 300)
    return logdir, run


def test_a_corrupt_page_in_a_snapshot_is_a_run_log_error(corrupt_run):
    logdir, run = corrupt_run
    store = RunStore(logdir, None)
    with pytest.raises(RunLogError, match="malformed") as raised:
        store.run_info(run.name)
    assert not isinstance(raised.value, sqlite3.Error) and "\n" not in str(raised.value)


def test_the_snapshot_ends_cleanly_and_the_reader_stays_usable(corrupt_run):
    _, run = corrupt_run
    with RunReader(run) as reader:
        with pytest.raises(RunLogError), reader.snapshot():
            reader.layer_stats()
        assert not reader._conn.in_transaction
        assert reader.meta["name"] == "broken"


def test_cli_export_of_the_corrupt_run_is_one_line(corrupt_run, tmp_path, capsys):
    _, run = corrupt_run
    code = cli.main(["export", str(run), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, err

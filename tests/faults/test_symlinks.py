"""No path component is followed out of the log directory: a run folder whose run.sqlite, -wal or
-shm is a symbolic link (to another run's database, or to a file SQLite would create) is refused
with a one-line error for that run, in the listing, the Run page, notes and the export; the target
is neither shown nor written."""

from __future__ import annotations

import os
import shutil

import pytest

from gradwatch import cli
from gradwatch.dashboard.data import RunStore
from gradwatch.testing import make_run
from gradwatch.trainer.runlog import RunLogError, RunReader, add_note, list_runs, schema

LINKS = ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm")


@pytest.fixture
def planted(tmp_path):
    """logdir/good, logdir/<linked> whose `link` points outside the logdir, and the foreign run."""
    logdir = tmp_path / "logs"
    make_run(logdir, "good", steps=10)
    foreign = make_run(tmp_path / "elsewhere", "secret", steps=10)
    made = {}
    for name in LINKS:
        folder = shutil.copytree(foreign, logdir / f"linked-{name.replace('.', '_')}")
        target = foreign / schema.DB_FILENAME if name == schema.DB_FILENAME else tmp_path / f"outside-{name}"
        for suffix in ("-wal", "-shm"):
            (folder / (schema.DB_FILENAME + suffix)).unlink(missing_ok=True)
        (folder / name).unlink(missing_ok=True)
        os.symlink(target, folder / name)
        made[name] = folder
    return logdir, foreign, made, tmp_path


def test_every_linked_run_is_a_one_line_error_and_the_good_run_lists(planted):
    logdir, foreign, made, _ = planted
    entries = {e.run_id: e for e in list_runs(logdir)}
    good = [e for e in entries.values() if e.meta and e.meta.get("name") == "good"]
    assert len(good) == 1 and good[0].error is None and good[0].status == "finished"
    for name, folder in made.items():
        entry = entries[folder.name]
        assert entry.meta is None and "symbolic link" in entry.error and name in entry.error, entry
        with pytest.raises(RunLogError, match="symbolic link"):
            RunReader(folder)


def test_nothing_outside_is_created_or_written(planted):
    logdir, foreign, made, tmp_path = planted
    before = (foreign / schema.DB_FILENAME).read_bytes()
    for folder in made.values():
        with pytest.raises((ValueError, RunLogError)):
            add_note(folder, "hello", author="neighbour")
    assert (foreign / schema.DB_FILENAME).read_bytes() == before
    assert not list(tmp_path.glob("outside-*"))  # a dangling -wal/-shm link was never created through


def test_run_page_and_cli_refuse_the_linked_run_in_one_line(planted, capsys):
    logdir, foreign, made, tmp_path = planted
    store = RunStore(logdir, None)
    for folder in made.values():
        with pytest.raises(RunLogError, match="symbolic link"):
            store.run_info(folder.name)
        for args in (["inspect", str(folder)], ["export", str(folder), "-o", str(tmp_path / "r.html")]):
            assert cli.main(args) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "symbolic link" in err, err
    assert not (tmp_path / "r.html").exists()

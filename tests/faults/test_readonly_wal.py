"""Read-only media without a -shm file: a run killed before its last checkpoint and copied as
run.sqlite + run.sqlite-wal reads every record (its log is replayed in a private copy), where
`immutable=1` alone would silently read none of them; the original files are not touched."""

from __future__ import annotations

import hashlib
import shutil

from gradwatch.dashboard.config import Settings
from gradwatch.dashboard.context import AppContext
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, list_runs

from .conftest import read_only

STEPS = 120


def _killed_copy(tmp_path):
    """A live run's files copied mid-run, as a backup of a killed run would be (no -shm)."""
    run = Run(tmp_path / "live", name="killed", flush_interval_s=0.05)
    for step in range(STEPS):
        run.log(step, loss=float(step))
    run.flush()
    archive = tmp_path / "archive"
    folder = archive / run.id
    folder.mkdir(parents=True)
    for name in ("run.sqlite", "run.sqlite-wal"):
        shutil.copyfile(run.path / name, folder / name)
    run.finish()
    assert (folder / "run.sqlite-wal").stat().st_size > 0  # the records are in the log, not the database
    return archive, folder


def _digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_killed_runs_copy_on_read_only_media_reads_every_record(tmp_path):
    archive, folder = _killed_copy(tmp_path)
    before = _digest(folder)
    with read_only(archive):
        with RunReader(folder) as reader:
            scalars, _ = reader.scalars(names=["loss"])
            assert sorted(scalars["step"].tolist()) == list(range(STEPS))
            assert reader.access_mode == "recovered"
            assert reader.meta["name"] == "killed"
        entries = list_runs(archive)
        assert [e.error for e in entries] == [None] and entries[0].meta["name"] == "killed"
        store = AppContext.from_settings(Settings(logdir=archive, cache_dir=tmp_path / "cache")).store
        summaries, _ = store.summaries(budget_s=60)
        assert summaries[0]["error"] is None and summaries[0]["steps"] == STEPS
        assert not (folder / "run.sqlite-shm").exists()
    assert _digest(folder) == before

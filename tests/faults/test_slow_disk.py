"""A slow disk: the final flush, the final status and close wait for the writer thread (which owns
the one connection and its transaction) instead of failing it; nothing is rolled back from another
thread, no second connection races the writer, and what a run lost or dropped is shown wherever the
run is shown (inspect, the Runs table, the Run page, the export).

The slow filesystem is simulated by a connection wrapper whose COMMIT sleeps (each commit is a write
and a sync on a real disk): seconds of waiting, not minutes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings

import pytest

from gradwatch import cli
from gradwatch.dashboard.components import meta_panel
from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.export import export_run
from gradwatch.dashboard.views.runs import runs_table_impl
from gradwatch.trainer.inspect_run import summarize_run
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.runlog import writer as writer_module
from gradwatch.trainer.runlog.writer import RunWriteError


class SlowConnection:
    """A writer connection on a slow (or failing) disk: every COMMIT takes `delay` seconds, and the
    commits named in `fail` raise "disk I/O error" as a failing device does."""

    def __init__(self, conn: sqlite3.Connection, disk: SlowDisk):
        self._conn, self._disk = conn, disk

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def executemany(self, sql, rows):
        rows = list(rows)
        if "INTO meta" in sql and any(key == "status" for key, _ in rows):
            self._disk.status_writes.append(threading.current_thread().name)
            self._pending_status = True
        return self._conn.executemany(sql, rows)

    def commit(self):
        self._disk.commits.append(threading.current_thread().name)
        time.sleep(self._disk.delay)
        index = len(self._disk.commits)
        if index in self._disk.fail or (self._disk.fail_final_once and getattr(self, "_pending_status", False)):
            self._disk.fail_final_once = False
            self._pending_status = False
            raise sqlite3.OperationalError("disk I/O error")
        self._pending_status = False
        return self._conn.commit()

    def rollback(self):
        self._disk.rollbacks.append(threading.current_thread().name)
        self._pending_status = False
        return self._conn.rollback()


class SlowDisk:
    def __init__(self, delay: float, fail: set[int] = frozenset(), fail_final_once: bool = False):
        self.delay, self.fail, self.fail_final_once = delay, set(fail), fail_final_once
        self.commits: list[str] = []
        self.rollbacks: list[str] = []
        self.status_writes: list[str] = []
        self.connections: list[str] = []


@pytest.fixture
def slow_disk(monkeypatch):
    """Install a SlowDisk for every writer connection opened after the run folder is created."""
    original = writer_module.connect
    holder = {}

    def install(delay: float, **kwargs) -> SlowDisk:
        disk = holder["disk"] = SlowDisk(delay, **kwargs)

        def connect(db_path, *, readonly=False):
            conn = original(db_path, readonly=readonly)
            if readonly or ".building-" in str(db_path):  # creation is not under test here
                return conn
            disk.connections.append(str(db_path))
            return SlowConnection(conn, disk)

        monkeypatch.setattr(writer_module, "connect", connect)
        return disk

    return install


def _scalars(path) -> list[int]:
    with RunReader(path) as reader:
        df, _ = reader.scalars(names=["loss"])
    return sorted(df["step"].tolist())


def test_a_final_flush_slower_than_the_patience_waits_and_keeps_every_record(tmp_path, slow_disk, monkeypatch):
    monkeypatch.setattr(writer_module, "SLOW_WRITER_WARN_S", 0.1, raising=False)
    monkeypatch.setattr(writer_module, "WAIT_POLL_S", 0.05, raising=False)
    disk = slow_disk(0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Run(tmp_path, name="slow", flush_interval_s=0.05) as run:
            for step in range(80):
                run.log(step, loss=float(step))
                if step % 40 == 39:
                    run.flush()
    assert any("slow" in str(w.message) and "nothing is lost" in str(w.message) for w in caught)
    with RunReader(run.path) as reader:
        assert reader.status() == "finished" and reader.meta["lost_records"] == 0
    assert _scalars(run.path) == list(range(80))
    # The writer thread owns the transaction: no commit, rollback or status write from another thread.
    assert disk.commits and set(disk.commits) == {"gradwatch-writer"}
    assert set(disk.rollbacks) <= {"gradwatch-writer"}
    assert disk.status_writes == ["gradwatch-writer"]


def test_a_failing_final_commit_is_retried_by_the_writer_on_its_own_connection(tmp_path, slow_disk):
    disk = slow_disk(0.0, fail_final_once=True)
    with Run(tmp_path, name="retried", flush_interval_s=0.05) as run:
        for step in range(20):
            run.log(step, loss=float(step))
    with RunReader(run.path) as reader:
        assert reader.status() == "finished"
    assert _scalars(run.path) == list(range(20))
    assert len(disk.connections) == 1  # no second connection racing the writer's open transaction
    assert set(disk.commits) == {"gradwatch-writer"} and set(disk.rollbacks) == {"gradwatch-writer"}


def test_a_failed_final_commit_in_raise_mode_ends_failed_not_finished(tmp_path, slow_disk):
    disk = slow_disk(0.0, fail={3})
    with pytest.raises(RunWriteError, match="disk I/O error"):
        with Run(tmp_path, name="broken", flush_interval_s=0.05) as run:
            for step in range(200):
                run.log(step, loss=float(step))
                if step % 10 == 9:
                    run.flush()
    with RunReader(run.path) as reader:
        status, lost, error = reader.status(), reader.meta["lost_records"], reader.meta["error"]
    stored = len(_scalars(run.path))
    assert status == "failed" and "disk I/O error" in error
    assert lost > 0 and stored < 200
    assert len(disk.connections) == 1


@pytest.fixture
def lossy_run(tmp_path, slow_disk):
    """A run in warn mode whose disk failed a few commits: finished, with lost records."""
    slow_disk(0.0, fail={3, 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Run(tmp_path / "logs", name="lossy", flush_interval_s=0.05, on_write_error="warn") as run:
            for step in range(60):
                run.log(step, loss=float(step))
                if step % 10 == 9:
                    run.flush()
    assert run.lost_records > 0
    return run


def test_lost_records_are_in_the_run_and_in_inspect(lossy_run, capsys):
    with RunReader(lossy_run.path) as reader:
        assert reader.status() == "finished" and reader.meta["lost_records"] == lossy_run.lost_records
    report = summarize_run(lossy_run.path)
    assert report["lost_records"] == lossy_run.lost_records
    assert f"{lossy_run.lost_records:,} records lost" in report["losses"]
    assert cli.main(["inspect", str(lossy_run.path)]) == 0
    assert "records lost" in capsys.readouterr().out


def test_lost_records_are_shown_on_the_runs_table_the_run_page_and_the_export(lossy_run, tmp_path):
    words = f"{lossy_run.lost_records:,} records lost"
    store = RunStore(lossy_run.path.parent, None)
    table = runs_table_impl(store, {"q": "", "status": [], "sort": "started", "desc": True, "page": 1}, [])
    assert words in str(table["table"])
    info = store.run_info(lossy_run.id)
    assert words in json.dumps(meta_panel(info), default=str)
    report = export_run(lossy_run.path, tmp_path / "r.html").read_text(encoding="utf-8")
    assert words in report and "Incomplete run" in report


def test_a_live_run_shows_its_losses_before_it_ends(tmp_path, slow_disk):
    slow_disk(0.0, fail={2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = Run(tmp_path, name="live", flush_interval_s=0.05, on_write_error="warn")
        for step in range(30):
            run.log(step, loss=float(step))
            run.flush()
        time.sleep(1.1)  # the writer's heartbeat (once a second) carries the counters
        run.log(30, loss=1.0)
        run.flush()
        with RunReader(run.path) as reader:
            live_meta = dict(reader.meta)
        run.finish()
    assert live_meta["status"] == "running" and live_meta["lost_records"] > 0

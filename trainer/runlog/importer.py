"""Importing segments into ordinary run folders: what a dashboard host (or `gradwatch ls/sync/inspect`)
does with a remote logdir. Torch-free.

Idempotent by (run, rank, sequence): each run folder records, in the same SQLite transaction as the
rows, the last publish sequence imported per rank (`_gw_import`), so a segment seen twice, or a
compacted segment overlapping what is in, adds only rows it has not added. A run folder appears
(renamed from a hidden staging folder) once its rank-0 start is imported: a listing never sees a
half-made run. Appended rows get fresh seq numbers here, so a dashboard's cursors see them as new.

One importer per cache folder: `ImporterThread` polls only while it holds the cache's lock file, so
several gunicorn workers share one importer (another takes over if its holder dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import schema, segment
from .segment import SegmentError
from .stores import join
from .writer import connect

IMPORT_TABLE = "_gw_import"
IMPORT_DDL = f"""
CREATE TABLE IF NOT EXISTS {IMPORT_TABLE} (
    rank     INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,        -- the last publish sequence of this rank imported
    received REAL NOT NULL            -- unix time (this host's clock) of that import
);
"""
# Meta key (this host's clock) of the last segment imported: readers call a "running" run stale when
# nothing arrived for schema-independent SEGMENT_STALE_AFTER_S (reader.py).
RECEIVED_KEY = "segment_received"
STAGING_PREFIX = ".importing-"
LOCK_FILE = ".import.lock"
SEGMENT_LOCK_FILE = ".segments.lock"
# An ended run (final status) is no longer polled once nothing arrived for this long (late ranks).
ENDED_QUIET_S = 60.0
# A running run unheard for this long is listed only every QUIET_POLL_S (a killed trainer's run).
QUIET_AFTER_S = 60.0
QUIET_POLL_S = 15.0
DEFAULT_POLL_S = 1.0
# Meta keys the importing folder keeps as its own.
LOCAL_META = frozenset({"schema_version", RECEIVED_KEY})


class SegmentGap(SegmentError):
    """A segment starts after the next one expected: an earlier one is still on its way."""


@dataclass
class PollReport:
    segments: int = 0
    rows: int = 0
    runs: set = field(default_factory=set)
    errors: list = field(default_factory=list)
    listed_runs: int = 0


def plan(names: list[str], imported: int) -> list[tuple[int, int, str]]:
    """Which segment files to import, in order, after sequence `imported`: at each point the one that
    starts no later than the next sequence and reaches furthest (a compacted segment over its parts)."""
    entries = [(p[0], p[1], n) for n in names if (p := segment.parse_name(n)) and p[1] > imported]
    chosen, cursor = [], imported
    while True:
        candidates = [e for e in entries if e[0] <= cursor + 1 and e[1] > cursor]
        if not candidates:
            return chosen
        best = max(candidates, key=lambda e: (e[1], -e[0]))
        chosen.append(best)
        cursor = best[1]


def imported_through(run_dir: Path, rank: int) -> int:
    """The last sequence of `rank` imported into `run_dir` (0 if none, or no such folder)."""
    db = run_dir / schema.DB_FILENAME
    if not db.is_file():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(f"SELECT last_seq FROM {IMPORT_TABLE} WHERE rank = ?", (rank,)).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


def import_segment(root: Path, seg: segment.Segment) -> int:
    """Add `seg` to the run folder root/<run id>; returns the rows added (0 when it was in already).
    Raises SegmentGap when it starts beyond the next sequence expected, SegmentError when the run
    folder does not exist yet and this is not rank 0's first segment."""
    if not schema.is_valid_run_id(seg.run_id):
        raise SegmentError(f"segment names an invalid run id {seg.run_id!r}")
    run_dir = Path(root) / seg.run_id
    if not (run_dir / schema.DB_FILENAME).is_file():
        if seg.rank != 0 or seg.first != 1:
            raise SegmentGap(f"run {seg.run_id}: rank 0's first segment has not arrived yet")
        return _create_run(Path(root), seg)
    conn = connect(run_dir / schema.DB_FILENAME)
    try:
        return _apply(conn, seg)
    finally:
        conn.close()


def _create_run(root: Path, seg: segment.Segment) -> int:
    staging = root / f"{STAGING_PREFIX}{os.getpid()}-{seg.run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        conn = connect(staging / schema.DB_FILENAME)
        try:
            conn.executescript(schema.DDL)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                         (json.dumps(schema.SCHEMA_VERSION),))
            conn.commit()
            rows = _apply(conn, seg)
        finally:
            conn.close()
        os.rename(staging, root / seg.run_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return rows


def _apply(conn: sqlite3.Connection, seg: segment.Segment) -> int:
    conn.executescript(IMPORT_DDL)
    row = conn.execute(f"SELECT last_seq FROM {IMPORT_TABLE} WHERE rank = ?", (seg.rank,)).fetchone()
    imported = int(row[0]) if row else 0
    if seg.last <= imported:
        return 0
    if seg.first > imported + 1:
        raise SegmentGap(f"run {seg.run_id} rank {seg.rank}: segment {seg.first}-{seg.last} arrived before "
                         f"{imported + 1}")
    total = 0
    now = time.time()
    try:
        conn.execute("BEGIN IMMEDIATE")
        for spec in segment.table_specs():
            names, rows = seg.rows(spec.name, after=imported)
            if not rows:
                continue
            known = _columns(conn, spec.name)
            keep = [i for i, n in enumerate(names) if n in known and not (spec.appended and n == "seq")]
            if spec.name == "meta":
                rows = [r for r in rows if r[names.index("key")] not in LOCAL_META]
            columns = [names[i] for i in keep]
            verb = "INSERT" if spec.appended else "INSERT OR REPLACE"
            conn.executemany(f"{verb} INTO {spec.name}({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                             [tuple(r[i] for i in keep) for r in rows])
            total += len(rows)
        specs = segment.spec_by_name()
        for _origin, table, key in seg.deletions(after=imported):
            spec = specs.get(table)
            if spec is None or spec.appended or len(key) != len(spec.key):
                continue  # a table this gradwatch does not know: nothing of it was imported
            conn.execute(f"DELETE FROM {table} WHERE {' AND '.join(f'{k} IS ?' for k in spec.key)}", key)
            total += 1
        conn.execute(f"INSERT OR REPLACE INTO {IMPORT_TABLE}(rank, last_seq, received) VALUES (?,?,?)",
                     (seg.rank, seg.last, now))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (RECEIVED_KEY, json.dumps(now)))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return total


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


@contextlib.contextmanager
def folder_lock(root: Path, name: str = SEGMENT_LOCK_FILE):
    """An exclusive lock on a folder (flock on a dot-file in it): one importer of segments at a time."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / name, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _final_status(run_dir: Path) -> str | None:
    db = run_dir / schema.DB_FILENAME
    if not db.is_file():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    status = json.loads(row[0]) if row else None
    return status if status in ("finished", "failed", "stopped") else None


def remove_dead_staging(root: Path) -> list[Path]:
    """Remove hidden staging folders left by an importer that died while creating a run folder."""
    from .process import process_alive

    removed = []
    for path in Path(root).glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class Importer:
    """Imports a remote logdir's segments into `cache` (ordinary run folders)."""

    def __init__(self, store, cache: Path):
        self.store = store
        self.cache = Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(self.cache)
        self._last_new: dict[str, float] = {}  # run id -> when something last arrived (this process)
        self._next_look: dict[str, float] = {}
        self._ended: set[str] = set()

    def poll(self, only: set[str] | None = None) -> PollReport:
        """One pass: list the logdir's runs, import what is new in each run not known to have ended."""
        report = PollReport()
        now = time.time()
        for run_id in self.store.list_dirs(""):
            if not schema.is_valid_run_id(run_id) or run_id in self._ended:
                continue
            if only is not None and run_id not in only:
                continue
            if now < self._next_look.get(run_id, 0.0):
                continue
            report.listed_runs += 1
            self.import_run(run_id, report)
            self._schedule(run_id, now)
        return report

    def _schedule(self, run_id: str, now: float) -> None:
        last_new = self._last_new.setdefault(run_id, now)
        quiet = now - last_new
        if quiet > ENDED_QUIET_S and _final_status(self.cache / run_id):
            self._ended.add(run_id)
        elif quiet > QUIET_AFTER_S:
            self._next_look[run_id] = now + QUIET_POLL_S

    def import_run(self, run_id: str, report: PollReport | None = None) -> PollReport:
        report = report if report is not None else PollReport()
        run_dir = self.cache / run_id
        base = join(run_id, segment.SEGMENTS_DIR)
        ranks = sorted(r for d in self.store.list_dirs(base) if (r := segment.parse_rank(d)) is not None)
        for rank in ranks:  # rank 0 first: it creates the run folder
            prefix = join(base, segment.rank_dir(rank))
            for _first, _last, name in plan(self.store.list(prefix), imported_through(run_dir, rank)):
                where = f"{self.store.description}/{prefix}/{name}"
                try:
                    data = self.store.get(f"{prefix}/{name}")
                except FileNotFoundError:
                    break  # compacted away since the listing: the next poll finds the merged one
                try:
                    seg = segment.decode(data, name, where=where)
                    if seg.run_id != run_id or seg.rank != rank:
                        raise SegmentError(f"{where}: holds run {seg.run_id!r} rank {seg.rank}, not {run_id} rank {rank}")
                    with folder_lock(self.cache):
                        rows = import_segment(self.cache, seg)
                except SegmentGap:
                    break
                except SegmentError as exc:
                    report.errors.append(str(exc))
                    break
                report.segments += 1
                report.rows += rows
                report.runs.add(run_id)
                self._last_new[run_id] = time.time()
                self._next_look.pop(run_id, None)
        return report


class ImporterThread:
    """Polls an Importer in the background while holding the cache's lock file; a process that cannot
    take the lock (another gunicorn worker imports) keeps trying, so one importer always runs."""

    def __init__(self, importer: Importer, interval_s: float = DEFAULT_POLL_S, log=None):
        self.importer = importer
        self.interval_s = interval_s
        self.leader = False
        self.polls = 0
        self._log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self._handle = None
        self._stop = threading.Event()
        self._errors_seen: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="gradwatch-importer", daemon=True)

    def start(self) -> ImporterThread:
        self._thread.start()
        return self

    def _take_lock(self) -> bool:
        if self._handle is None:
            self._handle = open(self.importer.cache / LOCK_FILE, "a+b")
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.leader:
                self.leader = self._take_lock()
            if self.leader:
                try:
                    report = self.importer.poll()
                    self.polls += 1
                    for error in report.errors:
                        if error not in self._errors_seen:
                            self._errors_seen.add(error)
                            self._log(f"gradwatch: import: {error}")
                except Exception as exc:  # an unreachable store: keep polling, say it once
                    text = f"gradwatch: import from {self.importer.store.description} failed: {type(exc).__name__}: {exc}"
                    if text not in self._errors_seen:
                        self._errors_seen.add(text)
                        self._log(text)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._handle is not None:
            self._handle.close()
            self._handle = None

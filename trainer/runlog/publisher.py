"""Publishing a spooled run: its node-local SQLite turned into segments, sent to the logdir in order,
retried with backoff while the store is away, and compacted so a long run keeps few files. Torch-free.

The writer (writer.py) writes the spool's SQLite exactly as it writes any run folder; this module
reads what it gained since the last segment. Appended tables (seq primary key) are read by cursor;
keyed tables (meta, tensors, roll-up blocks, ...) are tracked by triggers that log each inserted or
replaced key in `_gw_changes`, so an export costs what is new, not what the run holds.

Bound on files per (run, rank) in the logdir: segments are merged FANIN at a time per level, up to
MAX_LEVEL; at most (FANIN - 1) segments wait at each level below MAX_LEVEL, so a rank holds at most
(FANIN - 1) * MAX_LEVEL + ceil(publishes / FANIN**MAX_LEVEL) files (60 + 1 per ~18 h of 1 s publishes),
plus one per MAX_COMPACT_BYTES of data where a merge would exceed that size.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

from . import schema, segment
from .stores import HttpStore, StoreAuthError, join

# How often a spooled run is published: the bound on live lag (a flush of the writer every 0.2 s,
# a publish every second) and on what kill -9 loses from the logdir's view.
PUBLISH_INTERVAL_S = 1.0
# While only the heartbeat moves, publish this seldom (readers call a run stale after 20 s unheard).
IDLE_PUBLISH_S = 5.0
# Meta keys the writer refreshes on its own every second; they alone do not need a publish.
HEARTBEAT_KEYS = frozenset({"heartbeat", "dropped_histograms", "dropped_records"})
# Rows of one appended table taken into one segment (a catch-up after an outage is split).
MAX_ROWS_PER_TABLE = 200_000
# Unpublished segments kept in the spool; beyond it exports pause (records wait in SQLite, none lost).
DEFAULT_MAX_OUTBOX_BYTES = 512 * 1024 * 1024
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
FANIN = 16
MAX_LEVEL = 4
MAX_COMPACT_BYTES = 128 * 1024 * 1024
# How long close() keeps trying to publish the run's last segments before leaving them in the spool.
DEFAULT_CLOSE_TIMEOUT_S = 30.0
ENV_CLOSE_TIMEOUT = "GRADWATCH_PUBLISH_TIMEOUT"
CHANGES_TABLE = "_gw_changes"
OUTBOX = "outbox"
SENT = "sent"
ORIGIN_FILE = "origin.json"


def level_of(first: int, last: int) -> int:
    """Compaction level of a segment covering publishes first..last: 0 for one publish, L when it
    spans at least FANIN**L of them."""
    span, level = last - first + 1, 0
    while span >= FANIN ** (level + 1):
        level += 1
    return level


class SpoolExporter:
    """Reads what a spool database gained since the previous export, as one segment's tables."""

    def __init__(self, db_path: Path, run_id: str, rank: int):
        self.run_id, self.rank = run_id, rank
        self.conn = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.specs = segment.table_specs()
        self._install_change_log()
        self.seq = 0
        self.cursors = {spec.name: 0 for spec in self.specs if spec.appended}
        self.change_cursor = 0
        self.first_export = True  # the first segment carries every keyed row (written before the triggers)
        self.last_export = 0.0

    def _install_change_log(self) -> None:
        statements = [f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL,"
                      " key TEXT NOT NULL)"]
        for spec in self.specs:
            if spec.appended:
                continue
            for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                key = ", ".join(f"{row}.{k}" for k in spec.key)
                statements.append(
                    f"CREATE TRIGGER IF NOT EXISTS _gw_{event.lower()}_{spec.name} AFTER {event} ON {spec.name} "
                    f"BEGIN INSERT INTO {CHANGES_TABLE}(tbl, key) VALUES ('{spec.name}', json_array({key})); END")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                self.conn.execute(statement)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def export(self, *, force: bool = False) -> tuple[int, bytes] | None:
        """The next segment (sequence number, bytes), or None when nothing needs publishing. With
        `force`, a segment is made for any change (the run's last one)."""
        conn = self.conn
        conn.execute("BEGIN")  # one snapshot for every table
        try:
            appended, cursors = {}, {}
            for spec in self.specs:
                if not spec.appended:
                    continue
                rows = conn.execute(
                    f"SELECT seq, {', '.join(spec.column_names)} FROM {spec.name} WHERE seq > ? ORDER BY seq LIMIT ?",
                    (self.cursors[spec.name], MAX_ROWS_PER_TABLE)).fetchall()
                if rows:
                    cursors[spec.name] = rows[-1][0]
                    appended[spec.name] = [row[1:] for row in rows]
            keyed, deleted, change_cursor, heartbeat_only = self._keyed_rows()
        finally:
            conn.execute("COMMIT")
        if not appended and not keyed and not deleted:
            return None
        now = time.time()
        if not appended and heartbeat_only and not force and now - self.last_export < IDLE_PUBLISH_S:
            return None
        self.seq += 1
        tables = {name: ([self.seq] * len(rows), rows) for name, rows in {**appended, **keyed}.items()}
        data = segment.encode(self.run_id, self.rank, self.seq, self.seq, tables,
                              deleted=[(self.seq, table, key) for table, key in deleted])
        self.cursors.update(cursors)
        self.first_export = False
        self.last_export = now
        if change_cursor > self.change_cursor:
            self.change_cursor = change_cursor
            try:
                conn.execute(f"DELETE FROM {CHANGES_TABLE} WHERE id <= ?", (change_cursor,))
            except sqlite3.OperationalError:
                pass  # busy: the next export deletes them
        return self.seq, data

    def _keyed_rows(self) -> tuple[dict[str, list[tuple]], list[tuple[str, tuple]], int, bool]:
        """(rows of keyed tables changed, (table, key) of keys removed, change-log position, whether only
        the heartbeat moved). A changed key is read as it is now: present, its row; absent, removed."""
        conn = self.conn
        top = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {CHANGES_TABLE}").fetchone()[0]
        out: dict[str, list[tuple]] = {}
        keyed = [spec for spec in self.specs if not spec.appended]
        if self.first_export:
            for spec in keyed:
                rows = conn.execute(f"SELECT {', '.join(spec.column_names)} FROM {spec.name}").fetchall()
                if rows:
                    out[spec.name] = rows
            return out, [], top, False
        changes = conn.execute(f"SELECT tbl, key FROM {CHANGES_TABLE} WHERE id > ? AND id <= ? ORDER BY id",
                               (self.change_cursor, top)).fetchall()
        wanted: dict[str, dict[str, None]] = {}
        for table, key in changes:
            wanted.setdefault(table, {})[key] = None
        removed: list[tuple[str, tuple]] = []
        heartbeat_only = set(wanted) <= {"meta"} and all(
            json.loads(k)[0] in HEARTBEAT_KEYS for k in wanted.get("meta", {}))
        for spec in keyed:
            keys = wanted.get(spec.name)
            if not keys:
                continue
            where = " AND ".join(f"{k} IS ?" for k in spec.key)
            sql = f"SELECT {', '.join(spec.column_names)} FROM {spec.name} WHERE {where}"
            rows = []
            for key in keys:
                values = json.loads(key)
                found = conn.execute(sql, values).fetchall()
                if found:
                    rows += found
                else:
                    removed.append((spec.name, tuple(values)))
            if rows:
                out[spec.name] = rows
        return out, removed, top, heartbeat_only

    def close(self) -> None:
        self.conn.close()


def export_folder(run_dir: Path, run_id: str | None = None) -> bytes:
    """A finished run folder as one segment (sequence 1 of rank 0): what `gradwatch sync` uploads.
    Read-only: nothing is installed in the folder."""
    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    conn = sqlite3.connect(f"file:{run_dir / schema.DB_FILENAME}?mode=ro", uri=True, timeout=30)
    try:
        tables = {}
        conn.execute("BEGIN")
        for spec in segment.table_specs():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({spec.name})")}
            if not present:
                continue  # an older folder without this table
            columns = [c if c in present else "NULL" for c in spec.column_names]
            order = " ORDER BY seq" if spec.appended else ""
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {spec.name}{order}").fetchall()
            tables[spec.name] = ([1] * len(rows), rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return segment.encode(run_id, 0, 1, 1, tables)


class Publisher:
    """Publishes one spooled (run, rank) to its store from a background thread: training never waits
    on the network. Unpublished segments wait in the spool's outbox, in order, retried with backoff."""

    def __init__(self, spool_dir: Path, store, run_id: str, rank: int, *, interval_s: float = PUBLISH_INTERVAL_S,
                 max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES, log=None, exporting: bool = True):
        """exporting=False publishes only the outbox (a leftover spool whose writer has ended)."""
        self.spool_dir = Path(spool_dir)
        self.store = store
        self.run_id, self.rank = run_id, rank
        self.interval_s = interval_s
        self.max_outbox_bytes = max_outbox_bytes
        self.compacting = not isinstance(store, HttpStore)  # a dashboard imports pushes at once
        self.prefix = join(run_id, segment.SEGMENTS_DIR, segment.rank_dir(rank))
        self.outbox = self.spool_dir / OUTBOX
        self.sent = self.spool_dir / SENT
        self.outbox.mkdir(exist_ok=True)
        self.sent.mkdir(exist_ok=True)
        self._log = log or _stderr
        self.exporter = SpoolExporter(self.spool_dir / schema.DB_FILENAME, run_id, rank) if exporting else None
        self.published = 0
        self.compactions = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.auth_error: str | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN_S
        self._lock = threading.Lock()  # one cycle at a time (the thread, or close())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"gradwatch-publish-r{rank}", daemon=True)
        self._thread.start()

    # ---- the thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.cycle()
            except Exception as exc:  # never let the thread die: the next cycle retries
                self._note_failure(exc)

    def cycle(self, *, force: bool = False) -> bool:
        """Export what is new, publish the outbox, compact; True when the outbox is empty."""
        with self._lock:
            if self.exporter is not None and self._outbox_bytes() < self.max_outbox_bytes:
                exported = self.exporter.export(force=force)
                if exported is not None:
                    self._spool(*exported)
            if time.time() < self._retry_at and not force:
                return False
            drained = self._drain()
            if drained and self.compacting:
                self._compact()
            return drained

    def _spool(self, seq: int, data: bytes) -> None:
        name = segment.segment_name(seq, seq, data)
        temp = self.outbox / f".{name}"
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, self.outbox / name)

    def _outbox_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.outbox) if segment.parse_name(n))

    def _outbox_bytes(self) -> int:
        return sum((self.outbox / n).stat().st_size for n in self._outbox_names())

    def _drain(self) -> bool:
        for name in self._outbox_names():
            data = (self.outbox / name).read_bytes()
            try:
                self.store.put(f"{self.prefix}/{name}", data)
            except Exception as exc:
                self._note_failure(exc)
                return False
            if self.compacting:
                os.replace(self.outbox / name, self.sent / name)
            else:
                os.unlink(self.outbox / name)
            self.published += 1
            self._note_success()
        return True

    def _note_failure(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if isinstance(exc, StoreAuthError):
            self.auth_error = text
        waiting = len(self._outbox_names())
        if self.failing_since is None:
            self.failing_since = time.time()
            self._log(f"gradwatch: cannot publish run {self.run_id} (rank {self.rank}) to {self.store.description}: "
                      f"{text}; {waiting} segment(s) wait in the spool {self.spool_dir}, retrying with backoff "
                      "(training goes on, nothing is lost)")
        self.last_error = text
        self._retry_at = time.time() + self._backoff
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)

    def _note_success(self) -> None:
        if self.failing_since is not None:
            self._log(f"gradwatch: publishing run {self.run_id} (rank {self.rank}) to {self.store.description} again "
                      f"after {time.time() - self.failing_since:.0f} s")
        self.failing_since = None
        self.last_error = None
        self._backoff = BACKOFF_MIN_S
        self._retry_at = 0.0

    # ---- compaction ---------------------------------------------------------------------------
    def _compact(self) -> None:
        """Merge FANIN consecutive published segments of one level into one, publish it, then delete
        them (store first, spool copy last): a reader sees the data at every moment, and the merged
        segment's `_segment` column lets a reader that has part of the range take only the rest."""
        while True:
            entries = sorted((p[0], p[1], n) for n in os.listdir(self.sent) if (p := segment.parse_name(n)))
            group = _mergeable_group(entries)
            if group is None:
                for first, last, name in entries:
                    if level_of(first, last) >= MAX_LEVEL:  # final: never merged again, the spool copy goes
                        os.unlink(self.sent / name)
                return
            paths = [self.sent / name for _, _, name in group]
            if sum(p.stat().st_size for p in paths) > MAX_COMPACT_BYTES:
                for path in paths:  # too big to merge: these stay as they are in the store
                    os.unlink(path)
                continue
            parts = [segment.decode(p.read_bytes(), p.name, where=str(p)) for p in paths]
            merged = segment.merge(parts)
            name = segment.segment_name(group[0][0], group[-1][1], merged)
            try:
                self.store.put(f"{self.prefix}/{name}", merged)
                for path in paths:
                    self.store.delete(f"{self.prefix}/{path.name}")
            except Exception as exc:
                self._note_failure(exc)
                return
            (self.sent / name).write_bytes(merged)
            for path in paths:
                os.unlink(path)
            self.compactions += 1

    # ---- the end ------------------------------------------------------------------------------
    def close(self, timeout_s: float | None = None) -> bool:
        """Publish everything left (the final status included), retrying until `timeout_s`; True when
        all was published (the spool folder is then removed), False when segments stay in the spool."""
        if timeout_s is None:
            timeout_s = float(os.environ.get(ENV_CLOSE_TIMEOUT) or DEFAULT_CLOSE_TIMEOUT_S)
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():  # stuck in the store (a hung mount): the process must still be able to end
            self._log(f"gradwatch: publishing run {self.run_id} (rank {self.rank}) to {self.store.description} did "
                      f"not return within {timeout_s:.0f} s; its segments stay in {self.spool_dir} and are published "
                      "by the next run started on this host")
            return False
        deadline = time.time() + timeout_s
        done = False
        while True:
            try:
                done = self.cycle(force=True)
            except Exception as exc:
                self._note_failure(exc)
            if done or time.time() >= deadline or self.auth_error:
                break
            time.sleep(min(self._backoff, max(0.0, deadline - time.time())))
            self._retry_at = 0.0
        if self.exporter is not None:
            self.exporter.close()
        if done:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
        else:
            self._log(f"gradwatch: run {self.run_id} (rank {self.rank}) not fully published to "
                      f"{self.store.description} ({self.last_error}); its segments stay in {self.spool_dir} and are "
                      "published by the next run started on this host")
        return done


def _mergeable_group(entries: list[tuple[int, int, str]]) -> list | None:
    """The first FANIN consecutive (in sequence, no gap) segments of one level below MAX_LEVEL."""
    run: list = []
    for entry in entries:
        level = level_of(entry[0], entry[1])
        if run and (level != level_of(run[0][0], run[0][1]) or entry[0] != run[-1][1] + 1):
            run = []
        if level >= MAX_LEVEL:
            run = []
            continue
        run.append(entry)
        if len(run) == FANIN:
            return run
    return None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_origin(spool_dir: Path, logdir: str, run_id: str, rank: int) -> None:
    """What a leftover spool needs to be published by a later process."""
    from .process import current_process_identity

    (spool_dir / ORIGIN_FILE).write_text(json.dumps(
        {"logdir": logdir, "run_id": run_id, "rank": rank, **current_process_identity()}))

"""Writes one run folder: a background thread drains a bounded queue into SQLite (WAL).

The training thread only enqueues; it never waits on disk. When the disk falls behind, histograms
are dropped first (counted in meta "dropped_histograms"), statistics next (counted in
"dropped_records"), so memory stays bounded and training never stalls.

When a write fails (a full disk, a storage error) the training thread hears of it at its next call:
with on_error="raise" (the default) that call raises RunWriteError, whose message starts with the
cause ("disk full: ..."); with on_error="warn" one warning is issued, training goes on and the lost
records are counted (meta "lost_records"). A small reserve file is held in the run folder and freed
on failure, so the final status ("failed", with the cause) can still be written on a full disk.
Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import queue
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .layer_rollup import RollupWriter
from .step_norms import StepNormBatch, StepNormSeries

# How often the writer commits: the bound on what kill -9 can lose, and on live latency.
DEFAULT_FLUSH_INTERVAL_S = 0.2
# Layer records (one per logged step) held in memory before histograms are dropped.
DEFAULT_MAX_PENDING_RECORDS = 64
# Beyond this many pending layer records even statistics are dropped (still counted).
HARD_PENDING_FACTOR = 16
ON_ERROR_CHOICES = ("raise", "warn")
# Space held in the run folder and released when a write fails, so the final status fits on a full disk.
RESERVE_FILENAME = ".reserve"
RESERVE_BYTES = 256 * 1024
# A flush, final status or close waits for the writer however long the disk takes; past this many
# seconds it warns once that the disk is slow (it never gives up: the writer thread owns the data).
SLOW_WRITER_WARN_S = 60.0
WAIT_POLL_S = 0.5


class RunWriteError(RuntimeError):
    """The run folder could not be written; the message is one line starting with the cause."""


def describe_write_error(exc: BaseException, where: Path) -> str:
    """One line naming the cause of a failed write: "disk full: ..." for ENOSPC / SQLITE_FULL."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in text
    if full:
        return f"disk full: cannot write run folder {str(where)!r} ({text})"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS or "readonly" in text:
        return f"read-only storage: cannot write run folder {str(where)!r} ({text})"
    return f"cannot write run folder {str(where)!r}: {type(exc).__name__}: {text}"


def _lost_by(kind: str, payload: Any) -> int:
    """How many records an item stands for, when its batch could not be committed."""
    if kind == "scalars":
        return len(payload[1])
    if kind == "step_norms":
        return len(payload.steps)
    return 1 if kind in ("layers", "flag") else 0


def connect(db_path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection configured the same way by the writer and every reader."""
    if readonly:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9);
        # only an OS crash can lose the last commits. fsync per commit would slow logging.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass
class StatBlock:
    """One logged step's statistics in columns: what the writer inserts with one executemany.

    Columnar so the writer thread spends its time in numpy and SQLite (which release the GIL or
    run in C), not in per-value Python that would stall the training thread through the GIL.
    """

    tensor_ids: np.ndarray  # [n] int
    kinds: np.ndarray  # [n] int, schema.KIND_*
    stats: np.ndarray  # [n, len(schema.STAT_FIELDS)] float64; NaN = does not apply (NULL)
    hists: np.ndarray | None = None  # [n, HIST_LEN] counts for the rows where has_hist
    has_hist: np.ndarray | None = None  # [n] bool

    @classmethod
    def concat(cls, blocks: list[StatBlock]) -> StatBlock:
        blocks = [b for b in blocks if len(b.tensor_ids)]
        if not blocks:
            return cls.from_rows([])
        width = schema.HIST_LEN
        hists = [b.hists if b.hists is not None else np.zeros((len(b.tensor_ids), width)) for b in blocks]
        has = [b.has_hist if b.has_hist is not None else np.zeros(len(b.tensor_ids), bool) for b in blocks]
        return cls(
            np.concatenate([b.tensor_ids for b in blocks]),
            np.concatenate([b.kinds for b in blocks]),
            np.concatenate([b.stats for b in blocks]),
            np.concatenate(hists),
            np.concatenate(has),
        )

    @classmethod
    def from_rows(cls, rows: list) -> StatBlock:
        """From (tensor_id, kind, stats tuple in STAT_FIELDS order, hist counts or None) rows."""
        n = len(rows)
        stats = np.full((n, len(schema.STAT_FIELDS)), np.nan)
        hists = np.zeros((n, schema.HIST_LEN))
        has = np.zeros(n, bool)
        for i, (_, _, values, hist) in enumerate(rows):
            stats[i] = [np.nan if v is None else float(v) for v in values]
            if hist is not None:
                hists[i] = hist
                has[i] = True
        return cls(
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            stats,
            hists,
            has,
        )


@dataclass
class LayerRecord:
    """Everything the probe measured at one logged optimizer step.

    rows: a StatBlock, or a list of (tensor_id, kind, stats tuple in schema.STAT_FIELDS order,
    hist counts or None). A `resolve` callable, if given, is run on the writer thread to turn
    device results into a StatBlock (so the training thread never waits for a device-to-host copy).
    """

    step: int
    wall: float
    step_time: float | None
    rows: Any = field(default_factory=list)
    resolve: Any = None
    drop_histograms: bool = False


@dataclass
class _Final:
    """The run's final metadata on its way to the writer thread, and what came of it."""

    items: dict
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class RunWriter:
    """Owns the SQLite database of one run folder; all writes go through its thread."""

    def __init__(
        self,
        run_dir: Path,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
        create: bool = True,
        owner: bool = True,
        on_error: str = "raise",
    ):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / schema.DB_FILENAME
        self.flush_interval_s = flush_interval_s
        self.max_pending_records = max_pending_records
        # Only the owning writer (rank 0) keeps the run-wide counters and heartbeat; other
        # ranks' writers add scalars only, so they never overwrite rank 0's counts.
        self.owner = owner
        conn = connect(self.db_path)
        if create:
            # One transaction for the whole schema: on a slow disk each commit costs a write and a sync.
            conn.executescript("BEGIN;\n" + schema.DDL + "\nCOMMIT;")
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (json.dumps(schema.SCHEMA_VERSION),),
            )
            conn.commit()
        self._conn = conn
        self.lost_records = 0
        self._warned = False
        self._slow_warned = False
        self._reserve = self.run_dir / RESERVE_FILENAME
        if owner:
            _hold_reserve(self._reserve)
        self._queue: queue.Queue = queue.Queue()
        self._pending_records = 0
        self._pending_lock = threading.Lock()
        self.dropped_histograms = 0
        self.dropped_records = 0
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._blocks: dict[tuple[str, int], _ScalarBlock] = {}  # writer thread only
        self._dirty_blocks: set[tuple[str, int]] = set()
        self._layer_rollup = RollupWriter()  # writer thread only
        self._step_norms = StepNormSeries()  # writer thread only
        self._thread = threading.Thread(target=self._loop, name="gradwatch-writer", daemon=True)
        self._thread.start()

    # ---- called from the training thread ------------------------------------------------
    @property
    def error(self) -> str | None:
        """The failed write's one-line description, or None."""
        return None if self._error is None else describe_write_error(self._error, self.run_dir)

    def _check(self) -> None:
        """Surface a failed write to the training thread at its next call."""
        if self._error is None:
            return
        if self.on_error == "raise":
            raise RunWriteError(self.error) from self._error
        if not self._warned:
            self._warned = True
            warnings.warn(f"gradwatch: {self.error}; training goes on, records are being lost "
                          "(counted in the run's lost_records)", RuntimeWarning, stacklevel=3)

    def set_meta(self, **items: Any) -> None:
        self._check()
        self._queue.put(("meta", items))

    def set_meta_now(self, **items: Any) -> None:
        """Write metadata and wait until it is committed (run start and end, where ordering matters).
        The writer thread commits it, like every other write: one connection, one thread."""
        self._check()
        self._queue.put(("meta", items))
        self.flush()

    def add_tensors(self, tensors: list[dict]) -> None:
        self._check()
        self._queue.put(("tensors", tensors))

    def add_scalars(self, step: int, values: dict[str, float], wall: float, rank: int = 0) -> None:
        self._check()
        self._queue.put(("scalars", (step, values, wall, rank)))

    def add_flag(self, raised_step: int, flag: dict) -> None:
        self._check()
        self._queue.put(("flag", (raised_step, time.time(), flag)))

    def add_step_norms(self, batch: StepNormBatch) -> None:
        """Per-parameter gradient norms of consecutive steps (stored by step_norms.py's policy, with
        each step's total norm and non-finite count as the sentinel scalars)."""
        self._check()
        self._queue.put(("step_norms", batch))

    def add_layer_record(self, record: LayerRecord) -> None:
        self._check()
        with self._pending_lock:
            pending = self._pending_records
            if pending >= self.max_pending_records * HARD_PENDING_FACTOR:
                self.dropped_records += 1
                return
            if pending >= self.max_pending_records:
                record.drop_histograms = True
            self._pending_records += 1
        self._queue.put(("layers", record))

    def flush(self) -> None:
        """Block until everything queued so far is committed. A slow disk makes this wait, never fail:
        the writer thread owns the transaction, so giving up here could only lose what it holds."""
        done = threading.Event()
        self._queue.put(("flush", done))
        self._wake.set()
        self._wait_for_writer(done, "flush")
        if self._error is not None and self.on_error == "raise":
            raise RunWriteError(self.error) from self._error

    def _wait_for_writer(self, done: threading.Event, what: str) -> None:
        """Wait for the writer thread to set `done`, however slow the disk; warn once when it is slow,
        and stop waiting only if the thread is gone (then nothing would ever set it)."""
        waited = 0.0
        while not done.wait(WAIT_POLL_S):
            waited += WAIT_POLL_S
            if not self._thread.is_alive():
                if done.is_set():
                    return
                raise RunWriteError(f"cannot write run folder {str(self.run_dir)!r}: the writer thread has stopped")
            if waited >= SLOW_WRITER_WARN_S and not self._slow_warned:
                self._slow_warned = True
                warnings.warn(f"gradwatch: the disk of {self.run_dir.name} is slow: the {what} has waited "
                              f"{waited:.0f} s for the writer; still waiting (nothing is lost)",
                              RuntimeWarning, stacklevel=3)

    def write_final_meta(self, items: dict) -> None:
        """The run's last metadata (status, end, error, and the lost and dropped counts), committed by
        the writer thread after everything queued before it. After a failed write the writer rolls
        back its own transaction, frees the reserve and retries the final status alone, so a full disk
        still ends with status "failed"."""
        final = _Final(dict(items))
        self._queue.put(("final", final))
        self._wake.set()
        self._wait_for_writer(final.done, "final status write")
        if final.error is not None:
            raise RunWriteError(f"{describe_write_error(final.error, self.run_dir)}; the final status "
                                f"{items.get('status')!r} could not be written") from final.error

    def close(self) -> None:
        """Stop the writer thread once it has committed what is queued (waiting for a slow disk), then
        let it close its connection."""
        if self._thread.is_alive():
            done = threading.Event()
            self._queue.put(("stop", done))
            self._wake.set()
            self._wait_for_writer(done, "close")
            self._thread.join()
        if self.owner:
            _release_reserve(self._reserve)
        if self.lost_records and self.on_error == "warn":
            warnings.warn(f"gradwatch: {self.lost_records} records of {self.run_dir.name} were lost "
                          f"({self.error or 'write failures'})", RuntimeWarning, stacklevel=2)

    def _counters(self) -> dict:
        """What the run has lost or dropped so far: kept in meta so every view of the run shows it."""
        return {"dropped_histograms": self.dropped_histograms, "dropped_records": self.dropped_records,
                "lost_records": self.lost_records}

    # ---- the writer thread --------------------------------------------------------------
    def _loop(self) -> None:
        conn = self._conn
        last_heartbeat = 0.0
        while True:
            # Sleep a whole flush interval unless a flush or stop is asked for, then take
            # everything queued in one transaction: one wake-up per interval, not per record,
            # so the writer barely competes with training for the CPU and the GIL.
            self._wake.wait(timeout=self.flush_interval_s)
            self._wake.clear()
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Waiters are collected first: one failing item must not leave a flush() waiting for
            # its timeout (the error is raised to it instead).
            waiters = [payload for kind, payload in items if kind in ("flush", "stop")]
            finals = [payload for kind, payload in items if kind == "final"]
            stop = any(kind == "stop" for kind, _ in items)
            saved_blocks = {key: block.copy() for key, block in self._blocks.items()}
            saved_dirty = set(self._dirty_blocks)
            if self._error is not None and self.on_error == "raise":
                # Failed already: the training thread is being told; later items are lost, counted.
                for kind, payload in items:
                    if kind == "layers":
                        with self._pending_lock:
                            self._pending_records -= 1
                    self.lost_records += _lost_by(kind, payload)
                self._write_finals(conn, finals)
                for waiter in waiters:
                    waiter.set()
                if stop:
                    conn.close()
                    return
                continue
            try:
                for kind, payload in items:
                    if kind not in ("flush", "stop", "final"):
                        self._apply(conn, kind, payload)
                if stop:
                    self._step_norms.close(conn)
                now = time.time()
                if self.owner and (now - last_heartbeat > 1.0 or stop):
                    self._write_meta(conn, {"heartbeat": now, **self._counters()})
                    last_heartbeat = now
                self._write_dirty_blocks(conn)
                self._layer_rollup.write_pending(conn)
                conn.commit()
            except BaseException as exc:  # keep the thread alive; surface at the next call
                self._error = exc
                self.lost_records += sum(_lost_by(kind, payload) for kind, payload in items)
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
                # The roll-up must not count records the rollback discarded.
                self._blocks, self._dirty_blocks = saved_blocks, saved_dirty
                self._layer_rollup.rolled_back()
            self._write_finals(conn, finals)
            for waiter in waiters:
                waiter.set()
            if stop:
                conn.close()
                return

    def _write_finals(self, conn: sqlite3.Connection, finals: list) -> None:
        """Commit each final status (writer thread). On failure: roll back, free the reserve (space
        for the status on a full disk) and retry once; what still fails is handed to the waiter."""
        for final in finals:
            for attempt in (1, 2):
                try:
                    if self.owner:
                        self._write_meta(conn, dict(final.items, **self._counters()))
                    else:
                        self._write_meta(conn, final.items)
                    conn.commit()
                    final.error = None
                    break
                except BaseException as exc:
                    final.error = exc
                    with contextlib.suppress(sqlite3.Error):
                        conn.rollback()
                    if attempt == 1:
                        _release_reserve(self._reserve)
            final.done.set()

    def _apply(self, conn: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "meta":
            self._write_meta(conn, payload)
        elif kind == "tensors":
            conn.executemany(
                "INSERT OR REPLACE INTO tensors(id, name, layer, param, role, module_type, shape,"
                " numel, ord, trainable) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        t["id"], t["name"], t["layer"], t["param"], t["role"], t["module_type"],
                        json.dumps(list(t["shape"])), int(t["numel"]), int(t["ord"]), int(t["trainable"]),
                    )
                    for t in payload
                ],
            )
            self._layer_rollup.forget_tensors()
        elif kind == "scalars":
            step, values, wall, rank = payload
            rows = [(int(step), name, _scalar_value(v), wall, rank) for name, v in values.items()]
            conn.executemany("INSERT INTO scalars(step, name, value, wall, rank) VALUES (?,?,?,?,?)", rows)
            for step_, name, value, _, rank_ in rows:
                self._roll_up(conn, name, rank_, step_, value)
        elif kind == "flag":
            raised_step, wall, flag = payload
            conn.execute(
                "INSERT INTO flags(raised_step, wall, rule, severity, body) VALUES (?,?,?,?,?)",
                (int(raised_step), wall, flag["rule"], flag["severity"], json.dumps(flag, default=float)),
            )
        elif kind == "layers":
            self._write_layer_record(conn, payload)
        elif kind == "step_norms":
            for step, values, wall in self._step_norms.write(conn, payload):
                self._apply(conn, "scalars", (step, values, wall, payload.rank))

    def _write_layer_record(self, conn: sqlite3.Connection, record: LayerRecord) -> None:
        with self._pending_lock:
            self._pending_records -= 1
        block = record.resolve() if record.resolve is not None else record.rows
        if not isinstance(block, StatBlock):
            block = StatBlock.from_rows(block)
        n = len(block.tensor_ids)
        blobs: list = [None] * n
        if block.has_hist is not None and block.has_hist.any():
            rows_with = np.flatnonzero(block.has_hist)
            if record.drop_histograms:
                self.dropped_histograms += len(rows_with)
            else:
                for i, blob in zip(rows_with.tolist(), schema.encode_hists(block.hists[rows_with])):
                    blobs[i] = blob
        stats = block.stats
        # SQLite stores a bound NaN as NULL, so float columns go in as they are; counts as integers.
        columns = [
            np.nan_to_num(stats[:, j], nan=0.0).astype(np.int64).tolist() if field.sql_type == "INTEGER"
            else stats[:, j].tolist()
            for j, field in enumerate(schema.STAT_TABLE)
        ]
        conn.executemany(
            schema.stats_insert_sql(),
            zip([int(record.step)] * n, block.tensor_ids.tolist(), block.kinds.tolist(), *columns, blobs),
        )
        conn.execute(
            "INSERT INTO steps(step, wall, step_time) VALUES (?,?,?)",
            (record.step, record.wall, record.step_time),
        )
        self._layer_rollup.write(conn, int(record.step), block.tensor_ids, block.kinds, stats)

    def _roll_up(self, conn: sqlite3.Connection, name: str, rank: int, step: int, value: float | None) -> None:
        key = (name, rank)
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = _ScalarBlock(0)
        elif block.n == schema.SCALAR_BLOCK:  # full: it was written; start the next one
            block = self._blocks[key] = _ScalarBlock(block.index + 1)
        block.add(step, value)
        self._dirty_blocks.add(key)
        if block.n == schema.SCALAR_BLOCK:
            self._write_blocks(conn, [(key, block)])
            self._dirty_blocks.discard(key)

    def _write_dirty_blocks(self, conn: sqlite3.Connection) -> None:
        if self._dirty_blocks:
            self._write_blocks(conn, [(key, self._blocks[key]) for key in self._dirty_blocks])
            self._dirty_blocks.clear()

    @staticmethod
    def _write_blocks(conn: sqlite3.Connection, blocks: list) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO scalar_blocks(name, rank, block, n, first_step, last_step, ordered, bad,"
            " first_value, first_value_step, last_value, last_value_step, min_value, min_step, max_value, max_step)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(name, rank, *b.row()) for (name, rank), b in blocks],
        )

    @staticmethod
    def _write_meta(conn: sqlite3.Connection, items: dict) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(key, json.dumps(value, default=str)) for key, value in items.items()],
        )


class _ScalarBlock:
    """Running summary of one block of a scalar series (see schema.scalar_blocks)."""

    __slots__ = ("index", "n", "first_step", "last_step", "ordered", "bad", "first", "last", "low", "high")

    def __init__(self, index: int):
        self.index, self.n, self.bad, self.ordered = index, 0, 0, True
        self.first_step = self.last_step = 0
        self.first = self.last = self.low = self.high = None  # (value, step) of finite values

    def add(self, step: int, value: float | None) -> None:
        if self.n == 0:
            self.first_step = step
        elif step <= self.last_step:  # backwards, or a step logged again (the later record wins)
            self.ordered = False
        self.last_step = step
        self.n += 1
        if value is None or not math.isfinite(value):
            self.bad += 1
            return
        point = (value, step)
        if self.first is None:
            self.first = self.low = self.high = point
        elif value < self.low[0]:
            self.low = point
        elif value > self.high[0]:
            self.high = point
        self.last = point

    def copy(self) -> _ScalarBlock:
        twin = _ScalarBlock(self.index)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        return twin

    def row(self) -> tuple:
        def pair(point):
            return (None, None) if point is None else point

        return (self.index, self.n, self.first_step, self.last_step, int(self.ordered), self.bad,
                *pair(self.first), *pair(self.last), *pair(self.low), *pair(self.high))


def _real(value) -> float | None:
    """A float for SQLite: NaN becomes NULL; +/-inf are kept (SQLite stores them)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _scalar_value(value) -> float | None:
    try:
        return _real(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"scalar values must be numbers, got {value!r}") from exc


def _hold_reserve(path: Path) -> None:
    try:
        with open(path, "wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
            except (AttributeError, OSError):
                handle.write(b"\0" * RESERVE_BYTES)
    except OSError:
        _release_reserve(path)
        raise


def _release_reserve(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


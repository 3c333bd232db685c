"""Reads run folders, also while they are being written: metadata, and records by cursor.

Every query that can grow takes `after_seq` and returns the new cursor, so a poller gets each
record exactly once. Torch-free: the dashboard and the CLI use this module.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema, validate
from .access import needs_recovery, open_for_reading, recovered_copy
from .errors import RunLogError
from .histograms import HistogramQueries
from .layer_rollup import LayerRollupQueries
from .layer_stats import LayerStatsQueries, stats_frame
from .process import current_process_identity, process_alive  # noqa: F401 (re-exported)
from .rollup import ScalarQueries
from .step_norms import StepNorms, read_step_norms
from .steps import StepQueries, step_range  # noqa: F401 (step_range re-exported)

# A "running" run on another host whose heartbeat is older than this is reported stale.
STALE_AFTER_S = 120.0
# A "running" run imported from segments (importer.py) from which nothing arrived for this long, by
# this host's clock, is reported stale: a live writer publishes at least every 5 s (publisher.py).
SEGMENT_STALE_AFTER_S = 20.0


@dataclass(frozen=True)
class RunEntry:
    """One entry of a log directory: a readable run (meta) or an unreadable one (error)."""

    run_id: str
    path: Path
    meta: dict | None
    status: str | None
    error: str | None


def resolve_run_dir(logdir: str | os.PathLike, run_id: str) -> Path:
    """The folder of `run_id` inside `logdir`, refusing ids that could escape it (ids come from URLs)."""
    if not schema.is_valid_run_id(run_id):
        raise RunLogError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (no path separators)"
        )
    root = Path(logdir).resolve()
    path = (root / run_id).resolve()
    if path.parent != root:
        raise RunLogError(f"run id {run_id!r} does not name a folder inside {root}")
    return path


def list_runs(logdir: str | os.PathLike) -> list[RunEntry]:
    """Every run folder under `logdir`, newest first; unreadable ones carry an error, never raise."""
    root = Path(logdir)
    if not root.is_dir():
        raise RunLogError(f"log directory {str(root)!r} does not exist or is not a directory")
    entries = []
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        problem = validate.entry_problem(child)
        if problem:
            entries.append(RunEntry(child.name, child, None, None, problem))
            continue
        if not schema.is_valid_run_id(child.name):
            entries.append(RunEntry(child.name, child, None, None, "name is not a valid run id"))
            continue
        try:
            with RunReader(child) as reader:
                entries.append(RunEntry(child.name, child, reader.meta, reader.status(), None))
        except RunLogError as exc:
            entries.append(RunEntry(child.name, child, None, None, str(exc)))
    entries.sort(key=lambda e: float((e.meta or {}).get("started") or 0), reverse=True)
    return entries


def _integer_column(df: pd.DataFrame, column: str) -> None:
    """SQLite keeps text in an INTEGER column of a hand-edited folder: refuse it here (typed_records
    turns this into the run's RecordError), not in a comparison far away."""
    if len(df) and not pd.api.types.is_integer_dtype(df[column]):
        bad = next((v for v in df[column] if not isinstance(v, int) or isinstance(v, bool)), None)
        raise ValueError(f"{column} {bad!r} is not an integer")


def _decode_meta(rows) -> dict:
    meta = {}
    for key, value in rows:
        try:
            meta[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            meta[key] = value
    return meta


class RunReader(StepQueries, ScalarQueries, LayerStatsQueries, LayerRollupQueries, HistogramQueries):
    """Read-only view of one run folder. Cheap to open; safe beside a live writer.

    The indexed queries of long runs live by job in the mixins: steps.py (snapshot, cursors,
    sampled steps), rollup.py (scalar arrays and roll-ups), layer_stats.py (statistics at steps),
    layer_rollup.py (every layer's key statistics per logged step, schema 4),
    histograms.py (sampled histograms). Every SQL statement that reads a run folder is in this package.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        db = self.run_dir / schema.DB_FILENAME
        if not self.run_dir.is_dir():
            raise RunLogError(f"{str(self.run_dir)!r} is not a run folder (not a directory)")
        if not db.is_file() and not db.is_symlink():
            raise RunLogError(f"{str(self.run_dir)!r} is not a gradwatch run folder (no {schema.DB_FILENAME})")
        problem = validate.run_files_problem(self.run_dir)
        if problem:
            raise RunLogError(f"run {self.run_id!r}: {problem}")
        self.db_path = db
        try:
            # Read-only media (an archive, a snapshot) open with mode=ro or immutable=1.
            if needs_recovery(db):  # read-only media with an unreplayed write-ahead log
                try:
                    copy = recovered_copy(db)
                except OSError as exc:
                    raise RunLogError(
                        f"run {self.run_id!r}: its write-ahead log cannot be replayed on read-only storage and a "
                        f"private copy failed ({exc.strerror or exc}); copy the folder to writable storage") from None
                self._conn, _ = open_for_reading(copy)
                self.access_mode = "recovered"
            else:
                self._conn, self.access_mode = open_for_reading(db)
        except sqlite3.OperationalError as exc:
            raise RunLogError(f"run {self.run_id!r}: cannot open {schema.DB_FILENAME} ({exc})") from exc
        except sqlite3.Error as exc:
            raise RunLogError(
                f"run {self.run_id!r}: {schema.DB_FILENAME} is corrupt or not a gradwatch log ({exc})") from exc
        try:
            self.meta = self._read_meta()
            self._check_version()
            validate.check_meta(self.meta, self.run_id)
            self.schema_version = int(self.meta["schema_version"])  # picks the column reads (schema.STAT_TABLE)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise RunLogError(f"run {self.run_id!r}: {schema.DB_FILENAME} is corrupt or not a gradwatch log ({exc})") from exc
        except RunLogError:
            self._conn.close()
            raise

    def _check_version(self) -> None:
        version = self.meta.get("schema_version")
        if version is None:
            raise RunLogError(f"run {self.run_id!r}: {schema.DB_FILENAME} is not a gradwatch log (no schema_version)")
        if version not in schema.READABLE_VERSIONS:
            raise RunLogError(
                f"run {self.run_id!r}: log schema version {version!r} is not readable by this gradwatch "
                f"(reads {sorted(schema.READABLE_VERSIONS)}); upgrade gradwatch"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _read_meta(self) -> dict:
        try:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError as exc:
            raise RunLogError(f"run {self.run_id!r}: not a gradwatch log ({exc})") from exc
        return _decode_meta(rows)

    def refresh_meta(self) -> dict:
        meta = self._read_meta()
        validate.check_meta(meta, self.run_id)
        self.meta = meta
        return self.meta

    def _query(self, sql: str, params=()) -> list:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise RunLogError(f"run {self.run_id!r}: cannot read records ({exc})") from exc

    # ---- status ---------------------------------------------------------------------------
    def status(self) -> str:
        """running / finished / failed / stopped, or stale for a running run whose writer died."""
        status = self.meta.get("status", "running")
        if status != "running":
            return status
        received = self.meta.get("segment_received")
        if isinstance(received, int | float):
            return "stale" if time.time() - float(received) > SEGMENT_STALE_AFTER_S else "running"
        if self.meta.get("host") == socket.gethostname() and self.meta.get("pid"):
            if not process_alive(int(self.meta["pid"]), self.meta.get("pid_start_ticks")):
                return "stale"
            return "running"
        heartbeat = self.meta.get("heartbeat") or self.meta.get("started") or 0
        return "stale" if time.time() - float(heartbeat) > STALE_AFTER_S else "running"

    # ---- tensors --------------------------------------------------------------------------
    def tensors(self) -> pd.DataFrame:
        """One row per recorded parameter or module output, in forward order."""
        rows = self._query(
            "SELECT id, name, layer, param, role, module_type, shape, numel, ord, trainable"
            " FROM tensors ORDER BY ord, id"
        )
        columns = ["tensor_id", "name", "layer", "param", "role", "module_type", "shape", "numel", "ord", "trainable"]
        validate.check_tensor_rows(rows, columns, self.run_id)
        df = pd.DataFrame(rows, columns=columns)
        df["shape"] = [validate.decode_shape(text, name, self.run_id) for text, name in zip(df["shape"], df["name"])]
        df["trainable"] = df["trainable"].astype(bool)
        return df

    def step_norms(self) -> StepNorms:
        """Every optimizer step's per-parameter gradient norms (step_norms.py), columns in forward
        order; empty for folders that recorded none (before schema 5, imports)."""
        order = {}
        if self._query("SELECT 1 FROM tensors LIMIT 1"):
            order = {name: i for i, name in enumerate(self.tensors()["name"])}
        try:
            return read_step_norms(self._conn, self.meta, order)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise RunLogError(f"run {self.run_id!r}: cannot read step norms ({exc})") from exc

    def layer_order(self) -> list[str]:
        """Layer (module path) names in forward order."""
        tensors = self.tensors()
        return list(dict.fromkeys(tensors["layer"]))

    # ---- scalars --------------------------------------------------------------------------
    @validate.typed_records('scalars')
    def scalars(
        self, after_seq: int = 0, names: list[str] | None = None, rank: int | None = 0
    ) -> tuple[pd.DataFrame, int]:
        """Scalar records with seq > after_seq: columns seq, step, name, value, wall, rank.

        Returns (records, cursor): pass the cursor back to get only newer records.
        rank=None returns every rank's scalars.
        """
        sql = "SELECT seq, step, name, value, wall, rank FROM scalars WHERE seq > ?"
        params: list[Any] = [after_seq]
        if names:
            sql += f" AND name IN ({','.join('?' * len(names))})"
            params += list(names)
        if rank is not None:
            sql += " AND rank = ?"
            params.append(rank)
        rows = self._query(sql + " ORDER BY seq", params)
        df = pd.DataFrame(rows, columns=["seq", "step", "name", "value", "wall", "rank"])
        _integer_column(df, "step")
        df["value"] = df["value"].astype(float)  # NULL -> NaN
        cursor = int(df["seq"].iloc[-1]) if len(df) else after_seq
        return df, cursor

    def scalar_names(self) -> list[str]:
        # A skip-scan over the (name, ...) index: one probe per distinct name, not per row.
        rows = self._query(
            "WITH RECURSIVE names(name) AS (SELECT MIN(name) FROM scalars UNION ALL"
            " SELECT (SELECT MIN(name) FROM scalars WHERE name > names.name) FROM names"
            " WHERE names.name IS NOT NULL) SELECT name FROM names WHERE name IS NOT NULL"
        )
        return [r[0] for r in rows]

    @validate.typed_records('scalars')
    def scalar_series(self, name: str, rank: int = 0) -> pd.DataFrame:
        """One scalar over steps (columns step, value, wall); a later record for a step wins."""
        rows = self._query(
            "SELECT step, value, wall FROM scalars WHERE name = ? AND rank = ? ORDER BY seq", (name, rank)
        )
        df = pd.DataFrame(rows, columns=["step", "value", "wall"])
        df["value"] = df["value"].astype(float)
        return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)

    # ---- layer statistics -----------------------------------------------------------------
    @validate.typed_records('stats')
    def layer_stats(
        self,
        after_seq: int = 0,
        kinds: tuple[str, ...] | None = None,
        step_min: int | None = None,
        step_max: int | None = None,
        names: list[str] | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """Per-tensor statistics with seq > after_seq, joined with tensor names.

        Columns: seq, step, tensor_id, name, layer, param, kind ('grad'|'weight'|'activation'),
        norm, mean, std, min, max, nan_count, inf_count, zero_frac, update_ratio (weights),
        saturated_frac and dead_frac (activations). NaN where a statistic does not apply.
        """
        sql = (
            self.stats_select("s")
            # With a step range, `+s.seq` keeps SQLite from scanning by rowid so it uses the
            # step index; without one, the rowid range (seq > cursor) is the fast path.
            + (" WHERE +s.seq > ?" if step_min is not None or step_max is not None else " WHERE s.seq > ?")
        )
        params: list[Any] = [after_seq]
        if kinds:
            codes = [schema.KIND_CODES[k] for k in kinds]
            sql += f" AND s.kind IN ({','.join('?' * len(codes))})"
            params += codes
        range_sql, range_params = step_range("s.step", step_min, step_max)
        sql += range_sql
        params += range_params
        if names:
            sql += f" AND t.name IN ({','.join('?' * len(names))})"
            params += list(names)
        df = stats_frame(self._query(sql + " ORDER BY s.seq", params))
        cursor = int(df["seq"].iloc[-1]) if len(df) else after_seq
        return df, cursor

    @validate.typed_records('steps')
    def steps(self, after_seq: int = 0) -> tuple[pd.DataFrame, int]:
        """Logged optimizer steps (columns seq, step, wall, step_time) with seq > after_seq."""
        rows = self._query("SELECT seq, step, wall, step_time FROM steps WHERE seq > ? ORDER BY seq", (after_seq,))
        df = pd.DataFrame(rows, columns=["seq", "step", "wall", "step_time"])
        _integer_column(df, "step")
        cursor = int(df["seq"].iloc[-1]) if len(df) else after_seq
        return df, cursor

    @validate.typed_records('steps')
    def logged_steps(self) -> np.ndarray:
        return np.array([r[0] for r in self._query("SELECT DISTINCT step FROM steps ORDER BY step")], dtype=np.int64)

    def histograms(
        self,
        name: str,
        kind: str = "grad",
        step_min: int | None = None,
        step_max: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(steps, counts[len(steps), HIST_LEN]) of one tensor, steps ascending; rows with a
        dropped histogram are left out."""
        sql = (
            "SELECT s.step, s.hist FROM stats s JOIN tensors t ON t.id = s.tensor_id"
            " WHERE t.name = ? AND s.kind = ? AND s.hist IS NOT NULL"
        )
        params: list[Any] = [name, schema.KIND_CODES[kind]]
        range_sql, range_params = step_range("s.step", step_min, step_max)
        sql += range_sql
        params += range_params
        rows = self._query(sql + " ORDER BY s.step, s.seq", params)
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, schema.HIST_LEN), dtype=np.int64)
        steps = np.array([r[0] for r in rows], dtype=np.int64)
        counts = np.stack([validate.decode_hist(r[1], f"{name} ({kind}) at step {r[0]}", self.run_id) for r in rows])
        return steps, counts

    # ---- flags and notes ------------------------------------------------------------------
    def flags(self, after_seq: int = 0) -> tuple[list[dict], int]:
        rows = self._query("SELECT seq, raised_step, wall, body FROM flags WHERE seq > ? ORDER BY seq", (after_seq,))
        flags = []
        for seq, raised_step, wall, body in rows:
            flag = validate.decode_flag(body, seq, self.run_id)
            if not validate.flag_row_ok(raised_step, wall):
                raise validate.RecordError(f"run {self.run_id!r}: flag #{seq} has a malformed step "
                                           f"{raised_step!r} or time {wall!r}")
            flag.update(seq=seq, raised_step=raised_step, raised_wall=wall)
            flags.append(flag)
        return flags, (rows[-1][0] if rows else after_seq)

    def notes(self, after_seq: int = 0) -> tuple[list[dict], int]:
        rows = self._query(
            "SELECT seq, wall, author, step, layer, text FROM notes WHERE seq > ? ORDER BY seq", (after_seq,)
        )
        notes = [validate.check_note(dict(zip(("seq", "wall", "author", "step", "layer", "text"), r)), self.run_id)
                 for r in rows]
        return notes, (rows[-1][0] if rows else after_seq)

    # ---- summaries ------------------------------------------------------------------------
    @validate.typed_records('steps or scalars')
    def counts(self) -> dict:
        """Cheap totals for listings: steps logged, last step, scalar count."""
        (steps_logged, last_step), = self._query("SELECT COUNT(*), MAX(step) FROM steps")
        # The newest scalar's step (by seq: an index-free O(1) lookup) stands for the last one.
        scalar_last = next(iter(self._query("SELECT step FROM scalars ORDER BY seq DESC LIMIT 1")), (None,))[0]
        return {
            "steps_logged": int(steps_logged),
            "last_step": None if last_step is None and scalar_last is None else max(
                x for x in (last_step, scalar_last) if x is not None
            ),
        }


def add_note(run_dir: str | os.PathLike, text: str, *, author: str = "anonymous", step: int | None = None,
             layer: str | None = None) -> int:
    """Append a team note to a run folder; returns its seq. Validates lengths, stores text as given."""
    for label, value in (("text", text), ("author", author), ("layer", layer)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"a note's {label} must be text, got {type(value).__name__}")
    text = (text or "").strip()
    author = (author or "anonymous").strip() or "anonymous"
    layer = (layer or "").strip() or None
    if layer is not None and len(layer) > schema.NOTE_LAYER_MAX_CHARS:
        raise ValueError(f"a note's layer is at most {schema.NOTE_LAYER_MAX_CHARS} characters, got {len(layer)}")
    if not text:
        raise ValueError("a note needs some text")
    if len(text) > schema.NOTE_MAX_CHARS:
        raise ValueError(f"a note is at most {schema.NOTE_MAX_CHARS} characters, got {len(text)}")
    if len(author) > schema.NOTE_AUTHOR_MAX_CHARS:
        raise ValueError(f"an author name is at most {schema.NOTE_AUTHOR_MAX_CHARS} characters")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= validate.MAX_STEP):
        raise ValueError(f"a note's step must be an integer from 0 to {validate.MAX_STEP}, got {step!r}")
    with RunReader(run_dir) as reader:  # validates the folder first
        if reader.access_mode != "rw":
            raise ValueError(f"run {reader.run_id!r} is on read-only storage: notes cannot be added")
        (count,), = reader._query("SELECT COUNT(*) FROM notes")
    if count >= schema.NOTES_MAX_PER_RUN:
        raise ValueError(f"run {Path(run_dir).name!r} already has {count} notes, the most a run keeps "
                         f"({schema.NOTES_MAX_PER_RUN})")
    from .writer import connect

    conn = connect(Path(run_dir) / schema.DB_FILENAME)
    try:
        cur = conn.execute(
            "INSERT INTO notes(wall, author, step, layer, text) VALUES (?,?,?,?,?)",
            (time.time(), author, step, layer, text),
        )
        conn.commit()
        return int(cur.lastrowid)
    except sqlite3.Error as exc:
        raise ValueError(f"cannot store the note in run {Path(run_dir).name!r} ({exc})") from None
    finally:
        conn.close()

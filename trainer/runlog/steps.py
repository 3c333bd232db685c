"""Snapshots, cursors and logged steps: what a poller and a zoomed chart ask of a run first.

Mixed into RunReader. Steps are picked through the `steps` table's step index (counts, strides,
seeks), never by reading every logged step of a long run.
"""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np

from . import validate
from .errors import RunLogError

# The growing tables; each one's newest seq is a cursor a poller passes back as after_seq.
CURSOR_TABLES = ("scalars", "stats", "flags", "notes", "steps")


def step_range(column: str, step_min: int | None, step_max: int | None) -> tuple[str, list[int]]:
    """SQL ` AND column >= ? AND column <= ?` for the bounds given, and its parameters."""
    sql, params = "", []
    # Bounds are clamped to SQLite's integer range: a URL's 99999999999999999999 means "to the end".
    step_min, step_max = (validate.clamp_step(v, low=-validate.MAX_STEP) for v in (step_min, step_max))
    if step_min is not None:
        sql += f" AND {column} >= ?"
        params.append(step_min)
    if step_max is not None:
        sql += f" AND {column} <= ?"
        params.append(step_max)
    return sql, params


class StepQueries:
    """Snapshot, cursors and logged-step lookups (RunReader mixin: uses its _query and _conn)."""

    @contextlib.contextmanager
    def snapshot(self):
        """Run the enclosed queries in one read transaction: they all see the same records, so a
        view and the cursor handed to its live poller agree."""
        try:
            self._conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise RunLogError(f"run {self.run_id!r}: cannot read records ({exc})") from exc
        try:
            yield self
        except BaseException:
            # Ending the read must not replace the error that ended it (a corrupt page makes the
            # COMMIT fail too): roll back quietly and let the first error, a RunLogError, through.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise RunLogError(f"run {self.run_id!r}: cannot read records ({exc})") from exc

    def cursors(self) -> dict:
        """The newest seq of each growing table (what a poller passes back as after_seq)."""
        return {table: self.cursor(table) for table in CURSOR_TABLES}

    def cursor(self, table: str) -> int:
        """The newest seq of one growing table (0 when it is empty): one rowid seek."""
        if table not in CURSOR_TABLES:
            raise ValueError(f"unknown table {table!r}; growing tables: {', '.join(CURSOR_TABLES)}")
        (value,), = self._query(f"SELECT COALESCE(MAX(seq), 0) FROM {table}")
        return int(value)

    def count_after(self, table: str, after_seq: int) -> int:
        """How many records of a growing table a poll with `after_seq` would return."""
        if table not in CURSOR_TABLES:
            raise ValueError(f"unknown table {table!r}; growing tables: {', '.join(CURSOR_TABLES)}")
        (count,), = self._query(f"SELECT COUNT(*) FROM {table} WHERE seq > ?", (int(after_seq),))
        return int(count)

    def extent(self) -> tuple[int | None, int | None, int]:
        """(first logged step, last logged step, number of logged steps) via the step index."""
        (first, last), = self._query("SELECT MIN(step), MAX(step) FROM steps")
        (count,), = self._query("SELECT COUNT(*) FROM steps")
        return first, last, int(count)

    @validate.typed_records("steps")
    def first_logged_steps(self, n: int = 2) -> list[int]:
        """The steps of the first `n` layer records, in arrival order (their spacing is the logging stride)."""
        return [r[0] for r in self._query("SELECT step FROM steps ORDER BY rowid LIMIT ?", (int(n),))]

    @validate.typed_records("steps")
    def last_logged_step(self) -> int | None:
        (value,), = self._query("SELECT MAX(step) FROM steps")
        return None if value is None else int(value)

    @validate.typed_records("scalars")
    def last_step_any(self, names: list[str]) -> int | None:
        """The last step of any record (layer statistics or one of the scalars `names`), index lookups only."""
        candidates = [self.last_logged_step()]
        for name in names:
            (value,), = self._query("SELECT MAX(step) FROM scalars WHERE name = ?", (name,))
            candidates.append(value)
        found = [int(c) for c in candidates if c is not None]
        return max(found) if found else None

    @validate.typed_records("steps")
    def logged_step_at_or_before(self, step: int) -> int | None:
        """The logged step at or before `step`, or the first one when `step` precedes them all."""
        (value,), = self._query("SELECT MAX(step) FROM steps WHERE step <= ?", (int(step),))
        if value is None:
            (value,), = self._query("SELECT MIN(step) FROM steps")
        return None if value is None else int(value)

    @validate.typed_records("steps")
    def logged_steps_between(self, step_min: int | None, step_max: int | None) -> np.ndarray:
        range_sql, params = step_range("step", step_min, step_max)
        rows = self._query(f"SELECT DISTINCT step FROM steps WHERE 1{range_sql} ORDER BY step", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    @validate.typed_records("steps")
    def sample_logged_steps(self, step_min: int | None, step_max: int | None, max_points: int,
                            must_include=()) -> tuple[np.ndarray, int]:
        """Up to ~max_points logged steps spread evenly over [step_min, step_max] (plus `must_include`
        snapped to logged steps), and how many logged steps the range holds. The steps are picked
        by an index-range count and a rowid stride, never by reading every step."""
        range_sql, params = step_range("step", step_min, step_max)
        where = f"WHERE 1{range_sql}"
        (count,), = self._query(f"SELECT COUNT(*) FROM steps {where}", params)
        if count <= max_points:
            return self.logged_steps_between(step_min, step_max), int(count)
        stride = max(1, count // max_points)
        rows = self._query(f"SELECT DISTINCT step FROM steps {where} AND rowid % ? = 0 ORDER BY step",
                           params + [stride])
        chosen = {r[0] for r in rows}
        (first, last), = self._query(f"SELECT MIN(step), MAX(step) FROM steps {where}", params)
        chosen.update(s for s in (first, last) if s is not None)
        for wanted in must_include:
            if wanted is None:
                continue
            if (step_min is None or wanted >= step_min) and (step_max is None or wanted <= step_max):
                snapped = self.logged_step_at_or_before(wanted)
                if snapped is not None:
                    chosen.add(snapped)
        return np.array(sorted(chosen), dtype=np.int64), int(count)

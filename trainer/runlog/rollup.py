"""Scalar series read for display: whole series as arrays, their roll-up blocks (schema 2), the
steps of NaN/Inf values, and the records after a cursor.

Mixed into RunReader. A long series is drawn from scalar_blocks (~3,100 rows for 200,000 records);
choosing which points to show is the caller's (the dashboard's downsampling), reading them is here.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from . import validate
from .steps import step_range

FLOAT_MAX = 1.7976931348623157e308  # values outside +-this are infinite
NULL_SENTINEL = -1.5e308  # stands in for NULL (= NaN) in numeric scalar queries; no real loss is this
BLOCK_COLUMNS = ("first_step", "last_step", "n", "ordered", "bad", "first_value", "first_value_step", "last_value",
                 "last_value_step", "min_value", "min_step", "max_value", "max_step")


class ScalarQueries:
    """Scalar arrays and roll-up blocks (RunReader mixin: uses its _query)."""

    @validate.typed_records("scalars")
    def scalar_arrays(self, name: str, step_min: int | None = None, step_max: int | None = None,
                      rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one scalar via its (name, step) index; a later record for a step wins."""
        range_sql, range_params = step_range("step", step_min, step_max)
        rows = self._query(
            f"SELECT step, IFNULL(value, {NULL_SENTINEL!r}) FROM scalars WHERE name = ? AND rank = ?{range_sql}"
            " ORDER BY step, seq", [name, rank, *range_params])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # All-numeric rows (NULL -> sentinel) flatten in C: ~5x faster than np.array(list of tuples).
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=float, count=2 * len(rows))
        steps = flat[0::2].astype(np.int64)
        values = flat[1::2]
        values[values == NULL_SENTINEL] = np.nan  # NULL stands for NaN (SQLite has no NaN)
        last = np.r_[steps[1:] != steps[:-1], True]
        return steps[last], values[last]

    def nonfinite_scalar_steps(self, name: str, step_min: int | None = None, step_max: int | None = None,
                               rank: int = 0) -> np.ndarray:
        """Steps at which the scalar was NaN or +-Inf, ascending."""
        range_sql, params = step_range("step", step_min, step_max)
        rows = self._query(
            "SELECT step FROM scalars WHERE name = ? AND rank = ?"
            f" AND (value IS NULL OR value NOT BETWEEN {-FLOAT_MAX!r} AND {FLOAT_MAX!r}){range_sql}"
            " ORDER BY step", [name, rank, *params])
        return np.array([r[0] for r in rows], dtype=np.int64)

    def scalar_blocks(self, name: str, rank: int = 0, step_min: int | None = None,
                      step_max: int | None = None) -> dict | None:
        """Roll-up blocks lying wholly inside [step_min, step_max] as column arrays (BLOCK_COLUMNS),
        or None where they cannot stand for the records (version-1 run, steps out of order)."""
        if not self._has_table("scalar_blocks"):
            return None
        sql = f"SELECT {', '.join(BLOCK_COLUMNS)} FROM scalar_blocks WHERE name = ? AND rank = ?"
        params: list[Any] = [name, rank]
        if step_min is not None:
            sql += " AND first_step >= ?"
            params.append(int(step_min))
        if step_max is not None:
            sql += " AND last_step <= ?"
            params.append(int(step_max))
        rows = self._query(sql + " ORDER BY block", params)
        if not rows:
            return None
        arr = np.array(rows, dtype=float)  # NULL -> nan
        out = {c: arr[:, i] for i, c in enumerate(BLOCK_COLUMNS)}
        first, last = out["first_step"], out["last_step"]
        if not out["ordered"].all() or np.any(first[1:] <= last[:-1]):
            return None  # steps go backwards or repeat across blocks: only the records can tell
        return out

    def scalar_rows_after(self, after_seq: int, rank: int = 0) -> pd.DataFrame:
        """Scalar records with seq > after_seq (columns seq, step, name, value), in arrival order:
        RunReader.scalars() without wall/rank, built from column arrays (the live poll's hot path)."""
        rows = self._query("SELECT seq, step, name, value FROM scalars WHERE seq > ? AND rank = ? ORDER BY seq",
                           (int(after_seq), int(rank)))
        # Column arrays straight from the rows: building the frame from tuples costs more than the query.
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        return pd.DataFrame({
            "seq": np.array(columns[0], dtype=np.int64), "step": np.array(columns[1], dtype=np.int64),
            "name": np.array(columns[2], dtype=object),
            "value": np.array([np.nan if v is None else v for v in columns[3]], dtype=float),
        })

    def _has_table(self, table: str) -> bool:
        rows = self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return bool(rows)

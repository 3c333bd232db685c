"""Every optimizer step's per-parameter gradient norms: how they are kept in a run folder and read back.

The capture takes each parameter's gradient norm on every step, logged or not (trainer/capture/
grad_norms.py), and hands batches of steps to the writer thread. This module, torch-free, decides
what of that series is stored, so that no spike is ever lost to sampling and the table stays bounded:

- an **envelope** for the whole run: one row per block of `span` consecutive steps (the capture
  cadence: one block per logged interval) holding each parameter's min and max norm and how many of
  the block's steps had a non-finite gradient;
- a **flight recorder**: the last `RECENT_STEPS` steps as exact rows, older exact rows deleted as new
  ones come (a killed process still leaves its last few hundred steps);
- **windows around anomalies**: when a gradient turns non-finite, or a norm jumps past `SPIKE_FACTOR`
  times its recent median, the exact rows from `WINDOW_BEFORE` steps before to `WINDOW_AFTER` after
  are kept for good, at most `MAX_WINDOWS` windows per run.

So a run of S steps and T parameters keeps at most about S/span + RECENT_STEPS + MAX_WINDOWS *
(WINDOW_BEFORE + WINDOW_AFTER) rows of 8*T bytes (16*T for envelope rows). The total gradient norm
and non-finite count of each step (the `sentinel_*` scalars) are derived here from the same numbers.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import schema

RECENT_STEPS = 256
SPIKE_FACTOR = 8.0  # a norm this many times its recent median opens a window (the rules judge; this only keeps)
SPIKE_HISTORY = 16  # exact steps needed before spikes are judged
MEDIAN_REFRESH = 16  # the per-parameter reference medians are recomputed every this many steps
WINDOW_BEFORE = 128
WINDOW_AFTER = 128
MAX_WINDOWS = 64

NO_GRADIENT = -1.0  # what the capture writes for a parameter without a gradient at a step
NORM_DTYPE = np.dtype("<f8")
COUNT_DTYPE = np.dtype("<u4")
META_NAMES = "step_norm_names"  # parameter names of the columns, in column order
META_LAYERS = "step_norm_layers"


@dataclass
class StepNormBatch:
    """Consecutive optimizer steps' per-parameter gradient norms, as the capture hands them over."""

    steps: np.ndarray  # int64 [n]
    walls: np.ndarray  # float64 [n]
    norms: np.ndarray  # float64 [n, T]; NaN = the parameter had no gradient at that step
    span: int  # the capture cadence now: envelope block length
    rank: int = 0


@dataclass(frozen=True)
class StepNorms:
    """What `RunReader.step_norms()` returns (see docs/log-format.md, "Every-step gradient norms")."""

    steps: np.ndarray  # int64 [n], ascending
    names: tuple[str, ...]
    layers: tuple[str, ...]
    norm_max: np.ndarray  # float64 [n, T]: the norm at an exact row, the block max at an envelope row
    norm_min: np.ndarray  # float64 [n, T]: equal to norm_max at exact rows
    nonfinite: np.ndarray  # int64 [n, T]: steps of the row whose gradient held NaN/Inf
    span: np.ndarray  # int64 [n]: 1 = one exact step; k > 1 = the k steps ending at steps[i]

    @classmethod
    def empty_for(cls, names=(), layers=()) -> StepNorms:
        t = len(names)
        return cls(np.zeros(0, np.int64), tuple(names), tuple(layers), np.zeros((0, t)), np.zeros((0, t)),
                   np.zeros((0, t), np.int64), np.zeros(0, np.int64))

    @property
    def empty(self) -> bool:
        return len(self.steps) == 0

    def _rows(self, keep: np.ndarray) -> StepNorms:
        return StepNorms(self.steps[keep], self.names, self.layers, self.norm_max[keep], self.norm_min[keep],
                         self.nonfinite[keep], self.span[keep])

    def exact(self) -> StepNorms:
        """Only the rows of single steps."""
        return self._rows(self.span == 1)

    def layer_norms(self) -> tuple[tuple[str, ...], np.ndarray]:
        """(layers in column order of first appearance, [n, layers] norms: sqrt of the sum of the
        layer's parameters' squared norms, on norm_max; NaN where none of its parameters had a gradient)."""
        layers = tuple(dict.fromkeys(self.layers))
        index = {layer: i for i, layer in enumerate(layers)}
        columns = np.asarray([index[layer] for layer in self.layers], dtype=np.int64)
        squares = np.zeros((len(self.steps), len(layers)))
        present = np.zeros((len(self.steps), len(layers)), bool)
        finite = ~np.isnan(self.norm_max)
        np.add.at(squares.T, columns, np.where(finite, self.norm_max, 0.0).T ** 2)
        np.logical_or.at(present.T, columns, finite.T)
        return layers, np.where(present, np.sqrt(squares), np.nan)

    def total(self) -> np.ndarray:
        """The total gradient norm of each row (on norm_max), NaN where no parameter had a gradient."""
        return _total(self.norm_max)


def _total(norms: np.ndarray) -> np.ndarray:
    finite = ~np.isnan(norms)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sqrt(np.sum(np.where(finite, norms, 0.0) ** 2, axis=1))
    return np.where(finite.any(axis=1), total, np.nan)


def encode(values: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def decode(blob: bytes | None, width: int, dtype: np.dtype) -> np.ndarray:
    if blob is None:  # a nonfinite column without any: all zero
        return np.zeros(width, dtype=np.float64 if dtype == NORM_DTYPE else np.int64)
    values = np.frombuffer(blob, dtype=dtype)
    if len(values) != width:
        raise ValueError(f"step_norms row holds {len(values)} values, expected {width}")
    return values.astype(np.float64 if dtype == NORM_DTYPE else np.int64)


class StepNormSeries:
    """The writer thread's side: turns batches into envelope, recent and anomaly-window rows."""

    def __init__(self):
        self._recent: deque = deque(maxlen=SPIKE_HISTORY * 4)  # exact norms for the spike reference
        self._reference: np.ndarray | None = None
        self._since_refresh = 0
        self._was_nonfinite: np.ndarray | None = None
        self._keep_until = -1  # exact rows up to this step are kept for good
        self._windows = 0
        self._block: _Block | None = None

    def write(self, conn: sqlite3.Connection, batch: StepNormBatch) -> list[tuple[int, dict, float]]:
        """Insert the batch's rows; return the per-step sentinel scalars (step, values, wall)."""
        raw = np.asarray(batch.norms, dtype=np.float64)
        # The capture writes NO_GRADIENT (-1) for a parameter without a gradient at that step, and the
        # norm otherwise: NaN or Inf there is a gradient holding NaN/Inf, stored as +inf and counted.
        bad = ~np.isfinite(raw)
        norms = np.where(raw < 0, np.nan, np.where(bad, np.inf, raw))
        exact_rows, sentinels = [], []
        present = ~(raw < 0)  # NaN compares False: a NaN gradient is present
        with np.errstate(over="ignore", invalid="ignore"):  # a NaN gradient makes the total NaN, as torch's would
            totals = np.sqrt(np.sum(np.where(present, raw, 0.0) ** 2, axis=1))
        for i, step in enumerate(batch.steps.tolist()):
            row, row_bad = norms[i], bad[i]
            if batch.rank == 0 and self._anomaly(row, row_bad) and self._windows < MAX_WINDOWS:
                self._windows += 1
                start = step - WINDOW_BEFORE
                conn.execute("UPDATE step_norms SET keep = 1 WHERE rank = 0 AND span = 1 AND step >= ?", (start,))
                exact_rows = [r if r[0] < start else (*r[:4], 1, *r[5:]) for r in exact_rows]
                self._keep_until = step + WINDOW_AFTER
            keep = int(batch.rank == 0 and step <= self._keep_until)
            exact_rows.append((step, 1, batch.rank, float(batch.walls[i]), keep, encode(row, NORM_DTYPE), None,
                               encode(row_bad, COUNT_DTYPE) if row_bad.any() else None))
            if present[i].any():
                sentinels.append((step, {schema.SENTINEL_GRAD_NORM: float(totals[i]),
                                         schema.SENTINEL_NONFINITE: float(row_bad.sum())}, float(batch.walls[i])))
            if batch.rank == 0:
                self._add_to_block(conn, step, row, row_bad, max(1, int(batch.span)), float(batch.walls[i]))
        conn.executemany(_INSERT, exact_rows)
        if len(batch.steps):
            newest = int(batch.steps[-1])
            conn.execute("DELETE FROM step_norms WHERE rank = ? AND span = 1 AND keep = 0 AND step <= ?",
                         (batch.rank, newest - RECENT_STEPS))
        return sentinels

    def close(self, conn: sqlite3.Connection) -> None:
        """The run ends: its last, partial block is written too."""
        if self._block is not None and self._block.count > 1:
            conn.execute(_INSERT, self._block.row())
        self._block = None

    def _anomaly(self, row: np.ndarray, row_bad: np.ndarray) -> bool:
        onset = self._was_nonfinite is not None and len(row) == len(self._was_nonfinite) and \
            bool((row_bad & ~self._was_nonfinite).any())
        self._was_nonfinite = row_bad.copy()
        spike = False
        if self._reference is not None and len(row) == len(self._reference):
            with np.errstate(invalid="ignore"):
                spike = bool(np.any(row > SPIKE_FACTOR * self._reference))
        self._recent.append(np.where(row_bad, np.nan, row))
        self._since_refresh += 1
        if len(self._recent) >= SPIKE_HISTORY and (self._reference is None or self._since_refresh >= MEDIAN_REFRESH):
            self._since_refresh = 0
            history = np.asarray([r for r in self._recent if len(r) == len(row)])
            with warnings.catch_warnings():  # a parameter without any gradient yet: all-NaN column
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(np.where(history > 0, history, np.nan), axis=0)
            self._reference = np.where(np.isfinite(median), median, np.inf)
        return onset or spike

    def _add_to_block(self, conn, step: int, row: np.ndarray, row_bad: np.ndarray, span: int, wall: float) -> None:
        block = self._block
        if block is not None and (len(block.high) != len(row) or block.count >= block.span):
            self._block = block = None
        if block is None:
            self._block = block = _Block(span, len(row))
        block.add(step, row, row_bad, wall)
        if block.count >= block.span:
            if block.count > 1:  # a block of one step is its exact row
                conn.execute(_INSERT, block.row())
            self._block = None


class _Block:
    __slots__ = ("span", "count", "last_step", "wall", "high", "low", "bad")

    def __init__(self, span: int, width: int):
        self.span, self.count, self.last_step, self.wall = span, 0, -1, 0.0
        self.high = np.full(width, np.nan)
        self.low = np.full(width, np.nan)
        self.bad = np.zeros(width, np.int64)

    def add(self, step: int, row: np.ndarray, row_bad: np.ndarray, wall: float) -> None:
        finite = np.where(row_bad, np.nan, row)
        with np.errstate(invalid="ignore"):
            self.high = np.fmax(self.high, finite)
            self.low = np.fmin(self.low, finite)
        self.bad += row_bad
        self.count += 1
        self.last_step, self.wall = step, wall

    def row(self) -> tuple:
        return (self.last_step, self.count, 0, self.wall, 1, encode(self.high, NORM_DTYPE),
                encode(self.low, NORM_DTYPE), encode(self.bad, COUNT_DTYPE) if self.bad.any() else None)


_INSERT = ("INSERT OR REPLACE INTO step_norms(step, span, rank, wall, keep, norm_max, norm_min, nonfinite)"
           " VALUES (?,?,?,?,?,?,?,?)")


def read_step_norms(conn: sqlite3.Connection, meta: dict, tensors_order: dict[str, int] | None = None) -> StepNorms:
    """Rank 0's series: exact rows, and the envelope rows of blocks not wholly covered by exact rows."""
    names = tuple(meta.get(META_NAMES) or ())
    layers = tuple(meta.get(META_LAYERS) or ())
    if len(layers) != len(names):
        layers = names
    try:
        rows = conn.execute("SELECT step, span, norm_max, norm_min, nonfinite FROM step_norms WHERE rank = 0"
                            " ORDER BY step, span").fetchall()
    except sqlite3.OperationalError as exc:  # a folder from before schema 5 has no such table
        if "no such table" in str(exc):
            return StepNorms.empty_for(names, layers)
        raise
    width = len(names)
    exact_steps = {step for step, span, *_ in rows if span == 1}
    kept = [r for r in rows if r[1] == 1 or not all(s in exact_steps for s in range(r[0] - r[1] + 1, r[0] + 1))]
    n = len(kept)
    steps = np.fromiter((r[0] for r in kept), np.int64, n)
    span = np.fromiter((r[1] for r in kept), np.int64, n)
    high = np.empty((n, width))
    low = np.empty((n, width))
    bad = np.empty((n, width), np.int64)
    for i, (_, _, max_blob, min_blob, bad_blob) in enumerate(kept):
        high[i] = decode(max_blob, width, NORM_DTYPE)
        low[i] = high[i] if min_blob is None else decode(min_blob, width, NORM_DTYPE)
        bad[i] = decode(bad_blob, width, COUNT_DTYPE)
    norms = StepNorms(steps, names, layers, high, low, bad, span)
    if tensors_order:
        order = sorted(range(width), key=lambda j: (tensors_order.get(names[j], 1 << 30), j))
        if order != list(range(width)):
            norms = StepNorms(steps, tuple(names[j] for j in order), tuple(layers[j] for j in order),
                              high[:, order], low[:, order], bad[:, order], span)
    return norms


def meta_items(names: list[str], layers: list[str]) -> dict:
    return {META_NAMES: list(names), META_LAYERS: list(layers)}

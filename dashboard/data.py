"""The dashboard's one data-access module: run folders in, plain Python/numpy/pandas out.

Everything the pages show comes through `RunStore`, which reads runs with trainer.runlog's reader
and diagnoses them with trainer.diagnose (both torch-free). Results that are costly to compute and
cannot change until the run's files change (run summaries, diagnoses, downsampled series) are kept in
a diskcache private to the app, keyed by the database files' size and mtime, so gunicorn workers
share them and nothing lives in one worker's memory.

Every "view" read happens inside one SQLite read transaction (a snapshot), so the records a figure
shows and the cursor it hands to the live poller always agree: the next poll returns exactly the
records after that cursor, never one twice, never one missed.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradwatch.trainer.runlog import RunLogError, RunReader, add_note, resolve_run_dir, validate
from gradwatch.trainer.runlog import schema as log_schema
from gradwatch.trainer.runlog.reader import step_range

from . import series

SUMMARY_VERSION = 4  # bump when the summary dict changes shape (old cache entries are ignored)
DIAGNOSIS_TTL_LIVE_S = 10.0  # a running run's diagnosis is recomputed at most this often
LARGE_RUN_STATS_ROWS = 1_000_000  # beyond this, pages get the diagnosis from a background thread
BACKGROUND_DIAGNOSIS_TIMEOUT_S = 900.0
CACHE_SIZE_LIMIT = 512 * 2**20
CACHE_EXPIRE_S = 7 * 24 * 3600
FLOAT_MAX = 1.7976931348623157e308  # values outside +-this are infinite
NULL_SENTINEL = -1.5e308  # stands in for NULL (= NaN) in numeric scalar queries; no real loss is this
STATS_COLUMNS = [
    "seq", "step", "tensor_id", "name", "layer", "param", "kind", "norm", "mean", "std", "min", "max",
    "nan_count", "inf_count", "zero_frac", "extra", "dead_frac",
]


class RunNotFound(RunLogError):
    """A run id from a URL that names no readable run; the message says which and why."""


class DashboardReader(RunReader):
    """RunReader plus the indexed queries a dashboard needs on long runs.

    RunReader.layer_stats(step_min=, step_max=) filters on `seq > after_seq` first, so SQLite walks
    the whole stats table (about 0.06 s per call at 20,000 steps x 20 layers, 0.6 s at 200,000);
    the queries here use the step and tensor indexes instead. They read the same schema
    (trainer.runlog.schema) and are candidates for RunReader itself.
    """

    @contextlib.contextmanager
    def snapshot(self):
        """Run the enclosed queries in one read transaction: they all see the same records."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    def cursors(self) -> dict:
        """The newest seq of each growing table (what a poller passes back as after_seq)."""
        out = {}
        for table in ("scalars", "stats", "flags", "notes", "steps"):
            (value,), = self._query(f"SELECT COALESCE(MAX(seq), 0) FROM {table}")
            out[table] = int(value)
        return out

    def extent(self) -> tuple[int | None, int | None, int]:
        """(first logged step, last logged step, number of logged steps) via the step index."""
        (first, last), = self._query("SELECT MIN(step), MAX(step) FROM steps")
        (count,), = self._query("SELECT COUNT(*) FROM steps")
        return first, last, int(count)

    def last_step_any(self, names: list[str]) -> int | None:
        """The last step of any record (layer statistics or a scalar), index lookups only."""
        candidates = [self.last_logged_step()]
        for name in names:
            (value,), = self._query("SELECT MAX(step) FROM scalars WHERE name = ?", (name,))
            candidates.append(value)
        found = [int(c) for c in candidates if c is not None]
        return max(found) if found else None

    def sample_logged_steps(self, step_min: int | None, step_max: int | None, max_points: int,
                            must_include=()) -> tuple[np.ndarray, int]:
        """Up to ~max_points logged steps spread evenly over [step_min, step_max] (plus `must_include`
        snapped to logged steps), and how many logged steps the range holds. The steps are picked
        by an index-range count and a rowid stride, never by reading every step."""
        where, params = "WHERE 1", []
        range_sql, range_params = step_range("step", step_min, step_max)
        where += range_sql
        params += range_params
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

    def last_logged_step(self) -> int | None:
        (value,), = self._query("SELECT MAX(step) FROM steps")
        return None if value is None else int(value)

    def logged_step_at_or_before(self, step: int) -> int | None:
        (value,), = self._query("SELECT MAX(step) FROM steps WHERE step <= ?", (int(step),))
        if value is None:
            (value,), = self._query("SELECT MIN(step) FROM steps")
        return None if value is None else int(value)

    def logged_steps_between(self, step_min: int | None, step_max: int | None) -> np.ndarray:
        sql, params = "SELECT DISTINCT step FROM steps WHERE 1", []
        range_sql, range_params = step_range("step", step_min, step_max)
        sql += range_sql
        params += range_params
        rows = self._query(sql + " ORDER BY step", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def stats_at_steps(self, steps, kinds: tuple[str, ...] | None = None) -> pd.DataFrame:
        """layer_stats() rows of the given steps only (any number of steps, via the step index)."""
        steps = [int(s) for s in np.unique(np.asarray(list(steps), dtype=np.int64))]
        frames = []
        kind_sql, kind_params = "", []
        if kinds:
            codes = [log_schema.KIND_CODES[k] for k in kinds]
            kind_sql = f" AND s.kind IN ({','.join('?' * len(codes))})"
            kind_params = codes
        for start in range(0, len(steps), 900):
            chunk = steps[start:start + 900]
            rows = self._query(
                "SELECT s.seq, s.step, s.tensor_id, t.name, t.layer, t.param, s.kind, s.norm, s.mean, s.std,"
                " s.min, s.max, s.nan_count, s.inf_count, s.zero_frac, s.extra, s.dead_frac"
                " FROM stats s JOIN tensors t ON t.id = s.tensor_id"
                f" WHERE s.step IN ({','.join('?' * len(chunk))}){kind_sql}",
                chunk + kind_params,
            )
            frames.append(rows)
        return _stats_frame([r for rows in frames for r in rows])

    LAYER_VALUE_SQL = "SELECT seq, step, tensor_id, kind, norm, extra, dead_frac FROM stats"

    def layer_values_at_steps(self, steps) -> pd.DataFrame:
        """The columns per-layer charts need (step, layer, kind, norm, update_ratio, saturated_frac,
        dead_frac) at the given steps: a third of stats_at_steps' columns and no per-row strings
        (tensor ids are mapped to layers afterwards), ~3x faster on a cold 12,000-row read."""
        steps = [int(s) for s in np.unique(np.asarray(list(steps), dtype=np.int64))]
        rows = []
        for start in range(0, len(steps), 900):
            chunk = steps[start:start + 900]
            rows += self._query(f"{self.LAYER_VALUE_SQL} WHERE step IN ({','.join('?' * len(chunk))})", chunk)
        return self._layer_values_frame(rows)

    def layer_values_after(self, after_seq: int) -> tuple[pd.DataFrame, int]:
        """layer_values_at_steps' columns for the statistics rows with seq > after_seq, and the new
        cursor (what the live poll extends the per-layer charts with)."""
        rows = self._query(f"{self.LAYER_VALUE_SQL} WHERE seq > ? ORDER BY seq", (int(after_seq),))
        cursor = int(rows[-1][0]) if rows else int(after_seq)
        return self._layer_values_frame(rows), cursor

    def _layer_values_frame(self, rows: list) -> pd.DataFrame:
        if not rows:
            return pd.DataFrame(columns=["seq", "step", "tensor_id", "layer", "kind", "norm", "update_ratio",
                                         "saturated_frac", "dead_frac"])
        arr = np.array(rows, dtype=float)  # NULL -> NaN
        layers = dict(self._query("SELECT id, layer FROM tensors"))
        kind_codes = arr[:, 3].astype(np.int64)
        extra = arr[:, 5]
        df = pd.DataFrame({
            "seq": arr[:, 0].astype(np.int64), "step": arr[:, 1].astype(np.int64),
            "tensor_id": arr[:, 2].astype(np.int64),
            "layer": [layers.get(int(t), str(int(t))) for t in arr[:, 2]],
            "kind": pd.Series(kind_codes).map(log_schema.KIND_NAMES).to_numpy(dtype=object),
            "norm": arr[:, 4],
            "update_ratio": np.where(kind_codes == log_schema.KIND_WEIGHT, extra, np.nan),
            "saturated_frac": np.where(kind_codes == log_schema.KIND_ACTIVATION, extra, np.nan),
            "dead_frac": arr[:, 6],
        })
        return df.sort_values(["step", "seq"], kind="stable").reset_index(drop=True)

    def scalar_arrays(self, name: str, step_min: int | None = None, step_max: int | None = None,
                      rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one scalar via its (name, step) index; a later record for a step wins."""
        sql = f"SELECT step, IFNULL(value, {NULL_SENTINEL!r}) FROM scalars WHERE name = ? AND rank = ?"
        params: list[Any] = [name, rank]
        range_sql, range_params = step_range("step", step_min, step_max)
        sql += range_sql
        params += range_params
        rows = self._query(sql + " ORDER BY step, seq", params)
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # All-numeric rows (NULL -> sentinel) flatten in C: ~5x faster than np.array(list of tuples).
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=float, count=2 * len(rows))
        steps = flat[0::2].astype(np.int64)
        values = flat[1::2]
        values[values == NULL_SENTINEL] = np.nan  # NULL stands for NaN (SQLite has no NaN)
        last = np.r_[steps[1:] != steps[:-1], True]
        return steps[last], values[last]

    def scalar_display(self, name: str, step_min: int | None, step_max: int | None, max_points: int,
                       rank: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(shown steps, shown values, steps of NaN/Inf values, points in range) of one scalar.

        Long series (schema 2) are drawn from their roll-up blocks: each block inside the range gives
        its first, last, minimum and maximum points, so extremes are kept exactly and ~3,100 rows are
        read instead of 200,000; the few raw records at the range's ragged ends are read directly.
        A series whose steps go backwards, short series and version-1 runs read every record.
        """
        blocks = self._scalar_blocks(name, rank, step_min, step_max)
        # Blocks only where their minima and maxima alone fill the point budget: a shorter series
        # drawn from blocks would show fewer points than reading every record gives.
        if blocks is None or 2 * len(blocks["n"]) < max_points:
            steps, values = self.scalar_arrays(name, step_min, step_max, rank)
            bad, _ = series.nonfinite_points(steps, values)
            shown_steps, shown_values = series.downsample_extremes(steps, values, max_points)
            return shown_steps, shown_values, bad, len(steps)
        inner_lo, inner_hi = int(blocks["first_step"][0]), int(blocks["last_step"][-1])
        in_blocks = int(blocks["n"].sum())
        edges = []
        for lo, hi in ((step_min, inner_lo - 1), (inner_hi + 1, step_max)):
            if lo is None or hi is None or lo <= hi:
                edges.append(self.scalar_arrays(name, lo, hi, rank))
        edge_total = sum(len(e[0]) for e in edges)
        total = in_blocks + edge_total
        shown_edges, edge_v_all = [], []
        for e_steps, e_values in edges:  # ragged ends get their share of the point budget
            budget = max(4, round(max_points * len(e_steps) / total))
            e_shown = series.downsample_extremes(e_steps, e_values, budget)
            shown_edges.append(e_shown)
            edge_v_all.append(e_values)
        edge_s = np.concatenate([e[0] for e in shown_edges]) if edges else np.zeros(0, np.int64)
        edge_v = np.concatenate([e[1] for e in shown_edges]) if edges else np.zeros(0)
        block_budget = max(4, max_points - len(edge_s))
        shown_steps, shown_values = series.extremes_from_blocks(blocks, edge_s, edge_v, block_budget)
        edge_raw = np.concatenate(edge_v_all) if edges else np.zeros(0)
        bad = np.zeros(0, dtype=np.int64)
        if blocks["bad"].sum() or not np.isfinite(edge_raw).all():
            range_sql, params = step_range("step", step_min, step_max)
            rows = self._query(
                "SELECT step FROM scalars WHERE name = ? AND rank = ?"
                f" AND (value IS NULL OR value NOT BETWEEN {-FLOAT_MAX!r} AND {FLOAT_MAX!r}){range_sql}"
                " ORDER BY step", [name, rank, *params])
            bad = np.array([r[0] for r in rows], dtype=np.int64)
        return shown_steps, shown_values, bad, total

    def _scalar_blocks(self, name: str, rank: int, step_min: int | None, step_max: int | None) -> dict | None:
        """Roll-up blocks lying wholly inside [step_min, step_max] as column arrays, or None where
        they cannot stand for the records (version-1 run, steps out of order)."""
        if not self._has_table("scalar_blocks"):
            return None
        sql = ("SELECT first_step, last_step, n, ordered, bad, first_value, first_value_step, last_value,"
               " last_value_step, min_value, min_step, max_value, max_step FROM scalar_blocks"
               " WHERE name = ? AND rank = ?")
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
        cols = ("first_step", "last_step", "n", "ordered", "bad", "first_value", "first_value_step", "last_value",
                "last_value_step", "min_value", "min_step", "max_value", "max_step")
        arr = np.array(rows, dtype=float)  # NULL -> nan
        out = {c: arr[:, i] for i, c in enumerate(cols)}
        first, last = out["first_step"], out["last_step"]
        if not out["ordered"].all() or np.any(first[1:] <= last[:-1]):
            return None  # steps go backwards or repeat across blocks: only the records can tell
        return out

    def _has_table(self, table: str) -> bool:
        rows = self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return bool(rows)

    def tensor_id(self, name: str) -> int | None:
        rows = self._query("SELECT id FROM tensors WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def sampled_hists(self, name: str, kind: str, step_min: int | None, step_max: int | None,
                      max_columns: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Histograms of one tensor at up to max_columns steps: the last stored histogram in each of
        max_columns equal step ranges (index range scans; dropped histograms are skipped)."""
        tensor = self.tensor_id(name)
        empty = (np.zeros(0, dtype=np.int64), np.zeros((0, log_schema.HIST_LEN), dtype=np.int64), False)
        if tensor is None:
            return empty
        code = log_schema.KIND_CODES[kind]
        (first, last, count), = self._query(
            "SELECT MIN(step), MAX(step), COUNT(*) FROM stats WHERE tensor_id = ? AND kind = ?"
            " AND step >= ? AND step <= ?",
            (tensor, code, -1 if step_min is None else int(step_min), 2**62 if step_max is None else int(step_max)))
        if first is None:
            return empty
        if count <= max_columns:
            steps = self.hist_steps(name, kind, first, last)
            found, counts = self.hists_at_steps(name, kind, steps)
            return found, counts, False
        edges = np.linspace(first, last + 1, max_columns + 1).astype(np.int64)
        out_steps, blobs = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi <= lo:
                continue
            rows = self._query(
                "SELECT step, hist FROM stats WHERE tensor_id = ? AND kind = ? AND step >= ? AND step < ?"
                " AND hist IS NOT NULL ORDER BY step DESC, seq DESC LIMIT 1", (tensor, code, int(lo), int(hi)))
            if rows:
                out_steps.append(rows[0][0])
                blobs.append(rows[0][1])
        if not blobs:
            return empty
        counts = np.stack([validate.decode_hist(b, f"{name} ({kind}) at step {s}", self.run_id)
                           for s, b in zip(out_steps, blobs)])
        return np.array(out_steps, dtype=np.int64), counts, True

    def hist_steps(self, name: str, kind: str, step_min: int | None, step_max: int | None) -> np.ndarray:
        """Steps at which `name` has a stored histogram of `kind` (dropped ones left out)."""
        sql = ("SELECT s.step FROM stats s JOIN tensors t ON t.id = s.tensor_id"
               " WHERE t.name = ? AND s.kind = ? AND s.hist IS NOT NULL")
        params: list[Any] = [name, log_schema.KIND_CODES[kind]]
        range_sql, range_params = step_range("s.step", step_min, step_max)
        sql += range_sql
        params += range_params
        rows = self._query(sql + " ORDER BY s.step", params)
        return np.unique(np.array([r[0] for r in rows], dtype=np.int64))

    def hists_at_steps(self, name: str, kind: str, steps) -> tuple[np.ndarray, np.ndarray]:
        steps = [int(s) for s in steps]
        if not steps:
            return np.zeros(0, dtype=np.int64), np.zeros((0, log_schema.HIST_LEN), dtype=np.int64)
        out_steps, blobs = [], []
        for start in range(0, len(steps), 900):
            chunk = steps[start:start + 900]
            rows = self._query(
                "SELECT s.step, s.hist FROM stats s JOIN tensors t ON t.id = s.tensor_id"
                f" WHERE t.name = ? AND s.kind = ? AND s.hist IS NOT NULL AND s.step IN ({','.join('?' * len(chunk))})"
                " ORDER BY s.step, s.seq",
                [name, log_schema.KIND_CODES[kind], *chunk],
            )
            for step, blob in rows:
                if out_steps and out_steps[-1] == step:
                    blobs[-1] = blob  # a later record for a step wins
                else:
                    out_steps.append(step)
                    blobs.append(blob)
        counts = np.stack([validate.decode_hist(b, f"{name} ({kind}) at step {s}", self.run_id)
                           for s, b in zip(out_steps, blobs)]) if blobs else \
            np.zeros((0, log_schema.HIST_LEN), dtype=np.int64)
        return np.array(out_steps, dtype=np.int64), counts


def _stats_frame(rows) -> pd.DataFrame:
    """Rows in STATS_COLUMNS order -> the DataFrame layout of RunReader.layer_stats()."""
    df = pd.DataFrame(rows, columns=STATS_COLUMNS)
    for col in ("norm", "mean", "std", "min", "max", "zero_frac", "extra", "dead_frac"):
        df[col] = df[col].astype(float)
    df["kind"] = df["kind"].map(log_schema.KIND_NAMES)
    df["update_ratio"] = df["extra"].where(df["kind"] == "weight")
    df["saturated_frac"] = df["extra"].where(df["kind"] == "activation")
    return df.drop(columns=["extra"]).sort_values(["step", "seq"], kind="stable").reset_index(drop=True)


# ---- value objects handed to figures ----------------------------------------------------------
@dataclass
class ScalarSeries:
    """One scalar for display: downsampled finite points plus where it was NaN/Inf."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    bad_steps: np.ndarray
    total_points: int

    def as_lists(self) -> dict:
        return {"steps": self.steps.tolist(), "values": [float(v) for v in self.values],
                "bad_steps": self.bad_steps.tolist()}


def run_identity(run_dir: Path) -> tuple:
    """(size, mtime) of the database and of a non-empty WAL: changes whenever anything is written.

    An empty WAL is ignored: readers of a WAL-mode database create it on open and remove it on close,
    which must not look like a change."""
    parts = []
    for suffix in ("", "-wal"):
        try:
            info = os.stat(run_dir / (log_schema.DB_FILENAME + suffix))
        except OSError:  # missing, or the entry is a plain file / broken link
            parts += [0, 0]
            continue
        parts += [info.st_size, info.st_mtime_ns] if info.st_size else [0, 0]
    return tuple(parts)


def duration_s(meta: dict, status: str | None, now: float | None = None) -> float | None:
    started = meta.get("started")
    if not isinstance(started, (int, float)):
        return None
    end = meta.get("ended")
    if not isinstance(end, (int, float)):
        end = (now or time.time()) if status == "running" else meta.get("heartbeat")
    if not isinstance(end, (int, float)):
        return None
    return max(0.0, float(end) - float(started))


def capture_label(meta: dict) -> str:
    """How often layer statistics were recorded: 'statistics every 10 steps', or under
    every="auto" the cadence the time budget chose last ('... every 40 steps (auto, budget 2%)')."""
    watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
    every = watch.get("every")
    if every == "auto":
        chosen = meta.get("capture_every")
        budget = watch.get("budget")
        within = f"budget {budget:.0%}" if isinstance(budget, (int, float)) else "budget"
        if isinstance(chosen, int) and not isinstance(chosen, bool):
            return f"statistics every {chosen} steps (auto, {within})"
        return f"statistics cadence auto ({within})"
    if isinstance(every, int) and not isinstance(every, bool):
        return "statistics every step" if every == 1 else f"statistics every {every} steps"
    return ""


def config_summary(config: dict) -> str:
    """A one-line description of what was trained: model, size, activation and the regularisers on."""
    if not isinstance(config, dict) or not config:
        return ""
    parts = []
    model = config.get("model")
    if model:
        size = ""
        if config.get("depth") is not None and config.get("width") is not None:
            size = f" {config['depth']}x{config['width']}"
        parts.append(f"{model}{size}")
    if config.get("activation"):
        parts.append(str(config["activation"]))
    if config.get("optimizer"):
        lr = config.get("lr")
        parts.append(f"{config['optimizer']} lr={lr:g}" if isinstance(lr, (int, float)) else str(config["optimizer"]))
    for key, label in (("dropout", "dropout"), ("l1", "L1"), ("l2", "L2"), ("weight_decay", "wd"),
                       ("clip_norm", "clip")):
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            parts.append(f"{label}={value:g}")
    for key, label in (("batchnorm", "batchnorm"), ("early_stopping", "early stop")):
        if config.get(key) is True:
            parts.append(label)
    if isinstance(config.get("augment_copies"), int) and config["augment_copies"] > 0:
        parts.append(f"augment x{config['augment_copies']}")
    return ", ".join(parts)


def dataset_label(dataset: Any) -> str:
    if isinstance(dataset, dict):
        name = dataset.get("name") or ""
        rows = dataset.get("n_rows")
        return f"{name} ({rows:,} rows)" if isinstance(rows, int) else str(name)
    return "" if dataset is None else str(dataset)


def severity_counts(flags: list[dict]) -> dict:
    counts = {"critical": 0, "warning": 0, "info": 0}
    for flag in flags:
        sev = flag.get("severity")
        if sev in counts:
            counts[sev] += 1
    return counts


def merge_flags(diagnosed: list[dict], stored: list[dict]) -> list[dict]:
    """Post-hoc diagnosis first; stored live flags only where the diagnosis has no flag with the same
    rule and layers (a user's own run.add_flag, or a rule whose condition has since cleared)."""
    seen = {(f.get("rule"), tuple(f.get("layers") or [])) for f in diagnosed}
    out = [dict(f, source="diagnosis") for f in diagnosed]
    for flag in stored:
        key = (flag.get("rule"), tuple(flag.get("layers") or []))
        if key not in seen:
            seen.add(key)
            out.append(dict(flag, source="live"))
    rank = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda f: (rank.get(f.get("severity"), 3), f.get("first_step") is None, f.get("first_step") or 0))
    return out


# ---- run views ----------------------------------------------------------------------------------
MAX_BAD_MARKERS = 200
DELTA_ROW_LIMIT = 20_000  # more new rows than this and a poll asks for a full (downsampled) redraw
LIVE_LAYER_QUANTITIES = ("grad_norm", "update_ratio", "saturated_frac", "dead_frac")  # what live charts extend


def _thin(steps: np.ndarray, limit: int) -> np.ndarray:
    if len(steps) <= limit:
        return steps
    return steps[np.unique(np.linspace(0, len(steps) - 1, limit).round().astype(np.int64))]


def tensor_records(tensors: pd.DataFrame) -> list[dict]:
    return [
        {"name": str(r.name), "layer": str(r.layer), "param": str(r.param), "role": str(r.role),
         "module_type": str(r.module_type), "shape": list(r.shape) if isinstance(r.shape, list) else [],
         "numel": int(r.numel)}
        for r in tensors.itertuples(index=False)
    ]


def _layer_order(tensors: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(tensors["layer"])) if len(tensors) else []


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None



class RunStore:
    """Access to the runs of one log directory, with a shared on-disk cache."""

    def __init__(self, logdir: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.logdir = Path(logdir).resolve()
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._cache = None

    # ---- cache --------------------------------------------------------------------------------
    @property
    def cache(self):
        if self._cache is None and self._cache_dir is not None:
            import diskcache

            from .config import ensure_private_dir

            ensure_private_dir(self._cache_dir)
            self._cache = diskcache.Cache(str(self._cache_dir / "runs"), size_limit=CACHE_SIZE_LIMIT,
                                          eviction_policy="least-recently-used")
        return self._cache

    def _cached(self, key: tuple, compute, expire: float | None = CACHE_EXPIRE_S):
        cache = self.cache
        if cache is None:
            return compute()
        try:
            hit = cache.get(key, default=None)
        except Exception:  # a damaged cache entry is only a miss
            hit = None
        if hit is not None:
            return hit
        value = compute()
        with contextlib.suppress(Exception):
            cache.set(key, value, expire=expire)
        return value

    # ---- opening runs -------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        """The folder of a run id from a URL; RunNotFound with the reason when there is none."""
        if not run_id:
            raise RunNotFound("no run selected: open one from the Runs page")
        try:
            path = resolve_run_dir(self.logdir, run_id)
        except RunLogError as exc:
            raise RunNotFound(str(exc)) from None
        if not path.is_dir():
            raise RunNotFound(f"no run {run_id!r} in {self.logdir} (it may have been deleted or moved)")
        return path

    def open(self, run_id: str) -> DashboardReader:
        path = self.run_dir(run_id)
        try:
            return DashboardReader(path)
        except RunLogError as exc:
            raise RunNotFound(str(exc)) from None

    # ---- the runs list --------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        if not self.logdir.is_dir():
            raise RunLogError(f"log directory {str(self.logdir)!r} does not exist or is not a directory")
        # Every entry, not only folders: a symlink or a stray file gets an error row (never hidden).
        return sorted(entry.name for entry in os.scandir(self.logdir) if not entry.name.startswith("."))

    def summaries(self, budget_s: float = 0.6) -> tuple[list[dict], int]:
        """One summary per run folder (newest first) and how many are still pending.

        Cached summaries cost a stat() each; missing ones are computed until `budget_s` is spent,
        the rest come back as pending placeholders that the next refresh fills in, so a first visit
        to a directory of thousands of runs answers promptly.
        """
        deadline = time.monotonic() + budget_s
        out, pending = [], 0
        for run_id in self.run_ids():
            path = self.logdir / run_id
            ident = run_identity(path)
            key = ("summary", SUMMARY_VERSION, run_id, ident)
            summary = None
            cache = self.cache
            if cache is not None:
                with contextlib.suppress(Exception):
                    summary = cache.get(key)
            if summary is None and time.monotonic() < deadline:
                summary = self._compute_summary(run_id, path)
                if cache is not None and summary.get("status") != "running" and not summary.get("flags_pending"):
                    with contextlib.suppress(Exception):
                        cache.set(key, summary, expire=CACHE_EXPIRE_S)
            if summary is None:
                pending += 1
                summary = _pending_summary(run_id, path)
            out.append(summary)
        out.sort(key=lambda s: s.get("started") or 0, reverse=True)
        return out, pending

    def _compute_summary(self, run_id: str, path: Path) -> dict:
        base = {"run_id": run_id, "name": run_id, "status": None, "error": None, "dataset": "", "preset": "",
                "config": "", "steps": None, "best_val_loss": None, "best_epoch": None, "last_val_loss": None,
                "flags": {"critical": 0, "warning": 0, "info": 0}, "flag_rules": [], "started": None,
                "duration": None, "job_id": None, "pending": False, "failure": None, "flags_pending": False}
        problem = validate.entry_problem(path)
        if problem:
            return dict(base, error=problem, started=_mtime(path))
        if not log_schema.is_valid_run_id(run_id):
            return dict(base, error="folder name is not a valid run id (export it with `gradwatch export "
                                    "FOLDER -o report.html`, or rename it)", started=_mtime(path))
        try:
            with DashboardReader(path) as reader:
                meta = reader.meta
                status = reader.status()
                counts = reader.counts()
                val_steps, val = reader.scalar_arrays("val_loss")
                epochs = dict(zip(*reader.scalar_arrays("epoch")))
                stored, _ = reader.flags()
        except RunLogError as exc:
            return dict(base, error=str(exc), started=_mtime(path))
        except Exception as exc:  # a run folder must never break the listing
            return dict(base, error=f"unreadable run folder ({type(exc).__name__}: {exc})", started=_mtime(path))
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        best = last = best_epoch = None
        finite = np.isfinite(val)
        if finite.any():
            best_idx = int(np.argmin(np.where(finite, val, np.inf)))
            best, last = float(val[best_idx]), float(val[finite][-1])
            epoch_value = epochs.get(int(val_steps[best_idx]))
            best_epoch = int(epoch_value) if epoch_value is not None and math.isfinite(epoch_value) else None
        flags = self.flags(run_id, status=status, stored=stored, path=path, wait=False)
        last_step = counts.get("last_step")
        return dict(
            base,
            name=str(meta.get("name") or run_id),
            status=status,
            failure=meta.get("error") if status in ("failed", "stopped") else None,
            dataset=dataset_label(meta.get("dataset")),
            preset=str(config.get("preset") or ""),
            config=config_summary(config),
            steps=None if last_step is None else int(last_step) + 1,
            best_val_loss=best, best_epoch=best_epoch, last_val_loss=last,
            flags=severity_counts(flags["flags"]),
            flag_rules=sorted({f.get("rule", "") for f in flags["flags"]}),
            started=meta.get("started"),
            duration=duration_s(meta, status),
            job_id=meta.get("job_id"),
            flags_pending=flags["pending"],
        )

    # ---- diagnosis ------------------------------------------------------------------------------
    def flags(self, run_id: str, *, status: str | None = None, stored: list | None = None,
              path: Path | None = None, wait: bool = True) -> dict:
        """{"flags": merged diagnosis + stored flags, "note", "error", "pending", ...}.

        Finished runs are diagnosed once per database version; running runs at most every
        DIAGNOSIS_TTL_LIVE_S seconds (the trainer also stores its live flags, shown at once). Runs with
        more than LARGE_RUN_STATS_ROWS statistics rows are diagnosed in a background thread when
        wait=False: the answer is then the stored flags with pending=True until the result is cached.
        """
        path = path or self.run_dir(run_id)
        with DashboardReader(path) as reader:
            if stored is None or status is None:
                stored, _ = reader.flags()
                status = reader.status()
            (rows,), = reader._query("SELECT COALESCE(MAX(seq), 0) FROM stats")
        if status == "running":
            key, expire = ("diagnosis-live", run_id), DIAGNOSIS_TTL_LIVE_S
        else:
            key, expire = ("diagnosis", run_id, run_identity(path)), CACHE_EXPIRE_S
        cache = self.cache
        if wait or rows <= LARGE_RUN_STATS_ROWS or cache is None:
            result = self._cached(key, lambda: _diagnose(path), expire=expire)
            return dict(result, flags=merge_flags(result.get("flags") or [], stored or []), pending=False)
        result = None
        with contextlib.suppress(Exception):
            result = cache.get(key)
        if result is not None:
            return dict(result, flags=merge_flags(result.get("flags") or [], stored or []), pending=False)
        self._diagnose_in_background(key, path, expire)
        return {"flags": merge_flags([], stored or []), "error": None, "pending": True,
                "note": f"diagnosing this large run ({rows:,} statistics rows) in the background"}

    def _diagnose_in_background(self, key: tuple, path: Path, expire: float) -> None:
        """Start one diagnosis per key across all workers (an expiring marker in the shared cache)."""
        marker = ("diagnosing",) + key
        if not self.cache.add(marker, os.getpid(), expire=BACKGROUND_DIAGNOSIS_TIMEOUT_S):
            return  # another thread or worker is on it

        def work():
            try:
                self.cache.set(key, _diagnose(path), expire=expire)
            finally:
                with contextlib.suppress(Exception):
                    self.cache.delete(marker)

        threading.Thread(target=work, name=f"diagnose-{path.name}", daemon=True).start()

    # ---- notes ----------------------------------------------------------------------------------
    def notes(self, run_id: str) -> list[dict]:
        with self.open(run_id) as reader:
            notes, _ = reader.notes()
        return notes

    def add_note(self, run_id: str, text: str, *, author: str, step: int | None, layer: str | None) -> int:
        path = self.run_dir(run_id)
        return add_note(path, text, author=author, step=step, layer=layer)


    # ---- per-run views ------------------------------------------------------------------------
    def run_info(self, run_id: str) -> dict:
        """Everything about a run that is not a time series: meta, status, tensors, extent, cursors."""
        path = self.run_dir(run_id)
        with self.open(run_id) as reader, reader.snapshot():
            meta = dict(reader.meta)
            status = reader.status()
            tensors = reader.tensors()
            first, last, logged_count = reader.extent()
            names = reader.scalar_names()
            last_step = reader.last_step_any(names)
            epoch_steps, epoch_values = reader.scalar_arrays("epoch")
            cursors = reader.cursors()
            stride = reader._query("SELECT step FROM steps ORDER BY rowid LIMIT 2")
        param_layers = list(dict.fromkeys(tensors.loc[tensors["role"] == "param", "layer"])) if len(tensors) else []
        watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
        return {
            "run_id": run_id, "path": str(path), "meta": meta, "status": status,
            "tensors": tensor_records(tensors), "layers": _layer_order(tensors), "param_layers": param_layers,
            "first_step": first, "last_logged_step": last, "logged_count": logged_count, "last_step": last_step,
            "every": int(watch.get("every") or (max(1, stride[1][0] - stride[0][0]) if len(stride) == 2 else 1)),
            "scalar_names": names,
            "epochs": [(int(round(v)), int(s)) for s, v in zip(epoch_steps, epoch_values) if math.isfinite(v)],
            "cursors": cursors,
        }

    def scalar_view(self, run_id: str, step_min: int | None = None, step_max: int | None = None,
                    max_points: int = 2000, groups: tuple[str, ...] | None = None) -> dict:
        """Scalars (those whose chart group is in `groups`, all by default), downsampled to max_points
        (extremes kept), and the scalars cursor."""
        path = self.run_dir(run_id)

        def compute():
            from .figures import scalar_group

            with self.open(run_id) as reader, reader.snapshot():
                cursor = reader.cursors()["scalars"]
                out = {}
                names = [n for n in reader.scalar_names() if groups is None or scalar_group(n) in groups]
                for name in names:
                    shown_steps, shown_values, bad, total = reader.scalar_display(name, step_min, step_max,
                                                                                  max_points)
                    out[name] = ScalarSeries(name, shown_steps, shown_values, _thin(bad, MAX_BAD_MARKERS), total)
            return {"series": out, "cursor": cursor}

        key = ("scalars", run_id, run_identity(path), step_min, step_max, max_points, groups)
        return self._cached(key, compute)

    def scalar_delta(self, run_id: str, cursor: int) -> dict:
        """Scalar records after `cursor` (columns seq, step, name, value): {"rows", "cursor", "reset"}.
        The same cursor always returns the same rows (the log is append-only)."""
        with self.open(run_id) as reader, reader.snapshot():
            (pending,), = reader._query("SELECT COUNT(*) FROM scalars WHERE seq > ?", (int(cursor),))
            if pending > DELTA_ROW_LIMIT:
                return {"rows": None, "cursor": cursor, "reset": True}
            rows = reader._query("SELECT seq, step, name, value FROM scalars WHERE seq > ? AND rank = 0 ORDER BY seq",
                                 (int(cursor),))
        # Column arrays straight from the rows: building the frame from tuples costs more than the query.
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        df = pd.DataFrame({
            "seq": np.array(columns[0], dtype=np.int64), "step": np.array(columns[1], dtype=np.int64),
            "name": np.array(columns[2], dtype=object),
            "value": np.array([np.nan if v is None else v for v in columns[3]], dtype=float),
        })
        new_cursor = int(df["seq"].iloc[-1]) if len(df) else int(cursor)
        return {"rows": df, "cursor": new_cursor, "reset": False}

    def layer_view(self, run_id: str, step_min: int | None = None, step_max: int | None = None,
                   max_points: int = 300, must_include=()) -> dict:
        """Per-layer tables of the charted quantities (LIVE_LAYER_QUANTITIES) at up to max_points logged steps, and the stats
        cursor. Long runs are sampled evenly (flagged steps always included)."""
        path = self.run_dir(run_id)

        def compute():
            with self.open(run_id) as reader, reader.snapshot():
                cursor = reader.cursors()["stats"]
                order = _layer_order(reader.tensors())
                chosen, logged = reader.sample_logged_steps(step_min, step_max, max_points, must_include)
                stats = reader.layer_values_at_steps(chosen)
            # Only what the per-layer charts draw (the same quantities the live poll extends).
            tables = {q: series.layer_table(stats, q, order) for q in LIVE_LAYER_QUANTITIES}
            return {"tables": tables, "cursor": cursor, "sampled": len(chosen) < logged,
                    "logged": logged, "shown": int(len(chosen)), "order": order}

        key = ("layers", run_id, run_identity(path), step_min, step_max, max_points, tuple(must_include))
        return self._cached(key, compute)

    def layer_delta(self, run_id: str, cursor: int) -> dict:
        """Per-layer tables of the statistics rows after `cursor` only."""
        with self.open(run_id) as reader, reader.snapshot():
            (pending,), = reader._query("SELECT COUNT(*) FROM stats WHERE seq > ?", (int(cursor),))
            if pending > DELTA_ROW_LIMIT:
                return {"tables": {}, "cursor": cursor, "reset": True}
            stats, new_cursor = reader.layer_values_after(int(cursor))
            order = _layer_order(reader.tensors()) if len(stats) else []
        tables = {q: series.layer_table(stats, q, order) for q in LIVE_LAYER_QUANTITIES} if len(stats) else {}
        return {"tables": tables, "cursor": int(new_cursor), "reset": False}

    def gradient_flow(self, run_id: str, step: int | None) -> dict:
        """Per-layer gradient norms at the logged step at or before `step` (the latest when None)."""
        with self.open(run_id) as reader, reader.snapshot():
            snapped = reader.last_logged_step() if step is None else reader.logged_step_at_or_before(step)
            order = _layer_order(reader.tensors())
            stats = reader.stats_at_steps([snapped], kinds=("grad",)) if snapped is not None else None
        if stats is None or len(stats) == 0:
            return {"step": snapped, "layers": [], "grad_norm": [], "grad_max_abs": [], "nonfinite": [],
                    "params": []}
        norms = series.layer_values_at(stats, "grad_norm", order)
        biggest = series.layer_values_at(stats, "grad_max_abs", order).reindex(norms.index)
        bad = (stats["nan_count"].fillna(0) + stats["inf_count"].fillna(0)).groupby(stats["layer"]).sum()
        params = [{"name": r.name, "layer": r.layer, "norm": _num(r.norm), "std": _num(r.std),
                   "nan": int(r.nan_count or 0), "inf": int(r.inf_count or 0)}
                  for r in stats.itertuples(index=False)]
        return {"step": int(snapped), "layers": list(norms.index),
                "grad_norm": [float(v) for v in norms.to_numpy()],
                "grad_max_abs": [float(v) for v in biggest.to_numpy()],
                "nonfinite": [int(bad.get(layer, 0)) for layer in norms.index], "params": params}

    def histogram_view(self, run_id: str, tensor: str, kind: str, step_min: int | None = None,
                       step_max: int | None = None, max_columns: int = 200) -> dict:
        """Histogram counts of one tensor over time (step x bin), at up to max_columns steps."""
        path = self.run_dir(run_id)

        def compute():
            with self.open(run_id) as reader, reader.snapshot():
                steps, counts, sampled = reader.sampled_hists(tensor, kind, step_min, step_max, max_columns)
            return {"tensor": tensor, "kind": kind, "steps": steps, "counts": counts, "sampled": sampled}

        key = ("hist", run_id, run_identity(path), tensor, kind, step_min, step_max, max_columns)
        return self._cached(key, compute)

    def histogram_delta(self, run_id: str, tensor: str, kind: str, after_step: int) -> dict:
        with self.open(run_id) as reader:
            steps, counts = reader.histograms(tensor, kind, step_min=int(after_step) + 1)
        if len(steps) > 1:  # a later record for a step wins, as in the full view
            last = np.r_[steps[1:] != steps[:-1], True]
            steps, counts = steps[last], counts[last]
        return {"steps": steps, "counts": counts, "reset": len(steps) > 200}

    def weights_by_epoch(self, run_id: str) -> dict:
        """The lesson's figure data: per-layer weight mean and std at the end of each epoch, with the
        epoch's training and validation loss. Runs without an `epoch` scalar use sampled steps."""
        path = self.run_dir(run_id)

        def compute():
            with self.open(run_id) as reader, reader.snapshot():
                order = _layer_order(reader.tensors())
                epoch_steps, epoch_values = reader.scalar_arrays("epoch")
                losses = {name: reader.scalar_arrays(name) for name in ("epoch_train_loss", "val_loss")}
                has_logged = reader.last_logged_step() is not None
                if len(epoch_steps) and has_logged:
                    ok = np.isfinite(epoch_values)
                    x = epoch_values[ok].round().astype(np.int64)
                    wanted = epoch_steps[ok]
                    snapped = np.array([reader.logged_step_at_or_before(int(s)) for s in wanted], dtype=np.int64)
                    x_label = "epoch"
                else:
                    snapped, _ = reader.sample_logged_steps(None, None, 60)
                    x, wanted = snapped, snapped
                    x_label = "step"
                stats = reader.stats_at_steps(snapped, kinds=("weight",)) if len(snapped) else None
            mean = series.layer_table(stats, "weight_mean", order) if stats is not None else pd.DataFrame()
            std = series.layer_table(stats, "weight_std", order) if stats is not None else pd.DataFrame()
            to_x = dict(zip(snapped.tolist(), x.tolist()))
            mean.index = [to_x.get(int(s), int(s)) for s in mean.index]
            std.index = [to_x.get(int(s), int(s)) for s in std.index]
            loss = {}
            step_to_x = dict(zip(wanted.tolist(), x.tolist()))
            for name, (steps, values) in losses.items():
                pairs = [(step_to_x[int(s)], float(v)) for s, v in zip(steps, values) if int(s) in step_to_x]
                loss[name] = pairs
            return {"x_label": x_label, "mean": mean, "std": std, "loss": loss, "epochs": int(len(x))}

        key = ("weights-by-epoch", run_id, run_identity(path))
        return self._cached(key, compute)

    def compare_runs(self, run_ids: list[str], step: int | None = None, max_points: int = 600) -> dict:
        """Side-by-side data for several runs: curves, gradient flow at one common step, final metrics."""
        runs, errors = [], {}
        for run_id in run_ids:
            try:
                info = self.run_info(run_id)
                scalars = self.scalar_view(run_id, max_points=max_points, groups=("loss", "accuracy"))
                flags = self.flags(run_id, status=info["status"])
            except RunLogError as exc:
                errors[run_id] = str(exc)
                continue
            runs.append({"info": info, "scalars": scalars["series"], "flags": flags["flags"]})
        common = [r["info"]["last_logged_step"] for r in runs if r["info"]["last_logged_step"] is not None]
        target = min(common) if common else None
        if step is not None and target is not None:
            target = min(int(step), target)
        flows = {}
        for run in runs:
            if target is not None and run["info"]["last_logged_step"] is not None:
                flows[run["info"]["run_id"]] = self.gradient_flow(run["info"]["run_id"], target)
        return {"runs": runs, "errors": errors, "step": target, "max_step": max(common) if common else None,
                "common_step": min(common) if common else None, "flows": flows}


def _diagnose(path: Path) -> dict:
    try:
        from gradwatch.trainer.diagnose import diagnose_run
    except ImportError as exc:  # the rules are optional for reading a run
        return {"flags": [], "error": f"diagnosis unavailable ({exc})", "note": None}
    try:
        result = diagnose_run(path)
    except RunLogError as exc:
        return {"flags": [], "error": str(exc), "note": None}
    except Exception as exc:  # a rule's bug must not take the run page down
        return {"flags": [], "error": f"diagnosis failed: {type(exc).__name__}: {exc}", "note": None}
    return {"flags": result.get("flags") or [], "error": None, "note": result.get("note"),
            "checked": result.get("checked") or [], "skipped": result.get("skipped") or {}}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _pending_summary(run_id: str, path: Path) -> dict:
    return {"run_id": run_id, "name": run_id, "status": None, "error": None, "dataset": "", "preset": "",
            "config": "", "steps": None, "best_val_loss": None, "best_epoch": None, "last_val_loss": None,
            "flags": {"critical": 0, "warning": 0, "info": 0}, "flag_rules": [], "started": _mtime(path),
            "duration": None, "job_id": None, "pending": True}


"""The data of one run's views (and of Compare): what the figures draw, read in one snapshot.

Every view read happens inside one SQLite read transaction (reader.snapshot()), so the records a
figure shows and the cursor it hands to the live poller always agree: the next poll returns exactly
the records after that cursor, never one twice, never one missed. Views that cannot change until
the run's files change are cached (RunFolders.cached, keyed by run_identity); the live poll's
deltas are read once per change for all of a process's viewers (the shared_* methods).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradwatch.trainer import derived
from gradwatch.trainer.runlog import RunLogError, RunReader

from . import series
from .diagnosis import RunDiagnosis
from .live_tail import GrowingTail
from .store import RunFolders, run_identity


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


MAX_BAD_MARKERS = 200
DELTA_ROW_LIMIT = 20_000  # more new rows than this and a poll asks for a full (downsampled) redraw
HIST_DELTA_LIMIT = 200  # more new histogram columns than this: a redraw
# A live tail keeps this many recent rows (each change appends to a copy of it); a viewer further
# behind reads its own delta, as before.
TAIL_ROWS = 8192


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


def layer_order(tensors: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(tensors["layer"])) if len(tensors) else []


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def scalar_display(reader: RunReader, name: str, step_min: int | None, step_max: int | None, max_points: int,
                   rank: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(shown steps, shown values, steps of NaN/Inf values, points in range) of one scalar.

    Long series (schema 2) are drawn from their roll-up blocks: each block inside the range gives
    its first, last, minimum and maximum points, so extremes are kept exactly and ~3,100 rows are
    read instead of 200,000; the few raw records at the range's ragged ends are read directly.
    A series whose steps go backwards, short series and version-1 runs read every record.
    """
    blocks = reader.scalar_blocks(name, rank, step_min, step_max)
    # Blocks only where their minima and maxima alone fill the point budget: a shorter series
    # drawn from blocks would show fewer points than reading every record gives.
    if blocks is None or 2 * len(blocks["n"]) < max_points:
        steps, values = reader.scalar_arrays(name, step_min, step_max, rank)
        bad, _ = series.nonfinite_points(steps, values)
        shown_steps, shown_values = series.downsample_extremes(steps, values, max_points)
        return shown_steps, shown_values, bad, len(steps)
    inner_lo, inner_hi = int(blocks["first_step"][0]), int(blocks["last_step"][-1])
    in_blocks = int(blocks["n"].sum())
    edges = []
    for lo, hi in ((step_min, inner_lo - 1), (inner_hi + 1, step_max)):
        if lo is None or hi is None or lo <= hi:
            edges.append(reader.scalar_arrays(name, lo, hi, rank))
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
        bad = reader.nonfinite_scalar_steps(name, step_min, step_max, rank)
    return shown_steps, shown_values, bad, total


def _histogram_answer(steps: np.ndarray, counts: np.ndarray) -> dict:
    """A histogram delta: a later record for a step wins, as in the full view; many new columns ask
    for a redraw."""
    if len(steps) > 1:
        last = np.r_[steps[1:] != steps[:-1], True]
        steps, counts = steps[last], counts[last]
    return {"steps": steps, "counts": counts, "reset": len(steps) > HIST_DELTA_LIMIT}


def max_per_bucket(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points rows of a [steps, columns] series: consecutive rows bucketed, each bucket
    shown at its last step with each column's largest value (NaN only where the whole bucket is)."""
    n = len(steps)
    if n <= max_points:
        return steps, values
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    starts = edges[:-1][np.diff(edges) > 0]
    with warnings.catch_warnings():  # a column without any value in a bucket
        warnings.simplefilter("ignore", RuntimeWarning)
        biggest = np.fmax.reduceat(values, starts, axis=0)
    last = np.append(starts[1:], n) - 1
    return steps[last], biggest


class RunViews:
    """The per-run views of the Run and Compare pages, each read in one snapshot (a part of RunStore)."""

    def __init__(self, folders: RunFolders, diagnosis: RunDiagnosis):
        self.folders, self.diagnosis = folders, diagnosis

    # ---- per-run views ------------------------------------------------------------------------
    def run_info(self, run_id: str) -> dict:
        """Everything about a run that is not a time series: meta, status, tensors, extent, cursors."""
        path = self.folders.run_dir(run_id)
        with self.folders.open(run_id) as reader, reader.snapshot():
            meta = dict(reader.meta)
            status = reader.status()
            tensors = reader.tensors()
            first, last, logged_count = reader.extent()
            names = reader.scalar_names()
            last_step = reader.last_step_any(names)
            epoch_steps, epoch_values = reader.scalar_arrays("epoch")
            cursors = reader.cursors()
            stride = reader.first_logged_steps(2)
        param_layers = list(dict.fromkeys(tensors.loc[tensors["role"] == "param", "layer"])) if len(tensors) else []
        watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
        return {
            "run_id": run_id, "path": str(path), "meta": meta, "status": status,
            "tensors": tensor_records(tensors), "layers": layer_order(tensors), "param_layers": param_layers,
            "first_step": first, "last_logged_step": last, "logged_count": logged_count, "last_step": last_step,
            "every": int(watch.get("every") or (max(1, stride[1] - stride[0]) if len(stride) == 2 else 1)),
            "scalar_names": names,
            "epochs": [(int(round(v)), int(s)) for s, v in zip(epoch_steps, epoch_values) if math.isfinite(v)],
            "cursors": cursors,
        }

    def run_facts(self, run_id: str) -> dict:
        """The run's derived facts (trainer.derived.run_summary: best/last validation loss and the
        best epoch, test metrics, gradient gap), cached per database version."""
        path = self.folders.run_dir(run_id)

        def compute():
            with self.folders.open(run_id) as reader, reader.snapshot():
                return derived.run_summary(reader)

        return self.folders.cached(("facts", run_id, run_identity(path)), compute)

    def scalar_view(self, run_id: str, step_min: int | None = None, step_max: int | None = None,
                    max_points: int = 2000, groups: tuple[str, ...] | None = None) -> dict:
        """Scalars (those whose chart group is in `groups`, all by default), downsampled to max_points
        (extremes kept), and the scalars cursor."""
        path = self.folders.run_dir(run_id)

        def compute():
            from .figures import scalar_group

            with self.folders.open(run_id) as reader, reader.snapshot():
                cursor = reader.cursor("scalars")
                out = {}
                names = [n for n in reader.scalar_names() if groups is None or scalar_group(n) in groups]
                for name in names:
                    shown_steps, shown_values, bad, total = scalar_display(reader, name, step_min, step_max,
                                                                          max_points)
                    out[name] = ScalarSeries(name, shown_steps, shown_values, _thin(bad, MAX_BAD_MARKERS), total)
            return {"series": out, "cursor": cursor}

        key = ("scalars", run_id, run_identity(path), step_min, step_max, max_points, groups)
        return self.folders.cached(key, compute)

    def scalar_delta(self, run_id: str, cursor: int) -> dict:
        """Scalar records after `cursor` (columns seq, step, name, value): {"rows", "cursor", "reset"}.
        The same cursor always returns the same rows (the log is append-only)."""
        with self.folders.open(run_id) as reader, reader.snapshot():
            if reader.count_after("scalars", cursor) > DELTA_ROW_LIMIT:
                return {"rows": None, "cursor": cursor, "reset": True}
            df = reader.scalar_rows_after(int(cursor))
        new_cursor = int(df["seq"].iloc[-1]) if len(df) else int(cursor)
        return {"rows": df, "cursor": new_cursor, "reset": False}

    def layer_view(self, run_id: str, quantities: tuple[str, ...], step_min: int | None = None,
                   step_max: int | None = None, max_points: int = 300, must_include=()) -> dict:
        """Per-layer tables of `quantities` (those the charts declare: views/run_charts.py) at up to
        max_points logged steps, and the stats cursor. Long runs are sampled evenly (flagged steps
        always included)."""
        path = self.folders.run_dir(run_id)

        def compute():
            with self.folders.open(run_id) as reader, reader.snapshot():
                cursor = reader.cursor("stats")
                order = reader.forward_layers()
                chosen, logged = reader.sample_logged_steps(step_min, step_max, max_points, must_include)
                if reader.has_layer_rollup():  # one row per step, whatever the model's size
                    tables = reader.rollup_at_steps(chosen, quantities, order)
                else:
                    stats = reader.layer_values_at_steps(chosen)
            if not reader.has_layer_rollup():
                tables = {q: derived.layer_table(stats, q, order) for q in quantities}
            return {"tables": tables, "cursor": cursor, "sampled": len(chosen) < logged,
                    "logged": logged, "shown": int(len(chosen)), "order": order}

        key = ("layers", run_id, run_identity(path), tuple(quantities), step_min, step_max, max_points,
               tuple(must_include))
        return self.folders.cached(key, compute)

    def step_norm_view(self, run_id: str, step_min: int | None = None, step_max: int | None = None,
                       max_points: int = 2000) -> dict:
        """Every optimizer step's per-layer gradient norm (the run's step_norms) in the step range,
        at most max_points steps: a bucket of steps shows each layer's largest norm, so a spike on
        an unlogged step is never averaged away; and the stats cursor (redrawn as statistics come)."""
        path = self.folders.run_dir(run_id)

        def compute():
            with self.folders.open(run_id) as reader, reader.snapshot():
                cursor = reader.cursor("stats")
                norms = reader.step_norms()
            layers, values = norms.layer_norms()
            steps = norms.steps
            inside = np.ones(len(steps), bool)
            if step_min is not None:
                inside &= steps >= step_min
            if step_max is not None:
                inside &= steps <= step_max
            shown_steps, shown = max_per_bucket(steps[inside], values[inside], max_points)
            table = pd.DataFrame(shown, index=pd.Index(shown_steps, name="step"), columns=list(layers))
            return {"tables": {"grad_norm": table}, "cursor": cursor, "order": list(layers),
                    "exact_steps": int((norms.span[inside] == 1).sum()), "steps": int(inside.sum()),
                    "bucketed": len(shown_steps) < int(inside.sum())}

        key = ("step_norms", run_id, run_identity(path), step_min, step_max, max_points)
        return self.folders.cached(key, compute)

    def layer_delta(self, run_id: str, cursor: int, quantities: tuple[str, ...]) -> dict:
        """Per-layer tables of `quantities` from the statistics rows after `cursor` only."""
        with self.folders.open(run_id) as reader, reader.snapshot():
            if reader.count_after("stats", cursor) > DELTA_ROW_LIMIT:
                return {"tables": {}, "cursor": cursor, "reset": True}
            stats, new_cursor = reader.layer_values_after(int(cursor))
            order = reader.forward_layers() if len(stats) else []
        tables = {q: derived.layer_table(stats, q, order) for q in quantities} if len(stats) else {}
        return {"tables": tables, "cursor": int(new_cursor), "reset": False}

    # ---- the live poll's reads: one per change, shared by every viewer of the run in this process ----
    def live_head(self, run_id: str, ident: tuple | None) -> dict:
        """What a live poll reads first: {"status", "cursors", "last_logged"}. Viewers polling while
        the files keep `ident` share one read (a status is then at most SharedReads.ttl_s old)."""
        def compute():
            with self.folders.open(run_id) as reader:
                db = os.stat(reader.db_path)
                # The database file and start time tell this run from another made later under the
                # same id (the live tails are keyed by them).
                return {"status": reader.status(), "cursors": reader.cursors(),
                        "last_logged": reader.last_logged_step(),
                        "run_file": (str(reader.meta.get("started")), db.st_dev, db.st_ino)}

        return compute() if ident is None else self.folders.shared.get(("head", run_id, tuple(ident)), compute)

    def _tail(self, run_id: str, head: dict, source: tuple, read, key: str, max_rows: int) -> GrowingTail:
        """The process's tail of one source of a run; a run made anew under the same id (another
        database file, another start time) gets a new tail."""
        return self.folders.tails.get((run_id, head["run_file"], *source), lambda: GrowingTail(read, key, max_rows))

    def shared_scalar_delta(self, run_id: str, cursor: int, head: dict) -> dict:
        """scalar_delta(run_id, cursor) for every viewer of the run in this process, given the
        live_head it saw: the rows (numpy columns, or scalar_delta's frame for a cursor far behind)
        come from the run's tail (one read per change whatever the viewers' cursors), and one answer
        per (cursor, head) is shared."""
        newest = int(head["cursors"]["scalars"])

        def read(after, head):
            with self.folders.open(run_id) as reader:
                df = reader.scalar_rows_after(int(after))
            columns = {name: df[name].to_numpy() for name in ("seq", "step", "name", "value")}
            return columns, max(int(head), int(columns["seq"][-1]) if len(df) else int(after)), {}

        def build():
            tail = self._tail(run_id, head, ("scalars",), read, "seq", TAIL_ROWS)
            rows = tail.rows_after(cursor, newest)
            if rows is None:
                return self.scalar_delta(run_id, cursor)
            if len(rows["seq"]) > DELTA_ROW_LIMIT:
                return {"rows": None, "cursor": int(cursor), "reset": True}
            new_cursor = int(rows["seq"][-1]) if len(rows["seq"]) else int(cursor)
            return {"rows": rows, "cursor": new_cursor, "reset": False}  # columns: seq, step, name, value

        return self.folders.shared.get(("scalars", run_id, head["run_file"], int(cursor), newest), build)

    def shared_layer_delta(self, run_id: str, cursor: int, head: dict, quantities: tuple[str, ...]) -> dict:
        """layer_delta(run_id, cursor, quantities) from the run's statistics tail, one answer per
        (cursor, head)."""
        newest = int(head["cursors"]["stats"])

        def read(after, head):
            with self.folders.open(run_id) as reader:
                stats, new_cursor = reader.layer_values_after(int(after))
                order = reader.forward_layers()
            stats = stats.sort_values("seq", kind="stable")  # the tail is kept in seq order
            return {name: stats[name].to_numpy() for name in stats.columns}, max(int(head), new_cursor), \
                {"order": order}

        def build():
            tail = self._tail(run_id, head, ("stats",), read, "seq", TAIL_ROWS)
            rows = tail.rows_after(cursor, newest)
            if rows is None:
                return self.layer_delta(run_id, cursor, quantities)
            if len(rows["seq"]) > DELTA_ROW_LIMIT:
                return {"tables": {}, "cursor": int(cursor), "reset": True}
            if not len(rows["seq"]):
                return {"tables": {}, "cursor": int(cursor), "reset": False}
            stats = pd.DataFrame(rows).sort_values(["step", "seq"], kind="stable").reset_index(drop=True)
            order = tail.facts.get("order") or []
            tables = {q: derived.layer_table(stats, q, order) for q in quantities}
            return {"tables": tables, "cursor": int(rows["seq"].max()), "reset": False}

        return self.folders.shared.get(("layers", run_id, head["run_file"], int(cursor), newest, tuple(quantities)),
                                       build)

    def shared_histogram_delta(self, run_id: str, tensor: str, kind: str, after_step: int, head: dict) -> dict:
        """histogram_delta(...) from the tensor's histogram tail, one answer per (step, last logged step)."""
        last_logged = head["last_logged"]

        def read(after, head):
            with self.folders.open(run_id) as reader:
                steps, counts = reader.histograms(tensor, kind, step_min=int(after) + 1)
            # Covered up to the last histogram read (one may land after its step's statistics).
            return {"step": steps, "counts": counts}, int(steps[-1]) if len(steps) else int(after), {}

        def build():
            if last_logged is None:
                return self.histogram_delta(run_id, tensor, kind, after_step)
            tail = self._tail(run_id, head, ("hist", tensor, kind), read, "step", 4 * HIST_DELTA_LIMIT)
            rows = tail.rows_after(after_step, last_logged)
            if rows is None:
                return self.histogram_delta(run_id, tensor, kind, after_step)
            return _histogram_answer(rows["step"], rows["counts"])

        return self.folders.shared.get(("hist", run_id, head["run_file"], tensor, kind, int(after_step), last_logged),
                               build)

    def gradient_flow(self, run_id: str, step: int | None) -> dict:
        """Per-layer gradient norms at the logged step at or before `step` (the latest when None)."""
        flow_fields = ("grad_norm", "grad_max_abs", "grad_nonfinite")
        with self.folders.open(run_id) as reader, reader.snapshot():
            snapped = reader.last_logged_step() if step is None else reader.logged_step_at_or_before(step)
            order = reader.forward_layers()
            if snapped is None:
                tables = {}
            elif reader.has_layer_rollup():  # one row, whatever the model's size
                tables = reader.rollup_at_steps([snapped], flow_fields, order)
            else:
                stats = reader.stats_at_steps([snapped], kinds=("grad",))
                tables = {q: derived.layer_table(stats, q, order) for q in flow_fields}
        norms = tables.get("grad_norm")
        if norms is None or norms.empty:
            return {"step": snapped, "layers": [], "grad_norm": [], "grad_max_abs": [], "nonfinite": []}
        layers = list(norms.columns)
        row = {q: t.iloc[-1].reindex(layers) if not t.empty else pd.Series(np.nan, index=layers)
               for q, t in tables.items()}
        return {"step": int(snapped), "layers": layers,
                "grad_norm": [float(v) for v in row["grad_norm"].to_numpy()],
                "grad_max_abs": [float(v) for v in row["grad_max_abs"].to_numpy()],
                "nonfinite": [int(v) for v in np.nan_to_num(row["grad_nonfinite"].to_numpy())]}

    def histogram_view(self, run_id: str, tensor: str, kind: str, step_min: int | None = None,
                       step_max: int | None = None, max_columns: int = 200) -> dict:
        """Histogram counts of one tensor over time (step x bin), at up to max_columns steps."""
        path = self.folders.run_dir(run_id)

        def compute():
            with self.folders.open(run_id) as reader, reader.snapshot():
                steps, counts, sampled = reader.sampled_hists(tensor, kind, step_min, step_max, max_columns)
            return {"tensor": tensor, "kind": kind, "steps": steps, "counts": counts, "sampled": sampled}

        key = ("hist", run_id, run_identity(path), tensor, kind, step_min, step_max, max_columns)
        return self.folders.cached(key, compute)

    def histogram_delta(self, run_id: str, tensor: str, kind: str, after_step: int) -> dict:
        with self.folders.open(run_id) as reader:
            steps, counts = reader.histograms(tensor, kind, step_min=int(after_step) + 1)
        return _histogram_answer(steps, counts)

    def weights_by_epoch(self, run_id: str) -> dict:
        """The lesson's figure data: per-layer weight mean and std at the end of each epoch, with the
        epoch's training and validation loss. Runs without an `epoch` scalar use sampled steps."""
        path = self.folders.run_dir(run_id)

        def compute():
            with self.folders.open(run_id) as reader, reader.snapshot():
                order = reader.forward_layers()
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
                if not len(snapped):
                    tables = {"weight_mean": pd.DataFrame(), "weight_std": pd.DataFrame()}
                elif reader.has_layer_rollup():  # one row per epoch, whatever the model's size
                    tables = reader.rollup_at_steps(snapped, ("weight_mean", "weight_std"), order)
                else:
                    stats = reader.stats_at_steps(snapped, kinds=("weight",))
                    tables = {q: derived.layer_table(stats, q, order) for q in ("weight_mean", "weight_std")}
            mean, std = tables["weight_mean"], tables["weight_std"]
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
        return self.folders.cached(key, compute)

    def compare_runs(self, run_ids: list[str], step: int | None = None, max_points: int = 600) -> dict:
        """Side-by-side data for several runs: curves, gradient flow at one common step, final metrics."""
        runs, errors = [], {}
        for run_id in run_ids:
            try:
                info = self.run_info(run_id)
                scalars = self.scalar_view(run_id, max_points=max_points, groups=("loss", "accuracy"))
                flags = self.diagnosis.flags(run_id, status=info["status"])
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

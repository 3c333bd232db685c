"""Pure numeric transforms from run-log rows to what the figures draw (numpy/pandas only).

- `downsample_extremes`: at most N points per series for display, keeping each bucket's minimum and
  maximum (a spike or a dip survives any zoom level) and the first and last points.
- `layer_table` (re-exported from gradwatch.trainer.derived, the one place it is computed):
  per-tensor statistics rows -> a step x layer table of one per-layer quantity.
"""

from __future__ import annotations

import numpy as np

# Per-layer tables are derived facts, computed where diagnosis, inspect and the lesson compute them.
from gradwatch.trainer.derived import LAYER_QUANTITIES, layer_table, layer_values_at  # noqa: E402,F401


def downsample_extremes(steps, values, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points (step, value) pairs: per bucket of consecutive points, the minimum and
    the maximum (in step order), plus the first and last point. Non-finite values are dropped
    (figures mark them separately). Input need not be sorted; output is sorted by step."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if len(steps) and np.any(np.diff(steps) < 0):
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
    n = len(steps)
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4 to keep extremes, got {max_points}")
    if n <= max_points:
        return steps, values
    buckets = max(1, (max_points - 2) // 2)
    bucket = (np.arange(n) * buckets) // n
    # Within each bucket, sorted by value: the first row is the minimum, the last the maximum.
    order = np.lexsort((values, bucket))
    starts = np.searchsorted(bucket[order], np.arange(buckets), side="left")
    ends = np.searchsorted(bucket[order], np.arange(buckets), side="right") - 1
    keep = np.unique(np.concatenate([order[starts], order[ends], [0, n - 1]]))
    return steps[keep], values[keep]


def extremes_from_blocks(blocks: dict, edge_steps, edge_values, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Display points of a long series from its roll-up blocks (see schema.scalar_blocks) plus the
    raw records outside them: each bucket of consecutive blocks contributes its minimum and maximum
    point, the series its first and last; at most ~max_points points, sorted by step."""
    n_blocks = len(blocks["n"])
    buckets = max(1, (max_points - 2) // 2)
    bucket = (np.arange(n_blocks) * buckets) // max(n_blocks, 1)
    steps, values = [], []
    for value_key, step_key, pick in (("min_value", "min_step", np.argmin), ("max_value", "max_step", np.argmax)):
        v, st = blocks[value_key], blocks[step_key]
        ok = np.isfinite(v)
        if not ok.any():
            continue
        b, v, st = bucket[ok], v[ok], st[ok]
        # The extreme of each bucket: sort by (bucket, value) and take each bucket's first or last row.
        order = np.lexsort((v if pick is np.argmin else -v, b))
        first_of_bucket = np.r_[True, b[order][1:] != b[order][:-1]]
        chosen = order[first_of_bucket]
        steps.append(st[chosen])
        values.append(v[chosen])
    for value_key, step_key in (("first_value", "first_value_step"), ("last_value", "last_value_step")):
        v, st = blocks[value_key], blocks[step_key]
        ok = np.flatnonzero(np.isfinite(v))
        if len(ok):
            i = ok[0] if value_key == "first_value" else ok[-1]
            steps.append(st[i:i + 1])
            values.append(v[i:i + 1])
    edge_steps, edge_values = np.asarray(edge_steps, dtype=np.int64), np.asarray(edge_values, dtype=float)
    finite = np.isfinite(edge_values)
    steps.append(edge_steps[finite])
    values.append(edge_values[finite])
    all_steps = np.concatenate(steps).astype(np.int64)
    all_values = np.concatenate(values)
    order = np.lexsort((all_values, all_steps))
    all_steps, all_values = all_steps[order], all_values[order]
    keep = np.r_[True, (all_steps[1:] != all_steps[:-1]) | (all_values[1:] != all_values[:-1])]
    return all_steps[keep], all_values[keep]


def nonfinite_points(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Steps whose value is NaN or +/-Inf and the values themselves (for "diverged here" markers)."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values)
    return steps[bad], values[bad]

"""Pure numeric transforms from run-log rows to what the figures draw (numpy/pandas only).

- `downsample_extremes`: at most N points per series for display, keeping each bucket's minimum and
  maximum (a spike or a dip survives any zoom level) and the first and last points.
- `layer_table`: per-tensor statistics rows -> a step x layer table of one per-layer quantity, with
  the same definitions the diagnosis rules use (a layer's gradient norm is the root of the sum of its
  parameters' squared norms; its update ratio is |delta W| / |W| over its parameters together).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Per-layer quantities the dashboard draws, by the statistics rows they come from.
LAYER_QUANTITIES = {
    "grad_norm": "grad",
    "grad_max_abs": "grad",
    "weight_norm": "weight",
    "weight_mean": "weight",
    "weight_std": "weight",
    "update_ratio": "weight",
    "saturated_frac": "activation",
    "dead_frac": "activation",
}


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


def _pivot(steps, layers, values, order: list[str]) -> pd.DataFrame:
    """Long (step, layer, value) -> a step x layer table (numpy scatter; pandas pivot_table is ~10x slower)."""
    steps = np.asarray(steps, dtype=np.int64)
    layers = np.asarray(layers, dtype=object)
    values = np.asarray(values, dtype=float)
    unique_steps, row = np.unique(steps, return_inverse=True)
    present = list(dict.fromkeys(layers.tolist()))
    columns = [c for c in order if c in set(present)] + [c for c in present if c not in set(order)]
    column_index = {c: i for i, c in enumerate(columns)}
    col = np.fromiter((column_index[c] for c in layers), dtype=np.int64, count=len(layers))
    table = np.full((len(unique_steps), len(columns)), np.nan)
    table[row, col] = values
    return pd.DataFrame(table, index=pd.Index(unique_steps, name="step"), columns=columns)


def _grouped_sums(steps, layers, *values) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Sums of each value array per (step, layer), NaNs skipped: (steps, layers, sums, counts of
    non-NaN values) in long form. numpy bincount; a pandas groupby costs ~10x more per live poll."""
    steps = np.asarray(steps, dtype=np.int64)
    layer_codes, layer_names = pd.factorize(np.asarray(layers, dtype=object))
    step_values, step_codes = np.unique(steps, return_inverse=True)
    key = step_codes.astype(np.int64) * max(len(layer_names), 1) + layer_codes
    groups, inverse = np.unique(key, return_inverse=True)
    first = values[0]
    valid = ~np.isnan(first)
    counts = np.bincount(inverse[valid], minlength=len(groups))
    sums = [np.bincount(inverse[valid], weights=np.asarray(v, dtype=float)[valid], minlength=len(groups))
            for v in values]
    names = np.asarray(layer_names, dtype=object)
    return step_values[groups // max(len(layer_names), 1)], names[groups % max(len(layer_names), 1)], sums, counts


def layer_table(stats: pd.DataFrame, quantity: str, order: list[str] | None = None) -> pd.DataFrame:
    """A step x layer table of one per-layer quantity (columns in forward order `order`).

    grad_norm / weight_norm: sqrt(sum of the layer's parameters' squared norms).
    grad_max_abs: largest |gradient element| over the layer's parameters.
    weight_mean / weight_std: of the layer's weight matrices ('weight*' parameters, numel-weighted
        and pooled when there are several), biases left out as in the lesson's figure.
    update_ratio: sqrt(sum (ratio_i |W_i|)^2 / sum |W_i|^2) over parameters with a ratio.
    saturated_frac / dead_frac: of the module's output (activation rows).
    """
    if quantity not in LAYER_QUANTITIES:
        raise ValueError(f"unknown per-layer quantity {quantity!r}; known: {', '.join(LAYER_QUANTITIES)}")
    order = list(order or [])
    empty = pd.DataFrame(index=pd.Index([], dtype=np.int64, name="step"))
    if stats is None or len(stats) == 0:
        return empty
    rows = stats[stats["kind"] == LAYER_QUANTITIES[quantity]]
    if quantity in ("weight_mean", "weight_std"):
        rows = rows[rows["param"].astype(str).str.startswith("weight")]
    if len(rows) == 0:
        return empty
    steps = rows["step"].to_numpy(dtype=np.int64)
    layers = rows["layer"].to_numpy(dtype=object)
    if quantity in ("grad_norm", "weight_norm"):
        g_steps, g_layers, (total,), count = _grouped_sums(steps, layers, rows["norm"].to_numpy(dtype=float) ** 2)
        return _pivot(g_steps, g_layers, np.where(count > 0, np.sqrt(total), np.nan), order)
    if quantity == "grad_max_abs":
        big = np.maximum(rows["max"].abs().to_numpy(dtype=float), rows["min"].abs().to_numpy(dtype=float))
        frame = pd.DataFrame({"step": steps, "layer": layers, "v": big}).groupby(["step", "layer"])["v"].max()
        frame = frame.reset_index()
        return _pivot(frame["step"], frame["layer"], frame["v"], order)
    if quantity in ("weight_mean", "weight_std"):
        norm = rows["norm"].to_numpy(dtype=float)
        mean = rows["mean"].to_numpy(dtype=float)
        std = rows["std"].to_numpy(dtype=float)
        # numel from the norm identity |W|^2 = n (std^2 + mean^2); exact enough to weight the pooling.
        with np.errstate(divide="ignore", invalid="ignore"):
            numel = norm**2 / (std**2 + mean**2)
        numel = np.where(np.isfinite(numel) & (numel > 0), numel, 1.0)
        frame = pd.DataFrame({"step": steps, "layer": layers, "n": numel, "m": mean * numel,
                              "s": (std**2 + mean**2) * numel})
        grouped = frame.groupby(["step", "layer"], sort=False).sum(min_count=1).reset_index()
        pooled_mean = grouped["m"] / grouped["n"]
        if quantity == "weight_mean":
            return _pivot(grouped["step"], grouped["layer"], pooled_mean, order)
        pooled_var = np.maximum(grouped["s"] / grouped["n"] - pooled_mean**2, 0.0)
        return _pivot(grouped["step"], grouped["layer"], np.sqrt(pooled_var), order)
    if quantity == "update_ratio":
        ratio = rows["update_ratio"].to_numpy(dtype=float)
        norm = rows["norm"].to_numpy(dtype=float)
        ok = np.isfinite(ratio) & np.isfinite(norm)
        if not ok.any():
            return empty
        g_steps, g_layers, (d, w), _ = _grouped_sums(steps[ok], layers[ok], (ratio[ok] * norm[ok]) ** 2,
                                                     norm[ok] ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.sqrt(d / w)
        return _pivot(g_steps, g_layers, value, order)
    column = quantity
    values = rows[column].to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return empty
    g_steps, g_layers, (total,), count = _grouped_sums(steps[ok], layers[ok], values[ok])
    return _pivot(g_steps, g_layers, total / count, order)


def layer_values_at(stats: pd.DataFrame, quantity: str, order: list[str] | None = None) -> pd.Series:
    """One step's per-layer values (the last step present in `stats`), indexed by layer in order."""
    table = layer_table(stats, quantity, order)
    if table.empty:
        return pd.Series(dtype=float)
    return table.iloc[-1]

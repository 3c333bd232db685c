"""Derived quantities: the facts computed from a run's records, each in one place. Torch-free.

Diagnosis, the dashboard, `gradwatch inspect`, the HTML export and the lesson table all call these,
so a layer's gradient norm or a run's best epoch means the same thing everywhere:

- per-layer tables (`layer_table`): statistics rows (one per tensor and step) -> a step x layer table.
  A layer's norm is the root of the sum of its parameters' squared norms (a NaN parameter norm makes
  the layer's NaN: the layer's gradient is not finite); its update ratio is |delta W| / |W| over its
  parameters together; activation fractions are per module output.
- `total_norm`: the whole model's norm from per-layer norms (root of the sum of squares per step).
- validation facts (`best_index`, `validation_summary`, `per_epoch_summary`): best and last
  validation loss, the step and epoch of the best.
- `test_metrics`: the final model's test scores as the trainer stores them in meta["results"].
- `gradient_gap`: how much smaller the first weighted layer's gradient is than the last one's.
- `run_summary`: all of the above for one run folder's reader.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

# Per-layer quantities, by the kind of statistics rows they come from.
LAYER_QUANTITIES = {
    "grad_norm": "grad",
    "grad_max_abs": "grad",
    "grad_nonfinite": "grad",
    "weight_norm": "weight",
    "weight_mean": "weight",
    "weight_std": "weight",
    "update_ratio": "weight",
    "saturated_frac": "activation",
    "dead_frac": "activation",
}
# The keys of meta["results"] the trainer writes for the test split (trainer/train/loop.py).
TEST_METRICS = ("test_accuracy", "test_macro_f1", "test_loss")


# ---- per-layer tables ------------------------------------------------------------------------------
def _columns(layers: np.ndarray, order: list[str]) -> tuple[list[str], np.ndarray]:
    """(columns: `order` first, then other layers by appearance; each row's column index)."""
    present = list(dict.fromkeys(layers.tolist()))
    present_set, order_set = set(present), set(order)  # built once: hundreds of layers
    columns = [c for c in order if c in present_set] + [c for c in present if c not in order_set]
    column_index = {c: i for i, c in enumerate(columns)}
    return columns, np.fromiter((column_index[c] for c in layers), dtype=np.int64, count=len(layers))


def _pivot(steps, layers, values, order: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Long (step, layer, value) -> (steps, columns, step x layer array): a numpy scatter (pandas
    pivot_table is ~10x slower)."""
    steps = np.asarray(steps, dtype=np.int64)
    layers = np.asarray(layers, dtype=object)
    unique_steps, row = np.unique(steps, return_inverse=True)
    columns, col = _columns(layers, order)
    table = np.full((len(unique_steps), len(columns)), np.nan)
    table[row, col] = np.asarray(values, dtype=float)
    return unique_steps, columns, table


def _grouped_sums(steps, layers, *values, skip_nan: bool = True):
    """Sums of each value array per (step, layer): (steps, layers, sums, counts) in long form.
    skip_nan leaves out rows whose first value is NaN; otherwise a NaN makes its group's sum NaN.
    numpy bincount; a pandas groupby costs ~10x more per live poll."""
    steps, layers, inverse, n_groups = _groups(steps, layers)
    keep = ~np.isnan(np.asarray(values[0], dtype=float)) if skip_nan else np.ones(len(inverse), bool)
    counts = np.bincount(inverse[keep], minlength=n_groups)
    sums = [np.bincount(inverse[keep], weights=np.asarray(v, dtype=float)[keep], minlength=n_groups)
            for v in values]
    return steps, layers, sums, counts


def _groups(steps, layers):
    """(step and layer of each (step, layer) group, each row's group, group count)."""
    steps = np.asarray(steps, dtype=np.int64)
    layer_codes, layer_names = pd.factorize(np.asarray(layers, dtype=object))
    step_values, step_codes = np.unique(steps, return_inverse=True)
    width = max(len(layer_names), 1)
    key = step_codes.astype(np.int64) * width + layer_codes
    groups, inverse = np.unique(key, return_inverse=True)
    names = np.asarray(layer_names, dtype=object)
    return step_values[groups // width], names[groups % width], inverse, len(groups)


def layer_table(stats: pd.DataFrame, quantity: str, order: list[str] | None = None) -> pd.DataFrame:
    """A step x layer table of one per-layer quantity (columns in forward order `order`, then any
    other layer in order of appearance; only steps and layers that have rows of the quantity's kind).
    The arithmetic is layer_arrays'; this wraps a statistics frame (columns step, layer, param,
    kind, STAT_FIELDS...; param may be absent where every row is a weight matrix's) around it."""
    if quantity not in LAYER_QUANTITIES:
        raise ValueError(f"unknown per-layer quantity {quantity!r}; known: {', '.join(LAYER_QUANTITIES)}")
    empty = pd.DataFrame(index=pd.Index([], dtype=np.int64, name="step"))
    if stats is None or len(stats) == 0:
        return empty
    result = layer_arrays(stats["step"].to_numpy(dtype=np.int64), stats["layer"].to_numpy(dtype=object),
                          stats["kind"].to_numpy(dtype=object),
                          stats["param"].to_numpy(dtype=object) if "param" in stats.columns else None,
                          lambda name: stats[name].to_numpy(dtype=float), quantity, order)
    if result is None:
        return empty
    steps, columns, table = result
    return pd.DataFrame(table, index=pd.Index(steps, name="step"), columns=columns)


def layer_arrays(step: np.ndarray, layer: np.ndarray, kind: np.ndarray, param: np.ndarray, column,
                 quantity: str, order: list[str] | None = None):
    """The per-layer quantity as (steps, columns, step x layer array), or None without rows of its
    kind. step/layer/kind/param: one entry per statistics row (kind by name); column(name): that
    STAT_FIELDS column as floats. The one place each per-layer quantity is computed:

    grad_norm / weight_norm: sqrt(sum of the layer's parameters' squared norms).
    grad_max_abs: largest |gradient element| over the layer's parameters.
    grad_nonfinite: NaN and Inf gradient elements of the layer's parameters together.
    weight_mean / weight_std: of the layer's weight matrices ('weight*' parameters, numel-weighted
        and pooled when there are several), biases left out as in the lesson's figure.
    update_ratio: sqrt(sum (ratio_i |W_i|)^2 / sum |W_i|^2) over parameters with a finite ratio.
    saturated_frac / dead_frac: of the module's output (mean if a module is seen twice).
    """
    if quantity not in LAYER_QUANTITIES:
        raise ValueError(f"unknown per-layer quantity {quantity!r}; known: {', '.join(LAYER_QUANTITIES)}")
    order = list(order or [])
    mask = np.asarray(kind == LAYER_QUANTITIES[quantity], dtype=bool)
    if quantity in ("weight_mean", "weight_std") and param is not None:  # None: rows of weights only
        mask &= np.fromiter((str(p).startswith("weight") for p in param), dtype=bool, count=len(param))
    if not mask.any():
        return None
    steps = np.asarray(step, dtype=np.int64)[mask]
    layers = np.asarray(layer, dtype=object)[mask]

    def col(name):
        return np.asarray(column(name), dtype=float)[mask]

    if quantity in ("grad_norm", "weight_norm"):
        g_steps, g_layers, (total,), _ = _grouped_sums(steps, layers, col("norm") ** 2, skip_nan=False)
        return _pivot(g_steps, g_layers, np.sqrt(total), order)
    if quantity == "grad_max_abs":
        big = np.maximum(np.abs(col("max")), np.abs(col("min")))
        g_steps, g_layers, inverse, n = _groups(steps, layers)
        out = np.full(n, np.nan)
        np.fmax.at(out, inverse, big)  # NaN-skipping, NaN only where every value is
        return _pivot(g_steps, g_layers, out, order)
    if quantity == "grad_nonfinite":
        bad = np.nan_to_num(col("nan_count"), nan=0.0) + np.nan_to_num(col("inf_count"), nan=0.0)
        g_steps, g_layers, (total,), _ = _grouped_sums(steps, layers, bad)
        return _pivot(g_steps, g_layers, total, order)
    if quantity in ("weight_mean", "weight_std"):
        norm, mean, std = col("norm"), col("mean"), col("std")
        # numel from the norm identity |W|^2 = n (std^2 + mean^2); exact enough to weight the pooling.
        with np.errstate(divide="ignore", invalid="ignore"):
            numel = norm**2 / (std**2 + mean**2)
        numel = np.where(np.isfinite(numel) & (numel > 0), numel, 1.0)
        g_steps, g_layers, inverse, n = _groups(steps, layers)

        def pooled_sum(values):  # NaN-skipping sum, NaN where every value is NaN
            ok = ~np.isnan(values)
            total = np.bincount(inverse[ok], weights=values[ok], minlength=n)
            return np.where(np.bincount(inverse[ok], minlength=n) > 0, total, np.nan)

        weights = pooled_sum(numel)
        with np.errstate(divide="ignore", invalid="ignore"):
            pooled_mean = pooled_sum(mean * numel) / weights
            if quantity == "weight_mean":
                return _pivot(g_steps, g_layers, pooled_mean, order)
            pooled_var = np.maximum(pooled_sum((std**2 + mean**2) * numel) / weights - pooled_mean**2, 0.0)
        return _pivot(g_steps, g_layers, np.sqrt(pooled_var), order)
    if quantity == "update_ratio":
        ratio, norm = col("update_ratio"), col("norm")
        ok = np.isfinite(ratio) & np.isfinite(norm)
        if not ok.any():
            return None
        g_steps, g_layers, (d, w), _ = _grouped_sums(steps[ok], layers[ok], (ratio[ok] * norm[ok]) ** 2,
                                                     norm[ok] ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.sqrt(d / w)
        return _pivot(g_steps, g_layers, value, order)
    values = col(quantity)
    ok = np.isfinite(values)
    if not ok.any():
        return None
    g_steps, g_layers, (total,), count = _grouped_sums(steps[ok], layers[ok], values[ok])
    return _pivot(g_steps, g_layers, total / count, order)


def layer_values_at(stats: pd.DataFrame, quantity: str, order: list[str] | None = None) -> pd.Series:
    """One step's per-layer values (the last step present in `stats`), indexed by layer in order."""
    table = layer_table(stats, quantity, order)
    if table.empty:
        return pd.Series(dtype=float)
    return table.iloc[-1]


def total_norm(layer_norms: pd.DataFrame) -> pd.Series:
    """The whole model's norm per step from a step x layer table of norms (root of the sum of squares)."""
    values = layer_norms.to_numpy(dtype=float)
    return pd.Series(np.sqrt((values**2).sum(axis=1)), index=layer_norms.index)


# ---- validation and test facts ---------------------------------------------------------------------
def best_index(values) -> int | None:
    """Position of the lowest finite value (the first one on a tie), or None when none is finite."""
    arr = np.asarray(values, dtype=float)
    finite = np.isfinite(arr)
    if not finite.any():
        return None
    return int(np.argmin(np.where(finite, arr, np.inf)))


def validation_summary(steps, values, epoch_at_step: dict | None = None) -> dict:
    """best_val_loss, best_step, best_epoch and last_val_loss of a validation-loss series (steps
    ascending); the epoch comes from `epoch_at_step` (the run's `epoch` scalar by step), None without it."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    best = best_index(values)
    if best is None:
        return {"best_val_loss": None, "best_step": None, "best_epoch": None, "last_val_loss": None}
    best_step = int(steps[best])
    epoch = (epoch_at_step or {}).get(best_step)
    best_epoch = int(round(epoch)) if epoch is not None and math.isfinite(epoch) else None
    return {"best_val_loss": float(values[best]), "best_step": best_step, "best_epoch": best_epoch,
            "last_val_loss": float(values[np.isfinite(values)][-1])}


def per_epoch_summary(val_losses) -> dict:
    """validation_summary of one validation loss per epoch (epoch k at position k - 1)."""
    n = len(val_losses)
    return validation_summary(np.arange(n), val_losses, {i: i + 1 for i in range(n)})


def test_metrics(results: Any) -> dict:
    """TEST_METRICS from a run's meta["results"] (None where missing or not a number)."""
    results = results if isinstance(results, dict) else {}
    out = {}
    for key in TEST_METRICS:
        value = results.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out[key] = float(value) if ok else None
    return out


def weighted_layers(tensors: pd.DataFrame) -> list[str]:
    """Layers with a parameter of two or more dimensions (a weight matrix or kernel), forward order."""
    if tensors is None or not len(tensors):
        return []
    params = tensors[tensors["role"] == "param"]
    return list(dict.fromkeys(layer for layer, shape in zip(params["layer"], params["shape"]) if len(shape) >= 2))


def gradient_gap(grad_norms: pd.DataFrame, first: str, last: str) -> float:
    """Median over steps of last layer's gradient norm / first layer's (NaN when it cannot be told):
    ~1 for healthy flow, 100s when the gradient vanishes on its way back to the first layer."""
    if first not in grad_norms or last not in grad_norms:
        return float("nan")
    ratio = (grad_norms[last] / grad_norms[first]).replace([np.inf, -np.inf], np.nan).dropna()
    return float(ratio.median()) if len(ratio) else float("nan")


def run_summary(reader) -> dict:
    """One run's facts from its reader (a trainer.runlog RunReader): validation (validation_summary),
    test metrics (test_metrics) and the gradient gap between its first and last weighted layers."""
    val_steps, val = reader.scalar_arrays("val_loss")
    epoch_steps, epoch_values = reader.scalar_arrays("epoch")
    tensors = reader.tensors()
    layers = weighted_layers(tensors)
    gap, first, last = float("nan"), None, None
    if len(layers) >= 2:
        first, last = layers[0], layers[-1]
        names = tensors.loc[(tensors["role"] == "param") & tensors["layer"].isin([first, last]), "name"].tolist()
        stats, _ = reader.layer_stats(kinds=("grad",), names=names)
        gap = gradient_gap(layer_table(stats, "grad_norm"), first, last)
    return {**validation_summary(val_steps, val, dict(zip(epoch_steps.tolist(), epoch_values.tolist()))),
            **test_metrics(reader.meta.get("results")), "grad_gap": gap, "first_layer": first, "last_layer": last}


# Counters the writer keeps in meta, and what each says in words.
LOSS_COUNTERS = (
    ("lost_records", "records lost to write failures"),
    ("dropped_records", "layer records dropped (disk slower than training)"),
    ("dropped_histograms", "histograms dropped (disk slower than training)"),
)


def record_losses(meta: dict) -> dict:
    """The run's nonzero loss counters ({"lost_records": 17680, ...}); empty when nothing was lost.
    One place decides what counts as a loss, so inspect, the dashboard and the export agree."""
    out = {}
    for key, _ in LOSS_COUNTERS:
        value = meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = value
    return out


def losses_line(meta: dict) -> str | None:
    """One line naming what the run lost ("17,680 records lost to write failures; ..."), or None."""
    losses = record_losses(meta)
    if not losses:
        return None
    return "; ".join(f"{losses[key]:,} {words}" for key, words in LOSS_COUNTERS if key in losses)

"""When a pathology becomes visible in a run's records: simple one-step tests, independent of the rules.

Each oracle answers "from which optimizer step could a person looking at the plots see it?" with a
plain reading of one recorded quantity at one step: no smoothing, no "sustained" window, no trend
test. The evaluation measures a rule's detection lag from that step. Oracles read RunData (the
rules' input) only for convenience; they share none of the rules' code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradwatch.trainer.diagnose import RunData, evaluation_table
from gradwatch.trainer.runlog.schema import SENTINEL_GRAD_NORM

RELU_TYPES = ("ReLU", "ReLU6", "RReLU", "Threshold")
SATURATING_TYPES = ("Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Softsign")


def _first(steps: np.ndarray, mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(steps[hits[0]]) if len(hits) else None


def vanishing_visible(data: RunData, ratio: float = 1e-3) -> int | None:
    """First logged step where the first weighted layer's gradient norm is below `ratio` x the last's."""
    layers = data.weighted_layers
    if len(layers) < 2:
        return None
    grads = data.views.grad_norm[layers].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = grads[:, 0] / grads[:, -1] < ratio
    return _first(data.views.grad_norm.index.to_numpy(), below)


def exploding_visible(data: RunData, factor: float = 100.0) -> int | None:
    """First step where the unclipped gradient norm is `factor` x its first logged value, or NaN/Inf
    (the trainer's grad_norm_total, else the capture's every-step sentinel, else the layers' total)."""
    norm = data.scalar("grad_norm_total")
    if not len(norm):
        norm = data.scalar(SENTINEL_GRAD_NORM)
    if not len(norm) and not data.views.grad_norm.empty:
        grads = data.views.grad_norm
        norm = pd.Series(np.sqrt((grads.to_numpy(dtype=float) ** 2).sum(axis=1)), index=grads.index)
    if not len(norm):
        return None
    values = norm.to_numpy(dtype=float)
    first = values[np.isfinite(values) & (values > 0)]
    if not len(first):
        return None
    with np.errstate(invalid="ignore"):
        visible = ~np.isfinite(values) | (values >= factor * first[0])
    return _first(norm.index.to_numpy(), visible)


def nonfinite_visible(data: RunData) -> int | None:
    """First step whose training loss or gradient norm is NaN/Inf."""
    steps = []
    for name in ("train_loss", "grad_norm_total"):
        series = data.scalar(name)
        bad = series.index[~np.isfinite(series.to_numpy(dtype=float))]
        if len(bad):
            steps.append(int(bad[0]))
    return min(steps) if steps else None


def _hidden_fraction(data: RunData, frame, types) -> tuple[np.ndarray, np.ndarray]:
    kinds = data.module_types
    layers = data.hidden_layers([c for c in frame.columns if kinds.get(c) in types])
    if not layers:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    return frame.index.to_numpy(), frame[layers].to_numpy(dtype=float)


def dead_visible(data: RunData, fraction: float = 0.5) -> int | None:
    """First logged step where more than `fraction` of a hidden ReLU layer's units are silent for the
    whole batch (SageMaker Debugger's DeadRelu layer threshold, without its activity window)."""
    steps, values = _hidden_fraction(data, data.views.dead, RELU_TYPES)
    if not values.size:
        return None
    return _first(steps, np.nanmax(np.where(np.isfinite(values), values, -1), axis=1) > fraction)


def saturated_visible(data: RunData, fraction: float = 0.5) -> int | None:
    """First logged step where at least `fraction` of a hidden sigmoid/tanh layer's outputs sit at
    the rails."""
    steps, values = _hidden_fraction(data, data.views.saturated, SATURATING_TYPES)
    if not values.size:
        return None
    return _first(steps, np.nanmax(np.where(np.isfinite(values), values, -1), axis=1) >= fraction)


def overfitting_visible(data: RunData, patience: int = 3, rise: float = 0.05) -> int | None:
    """The first evaluation at least `patience` evaluations after the lowest validation loss where
    the validation loss is `rise` (5%, Prechelt's GL_5) or more above that minimum."""
    table = evaluation_table(data)
    val = table["val_loss"].to_numpy(dtype=float)
    if len(val) < patience + 1 or not np.isfinite(val).any():
        return None
    best = int(np.nanargmin(val))
    after = np.arange(len(val)) >= best + patience
    return _first(table.index.to_numpy(), after & (val >= (1 + rise) * val[best]))


def underfitting_visible(data: RunData, evaluations: int = 3) -> int | None:
    """The `evaluations`-th evaluation: the first point where "the loss has stayed flat for a few
    evaluations" can be read off the curve."""
    table = evaluation_table(data)
    if len(table) < evaluations:
        return None
    return int(table.index[evaluations - 1])


def _median_update_ratio(data: RunData) -> tuple[np.ndarray, np.ndarray]:
    ratios = data.views.update_ratio
    layers = [layer for layer in data.weighted_layers if layer in ratios.columns] or list(ratios.columns)
    positive = ratios[layers].where(ratios[layers] > 0)
    return ratios.index.to_numpy(), positive.median(axis=1, skipna=True).to_numpy(dtype=float)


def lr_high_visible(data: RunData, ratio: float = 1e-2) -> int | None:
    """First logged step where the median update-to-weight ratio exceeds `ratio` (10x Karpathy's 1e-3)."""
    steps, median = _median_update_ratio(data)
    return _first(steps, np.isfinite(median) & (median > ratio))


def lr_low_visible(data: RunData, ratio: float = 1e-5) -> int | None:
    """First logged step where the median update-to-weight ratio is below `ratio` (100x under 1e-3)."""
    steps, median = _median_update_ratio(data)
    return _first(steps, np.isfinite(median) & (median < ratio))


def learning_rate_visible(data: RunData) -> int | None:
    """Whichever of too high / too low shows first."""
    found = [s for s in (lr_high_visible(data), lr_low_visible(data)) if s is not None]
    return min(found) if found else None


def loss_divergence_visible(data: RunData, factor: float = 1.5) -> int | None:
    """First step where the training loss is `factor` x its first value or NaN/Inf."""
    loss = data.scalar("train_loss")
    if not len(loss):
        return None
    values = loss.to_numpy(dtype=float)
    return _first(loss.index.to_numpy(), ~np.isfinite(values) | (values > factor * values[0]))


ORACLES = {
    "loss_divergence": loss_divergence_visible,
    "vanishing_gradient": vanishing_visible,
    "exploding_gradient": exploding_visible,
    "nonfinite": nonfinite_visible,
    "dead_units": dead_visible,
    "saturated_units": saturated_visible,
    "overfitting": overfitting_visible,
    "underfitting": underfitting_visible,
    "learning_rate": learning_rate_visible,
}

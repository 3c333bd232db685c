"""Every-step per-parameter gradient norms as the reader hands them to the diagnosis (torch-free).

The capture measures each parameter's gradient norm at every optimizer step (logged or not); the run
folder keeps exact rows for recent steps and around anomalies and min/max downsampled rows elsewhere.
`StepNorms` is that table: rows are steps (or blocks of steps), columns are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StepNorms:
    """steps: int64 [n] ascending step numbers (same numbering as stats/scalars).
    names: parameter names ('encoder.fc1.weight'), forward order; layers: each name's layer (module path).
    norm_max: float64 [n, len(names)] the gradient's L2 norm at that step; on a downsampled row the max
        over the block of steps it covers; NaN = no gradient that step.
    norm_min: equal to norm_max on exact rows; the block min on downsampled rows.
    nonfinite: int64 [n, len(names)] steps in the row whose gradient held NaN/Inf (0/1 on exact rows).
    span: int64 [n] 1 = one exact step; k > 1 = a downsampled row covering the k steps ending at steps[i].
    """

    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    names: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    norm_max: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    norm_min: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    nonfinite: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    span: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self):
        n, k = len(self.steps), len(self.names)
        if len(self.layers) != k:
            raise ValueError(f"StepNorms: {k} names but {len(self.layers)} layers")
        for label in ("norm_max", "norm_min", "nonfinite"):
            shape = np.shape(getattr(self, label))
            if n and shape != (n, k):
                raise ValueError(f"StepNorms: {label} has shape {shape}, expected {(n, k)}")
        if len(self.span) != n:
            raise ValueError(f"StepNorms: span has {len(self.span)} rows, expected {n}")

    @classmethod
    def exact_rows(cls, steps, names, layers, norms, nonfinite=None) -> StepNorms:
        """Exact single-step rows (span 1) from a [n, len(names)] norm table."""
        norms = np.asarray(norms, dtype=float).reshape(len(steps), len(names))
        bad = (~np.isfinite(norms) & ~np.isnan(norms)).astype(np.int64) if nonfinite is None else nonfinite
        return cls(np.asarray(steps, dtype=np.int64), tuple(names), tuple(layers), norms, norms.copy(),
                   np.asarray(bad, dtype=np.int64), np.ones(len(steps), dtype=np.int64))

    @property
    def empty(self) -> bool:
        return len(self.steps) == 0 or len(self.names) == 0

    def exact(self) -> StepNorms:
        """Only the span == 1 rows."""
        keep = np.asarray(self.span) == 1
        return StepNorms(np.asarray(self.steps)[keep], self.names, self.layers, np.asarray(self.norm_max)[keep],
                         np.asarray(self.norm_min)[keep], np.asarray(self.nonfinite)[keep],
                         np.asarray(self.span)[keep])

    def layer_norms(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Per layer (first-seen order): sqrt(sum of its parameters' squared norms) on norm_max.
        NaN only where none of the layer's parameters had a gradient that step."""
        order = tuple(dict.fromkeys(self.layers))
        out = np.full((len(self.steps), len(order)), np.nan)
        values = np.asarray(self.norm_max, dtype=float)
        for j, layer in enumerate(order):
            cols = [i for i, name in enumerate(self.layers) if name == layer]
            block = values[:, cols]
            seen = ~np.isnan(block).all(axis=1)
            with np.errstate(over="ignore", invalid="ignore"):
                out[seen, j] = np.sqrt(np.nansum(block[seen] ** 2, axis=1))
        return order, out

    def total(self) -> np.ndarray:
        """Total gradient norm per row (sqrt of the sum of squares over all parameters) on norm_max."""
        values = np.asarray(self.norm_max, dtype=float)
        if not values.size:
            return np.full(len(self.steps), np.nan)
        seen = ~np.isnan(values).all(axis=1)
        out = np.full(len(self.steps), np.nan)
        with np.errstate(over="ignore", invalid="ignore"):
            out[seen] = np.sqrt(np.nansum(values[seen] ** 2, axis=1))
        return out

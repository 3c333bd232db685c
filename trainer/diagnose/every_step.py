"""Reading the every-step per-layer gradient norms (StepNorms): when a surge began and where.

Statistics rows exist only at logged steps (every=10: steps 0, 10, 20...). An explosion at step 6 is
seen there, if at all, through step 10, when other layers may already carry the surge. The capture's
every-step norms date it to its own step and name the layers that surged at that step.

Robust statistics: a step's level is the median of the previous `window` finite, non-zero values
(log scale), its spread the MAD of their logs; a surge is a value at least `factor` x that level
and `min_z` robust deviations above it - one noisy batch in a jittery run is not a surge. A layer
surged at a step when its own norm is at least `layer_factor` x its own level there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..runlog.step_norms import StepNorms

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample x 1.4826 = its standard deviation


@dataclass
class StepSurge:
    """The first surge of the total gradient norm in the every-step series."""

    step: int  # the first step of the surge (a downsampled row: the last step of its block)
    ratio: float  # total norm there / its running level
    level: float  # the running level (median of the values before)
    layers: list[str]  # layers whose own norm surged at that step, forward order
    layer_ratios: dict[str, float] = field(default_factory=dict)  # layer -> own norm / own level at `step`
    moved_first: list[str] = field(default_factory=list)  # the layer(s) whose surge began earliest
    first_layer_steps: dict[str, int] = field(default_factory=dict)  # layer -> first surging step (from `step` on)
    peak_step: int = 0
    peak_ratio: float = math.nan
    nonfinite_step: int | None = None  # first step whose gradient held NaN/Inf (any parameter)
    exact: bool = True  # the surge row is one exact step (not a downsampled block)

    def to_evidence(self) -> dict:
        return {
            "every_step_onset": self.step, "every_step_ratio": self.ratio, "every_step_peak_step": self.peak_step,
            "every_step_peak_ratio": self.peak_ratio, "every_step_exact": int(self.exact),
        }


def robust_level(logs: np.ndarray, window: int, min_history: int) -> tuple[np.ndarray, np.ndarray]:
    """For each point: median and MAD-sigma of the previous `window` finite log values (NaN without
    `min_history` of them)."""
    n = len(logs)
    level = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    history: list[float] = []
    for i in range(n):
        if len(history) >= min_history:
            recent = np.asarray(history[-window:])
            med = float(np.median(recent))
            level[i] = med
            spread[i] = MAD_TO_SIGMA * float(np.median(np.abs(recent - med)))
        if np.isfinite(logs[i]):
            history.append(float(logs[i]))
    return level, spread


def surge_mask(values: np.ndarray, factor: float, min_z: float, window: int, min_history: int,
               floor_decades: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Boolean surges and value/level ratios of one positive series (zeros and NaN carry no level)."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(np.isfinite(values) & (values > 0), np.log10(values), np.nan)
    level, spread = robust_level(logs, window, min_history)
    excess = logs - level
    with np.errstate(invalid="ignore"):
        z = excess / np.fmax(spread, floor_decades)
        mask = np.isfinite(excess) & (excess >= math.log10(factor)) & (z >= min_z)
    return mask, np.power(10.0, excess)


def first_surge(norms: StepNorms, *, factor: float = 20.0, min_z: float = 3.0, layer_factor: float = 10.0,
                window: int = 20, min_history: int = 3, after_step: int | None = None) -> StepSurge | None:
    """The first every-step surge of the total gradient norm (at or after `after_step`), with the
    layers that surged at that step; None when the series holds none (or is empty)."""
    if norms is None or norms.empty:
        return None
    steps = np.asarray(norms.steps, dtype=np.int64)
    total = norms.total()
    mask, ratio = surge_mask(total, factor, min_z, window, min_history)
    if after_step is not None:
        mask &= steps >= after_step
    bad_rows = np.flatnonzero(np.asarray(norms.nonfinite).sum(axis=1) > 0) if np.size(norms.nonfinite) else []
    nonfinite_step = int(steps[bad_rows[0]]) if len(bad_rows) else None
    hits = np.flatnonzero(mask)
    if not len(hits):
        return None
    i = int(hits[0])
    layer_names, per_layer = norms.layer_norms()
    layer_ratio = np.full(per_layer.shape, np.nan)
    layer_mask = np.zeros(per_layer.shape, dtype=bool)
    for j in range(per_layer.shape[1]):
        layer_mask[:, j], layer_ratio[:, j] = surge_mask(per_layer[:, j], layer_factor, 3.0, window, min_history)
    surged = [layer for j, layer in enumerate(layer_names) if layer_mask[i, j]]
    ratios = {layer: float(layer_ratio[i, j]) for j, layer in enumerate(layer_names)
              if np.isfinite(layer_ratio[i, j])}
    # Which layer moved first: each layer's first surging row from a few rows before the total surged
    # (a layer can lead the total by a step or two while the others still dominate the sum).
    lead_from = max(0, i - 3)
    first_rows = {}
    for j, layer in enumerate(layer_names):
        rows = np.flatnonzero(layer_mask[lead_from:, j])
        if len(rows):
            first_rows[layer] = lead_from + int(rows[0])
    earliest = min(first_rows.values()) if first_rows else i
    moved_first = [layer for layer in layer_names if first_rows.get(layer) == earliest]
    after = np.arange(len(steps)) >= i
    finite_ratio = np.where(after & np.isfinite(ratio), ratio, np.nan)
    peak = int(np.nanargmax(finite_ratio)) if np.isfinite(finite_ratio).any() else i
    return StepSurge(
        step=int(steps[i]), ratio=float(ratio[i]), level=float(total[i] / ratio[i]) if ratio[i] else math.nan,
        layers=surged, layer_ratios=ratios, moved_first=moved_first,
        first_layer_steps={layer: int(steps[r]) for layer, r in first_rows.items()},
        peak_step=int(steps[peak]), peak_ratio=float(ratio[peak]), nonfinite_step=nonfinite_step,
        exact=bool(np.asarray(norms.span)[i] == 1),
    )


def surge_between(norms: StepNorms, start: int, end: int, **kwargs) -> StepSurge | None:
    """The first surge in steps start..end (a loss blow-up seen at logged step `end`, the previous
    logged step being `start`): dates a divergence that an averaged or sparse loss hides."""
    surge = first_surge(norms, after_step=start, **kwargs)
    if surge is None or surge.step > end:
        return None
    return surge


def all_zero_steps(norms: StepNorms) -> tuple[np.ndarray, np.ndarray]:
    """(steps, bool per row): rows where every parameter that had a gradient had exactly norm 0."""
    if norms is None or norms.empty:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    values = np.asarray(norms.norm_max, dtype=float)
    seen = ~np.isnan(values)
    zero = seen.any(axis=1) & np.all(np.where(seen, values == 0, True), axis=1)
    return np.asarray(norms.steps, dtype=np.int64), zero

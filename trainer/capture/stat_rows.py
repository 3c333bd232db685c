"""The one finishing step of capture: partial-moment blocks -> the schema's statistics rows.

Every producer of statistics - the flat device buffer and the CPU host path (multi_tensor.py),
activation outputs measured per call (activation_stats.py) and local shards combined across ranks
(sharded.py) - hands over the same block per tensor: element count, sum, M2 (the sum of squared
deviations from the mean), sum of squares, min, max, NaN and Inf counts, the zero fraction of the
histogram sample and the few statistics only some tensors have (update ratio, saturated and dead
fractions; NaN where they do not apply). `finish_rows` alone turns blocks into rows, on the
writer thread, so a statistic derived from the moments is one StatField row in schema.py and one
line here (docs/log-format.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..runlog import schema


@dataclass
class MomentBlock:
    """Arrays of one length (one entry per tensor), float64."""

    count: np.ndarray
    total: np.ndarray  # sum of the elements
    m2: np.ndarray  # sum of squared deviations from the mean (not from the sum of squares: it cancels)
    sumsq: np.ndarray  # sum of squares (kept apart: +-Inf gives an infinite norm, not NaN)
    lo: np.ndarray
    hi: np.ndarray
    nan: np.ndarray
    inf: np.ndarray
    zero_frac: np.ndarray
    update_ratio: np.ndarray
    saturated_frac: np.ndarray
    dead_frac: np.ndarray

    @classmethod
    def empty(cls, n: int) -> MomentBlock:
        """n tensors with nothing measured yet: every entry NaN."""
        return cls(*(np.full(n, np.nan) for _ in fields(cls)))


def finish_rows(block: MomentBlock) -> np.ndarray:
    """[T, len(STAT_FIELDS)] float64 rows in the schema's field order; NaN where a statistic does
    not apply (stored as NULL). An empty tensor (count 0) reads norm, mean, std 0."""
    n = np.maximum(block.count, 1.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        spread = np.sqrt(np.maximum(block.m2, 0.0) / (n - 1))
        std = np.where(block.count <= 1, 0.0, np.where(np.isfinite(spread), spread, np.nan))
        columns = {
            "norm": np.sqrt(np.maximum(block.sumsq, 0.0)),
            "mean": block.total / n,
            "std": std,
            "min": block.lo,
            "max": block.hi,
            "nan_count": block.nan,
            "inf_count": block.inf,
            "zero_frac": block.zero_frac,
            "update_ratio": block.update_ratio,
            "saturated_frac": block.saturated_frac,
            "dead_frac": block.dead_frac,
        }
    missing = np.full(len(block.count), np.nan)
    return np.stack([np.asarray(columns.get(name, missing), dtype=np.float64) for name in schema.STAT_FIELDS], axis=1)

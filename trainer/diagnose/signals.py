"""Small numeric tests shared by the rules: "sustained", running levels, trends. numpy only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# One-sided critical values of Student's t (confidence -> {degrees of freedom: t}); between table
# rows the smaller df is used, which errs towards not flagging.
_T_TABLE = {
    0.95: {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833,
           10: 1.812, 12: 1.782, 15: 1.753, 20: 1.725, 25: 1.708, 30: 1.697, 40: 1.684, 60: 1.671,
           120: 1.658},
    0.99: {1: 31.821, 2: 6.965, 3: 4.541, 4: 3.747, 5: 3.365, 6: 3.143, 7: 2.998, 8: 2.896, 9: 2.821,
           10: 2.764, 12: 2.681, 15: 2.602, 20: 2.528, 25: 2.485, 30: 2.457, 40: 2.423, 60: 2.390,
           120: 2.358},
}
_T_INFINITY = {0.95: 1.645, 0.99: 2.326}


def t_critical(df: int, confidence: float = 0.95) -> float:
    """One-sided critical t for `df` degrees of freedom at 0.95 or 0.99 confidence."""
    if confidence not in _T_TABLE:
        raise ValueError(f"confidence must be one of {sorted(_T_TABLE)}, got {confidence}")
    if df < 1:
        return math.inf
    table = _T_TABLE[confidence]
    if df > max(table):
        return _T_INFINITY[confidence]
    return table[max(k for k in table if k <= df)]


def sustained_onsets(mask: np.ndarray, window: int, min_fraction: float) -> np.ndarray:
    """For each column of a (steps x columns) boolean mask: the first row i where the condition
    holds at row i and in at least `min_fraction` of rows i .. i+window-1; -1 where never.

    "Sustained" therefore needs `window` logged steps after the onset: one odd step never counts,
    and a short gap inside a long stretch does not break it.
    """
    mask = np.asarray(mask, dtype=bool)
    squeeze = mask.ndim == 1
    if squeeze:
        mask = mask[:, None]
    n, columns = mask.shape
    onsets = np.full(columns, -1, dtype=np.int64)
    if n < window or window < 1:
        return onsets[0:1] if squeeze else onsets
    cumulative = np.vstack([np.zeros((1, columns), dtype=np.int64), np.cumsum(mask, axis=0)])
    in_window = cumulative[window:] - cumulative[:-window]  # row i: count in rows i .. i+window-1
    needed = math.ceil(min_fraction * window - 1e-9)
    ok = (in_window >= needed) & mask[: n - window + 1]
    has = ok.any(axis=0)
    onsets[has] = ok.argmax(axis=0)[has]
    return onsets[0:1] if squeeze else onsets


def sustained_onset(mask: np.ndarray, window: int, min_fraction: float) -> int | None:
    """sustained_onsets for one series: the onset row, or None."""
    onset = int(sustained_onsets(np.asarray(mask, dtype=bool).ravel(), window, min_fraction)[0])
    return None if onset < 0 else onset


def last_true(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[-1]) if len(hits) else None


def trailing_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of each value and the window-1 before it (NaN ignored; NaN until half a window seen)."""
    series = pd.Series(np.asarray(values, dtype=float))
    return series.rolling(window, min_periods=window // 2 + 1).median().to_numpy()


def running_level(values: np.ndarray, window: int, min_history: int) -> np.ndarray:
    """Median of the `window` values before each value (not including it); NaN without
    `min_history` finite values before it."""
    series = pd.Series(np.asarray(values, dtype=float))
    return series.rolling(window, min_periods=min_history).median().shift(1).to_numpy()


def linear_trend(y: np.ndarray, x: np.ndarray | None = None) -> dict:
    """Least-squares line through (x, y): slope, intercept, standard error and t of the slope."""
    y = np.asarray(y, dtype=float)
    x = np.arange(len(y), dtype=float) if x is None else np.asarray(x, dtype=float)
    n = len(y)
    if n < 2:
        return {"slope": 0.0, "intercept": float(y[0]) if n else math.nan, "se": math.inf, "t": 0.0, "n": n}
    x_mean, y_mean = x.mean(), y.mean()
    sxx = float(((x - x_mean) ** 2).sum())
    if sxx == 0:
        return {"slope": 0.0, "intercept": y_mean, "se": math.inf, "t": 0.0, "n": n}
    slope = float(((x - x_mean) * (y - y_mean)).sum() / sxx)
    intercept = float(y_mean - slope * x_mean)
    if n < 3:
        return {"slope": slope, "intercept": intercept, "se": math.inf, "t": 0.0, "n": n}
    residual = y - (intercept + slope * x)
    variance = float((residual**2).sum()) / (n - 2)
    se = math.sqrt(variance / sxx)
    if se == 0:
        t = math.inf if slope > 0 else (-math.inf if slope < 0 else 0.0)
    else:
        t = slope / se
    return {"slope": slope, "intercept": intercept, "se": se, "t": t, "n": n}


def safe_log10(values) -> np.ndarray:
    """log10 with zeros, negatives and non-finite values as NaN."""
    values = np.asarray(values, dtype=float)
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values) & (values > 0)
    out[ok] = np.log10(values[ok])
    return out


def finite_median(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan

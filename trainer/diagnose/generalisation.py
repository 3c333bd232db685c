"""Loss-curve rules: overfitting (validation loss turns up) and underfitting (losses stay high).

Both work on one row per evaluation: the trainer logs val_loss (and epoch, val_acc, train_acc,
epoch_train_loss) at the step of each epoch's last optimizer step. Without epoch_train_loss the
training loss of an epoch is the mean of the per-step train_loss since the previous evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import RunData
from .flags import Flag, fmt
from .rule import Rule
from .signals import linear_trend, t_critical


def evaluation_table(data: RunData) -> pd.DataFrame:
    """One row per evaluation (index: step): val_loss, train_loss, and epoch, val_acc, train_acc
    where logged. Empty without val_loss."""
    val = data.scalar("val_loss")
    if not len(val):
        return pd.DataFrame(columns=["val_loss", "train_loss"], index=pd.Index([], dtype=np.int64, name="step"))
    table = pd.DataFrame({"val_loss": val})
    table["train_loss"] = epoch_train_loss(data, val.index.to_numpy(dtype=np.int64))
    for name in ("epoch", "val_acc", "train_acc"):
        series = data.scalar(name)
        if len(series):
            table[name] = series.reindex(table.index)
    return table


def epoch_train_loss(data: RunData, eval_steps: np.ndarray) -> np.ndarray:
    """Training loss per evaluation: epoch_train_loss at that step, else the mean per-step
    train_loss over (previous evaluation, this evaluation]."""
    logged = data.scalar("epoch_train_loss")
    out = np.full(len(eval_steps), np.nan)
    if len(logged):
        out = logged.reindex(eval_steps).to_numpy(dtype=float)
    missing = ~np.isfinite(out)
    per_step = data.scalar("train_loss")
    if missing.any() and len(per_step):
        bucket = np.searchsorted(eval_steps, per_step.index.to_numpy(dtype=np.int64), side="left")
        values = per_step.to_numpy(dtype=float)
        keep = (bucket < len(eval_steps)) & np.isfinite(values)
        sums = np.bincount(bucket[keep], weights=values[keep], minlength=len(eval_steps))
        counts = np.bincount(bucket[keep], minlength=len(eval_steps))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        out = np.where(missing, means, out)
    return out


def _as_series(values, what: str) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.astype(float)
    if isinstance(values, (Sequence, np.ndarray)):
        return pd.Series(np.asarray(values, dtype=float))
    raise TypeError(f"{what} must be a pandas Series, a list or a numpy array, got {type(values).__name__}")


def overfitting_onset(
    val_loss_series,
    train_loss_series,
    *,
    patience: int = 3,
    gl_threshold: float = 5.0,
    confidence: float = 0.99,
    noise_factor: float = 3.0,
    confirmations: int = 2,
    decisive_factor: float = 2.0,
) -> dict | None:
    """Where validation loss turned up while training loss kept falling, or None.

    Inputs: one value per evaluation, as lists/arrays (positions are reported as steps) or pandas
    Series indexed by step (aligned on the index). Pairs with a non-finite value are ignored.

    Overfitting when all of these hold, counting from the evaluation with the lowest validation
    loss (the best one, reported as the onset):
    - at least `patience` evaluations came after it (Prechelt's UP_s idea: a rise over successive
      evaluations, not one bad evaluation);
    - the generalisation loss GL = 100 * (val_last / val_min - 1) is at least `gl_threshold`
      (Prechelt 1998, "Early stopping - but when?", criterion GL_alpha; alpha = 5 is mid-range);
    - the validation losses after the best one rise as a trend: least-squares slope positive by a
      one-sided t test at `confidence`, and the fitted rise from the best evaluation to the last is
      at least `gl_threshold` percent and at least `noise_factor` x the curve's noise (estimated
      robustly from second differences of the whole validation curve) - a noisy flat curve's
      minimum is only a lucky draw. A decisive rise passes without the t test: a fitted rise of at
      least `decisive_factor` x `noise_factor` x the noise (6 sigma) with GL at least
      `decisive_factor` x `gl_threshold` (10%). With three or four evaluations after the best one the
      t test has one or two degrees of freedom and needs t >= 7 to 32 at 0.99, so a steep, clear
      rise would otherwise wait for more evaluations;
    - the training loss at the last evaluation is below its value at the best one;
    - all of the above also held one evaluation earlier (`confirmations` = 2 consecutive
      evaluations), which keeps a trainer that asks after every epoch from acting on one noisy
      evaluation.
    Defaults were chosen on simulated curves: a flat validation loss with 4% noise is flagged at
    some epoch in under 2% of 40-epoch runs, a U-shaped one about 6 epochs after its minimum.

    Returns best_index, best_step (the onset: val loss minimal), rising_since_step, last_step,
    val/train losses at the best and last evaluations, gl, gap_at_best / gap_last (val - train),
    slope_per_eval, t_stat, trend_rise_pct, noise_sigma, evaluations_after_best and decisive_rise
    (true when the rise passed as decisive rather than by the t test).
    """
    if patience < 1:
        raise ValueError(f"patience must be at least 1 evaluation, got {patience}")
    if confirmations < 1:
        raise ValueError(f"confirmations must be at least 1, got {confirmations}")
    val = _as_series(val_loss_series, "val_loss_series")
    train = _as_series(train_loss_series, "train_loss_series")
    if isinstance(val_loss_series, pd.Series) and isinstance(train_loss_series, pd.Series):
        val, train = val.align(train, join="inner")
    elif len(val) != len(train):
        raise ValueError(f"val and train loss series differ in length: {len(val)} vs {len(train)}")
    else:
        train.index = val.index
    keep = np.isfinite(val.to_numpy()) & np.isfinite(train.to_numpy())
    steps = val.index.to_numpy()[keep]
    v = val.to_numpy(dtype=float)[keep]
    t = train.to_numpy(dtype=float)[keep]
    found = None
    for dropped in range(confirmations):
        end = len(v) - dropped
        result = _rising_after_best(v[:end], t[:end], patience, gl_threshold, confidence, noise_factor,
                                    decisive_factor)
        if result is None:
            return None
        found = found or result
    best, after, gl, trend, rise, sigma, decisive = found
    return {
        "best_index": best,
        "best_step": _plain_step(steps[best]),
        "onset_step": _plain_step(steps[best]),
        "rising_since_step": _plain_step(steps[best + 1]),
        "last_step": _plain_step(steps[-1]),
        "best_val_loss": float(v[best]),
        "last_val_loss": float(v[-1]),
        "train_loss_at_best": float(t[best]),
        "last_train_loss": float(t[-1]),
        "gl": float(gl),
        "gap_at_best": float(v[best] - t[best]),
        "gap_last": float(v[-1] - t[-1]),
        "slope_per_eval": float(trend["slope"]),
        "t_stat": float(trend["t"]),
        "trend_rise_pct": float(rise),
        "noise_sigma": float(sigma),
        "evaluations_after_best": int(after),
        "decisive_rise": bool(decisive),
    }


def _rising_after_best(v, t, patience, gl_threshold, confidence, noise_factor, decisive_factor):
    """The overfitting tests on one curve: (best, after, gl, trend, rise %, noise, decisive) or None."""
    n = len(v)
    if n < patience + 1:
        return None
    best = int(np.argmin(v))
    after = n - best - 1
    if after < patience or v[best] <= 0:
        return None
    gl = 100.0 * (v[-1] / v[best] - 1.0)
    if gl < gl_threshold or not t[-1] < t[best]:
        return None
    trend = linear_trend(v[best + 1:], np.arange(best + 1, n, dtype=float))
    fitted_best = trend["intercept"] + trend["slope"] * best
    fitted_last = trend["intercept"] + trend["slope"] * (n - 1)
    rise = 100.0 * (fitted_last / fitted_best - 1.0) if fitted_best > 0 else math.inf
    sigma = noise_level(v)
    if rise < gl_threshold or fitted_last - fitted_best < noise_factor * sigma:
        return None
    significant = trend["t"] >= t_critical(after - 2, confidence)
    decisive = (
        trend["slope"] > 0 and gl >= decisive_factor * gl_threshold
        and fitted_last - fitted_best >= decisive_factor * noise_factor * sigma
    )
    if not (significant or decisive):
        return None
    return best, after, gl, trend, rise, sigma, decisive and not significant


def noise_level(values: np.ndarray) -> float:
    """Standard deviation of a curve's evaluation-to-evaluation noise, robust to smooth trends:
    MAD of second differences (each has variance 6 sigma^2 for white noise). inf with under 5 points."""
    second = np.diff(np.asarray(values, dtype=float), 2)
    if len(second) < 3:
        return math.inf
    mad = float(np.median(np.abs(second - np.median(second))))
    return mad / 0.6745 / math.sqrt(6)


def _plain_step(step):
    return int(step) if isinstance(step, (int, np.integer)) or float(step).is_integer() else step


@dataclass
class Overfitting(Rule):
    """Validation loss rising for several evaluations while training loss keeps falling.

    Thresholds (see overfitting_onset): `patience` (3) evaluations after the best one, Prechelt's
    generalisation loss GL >= `gl_threshold` (5%; Prechelt 1998, "Early stopping - but when?"),
    a rising trend significant at `confidence` (0.99, one-sided t test) whose fitted rise reaches
    `gl_threshold` and `noise_factor` (3) x the curve's noise - or a decisive rise (`decisive_factor`
    (2) x both: GL >= 10% and 6 x the noise) without the t test - confirmed at `confirmations` (2)
    consecutive evaluations. SageMaker Debugger's Overfit rule compares validation and training loss
    in the same spirit (ratio_threshold 0.1 with patience).
    """

    rule = "overfitting"
    title = "Overfitting"

    patience: int = 3
    gl_threshold: float = 5.0
    confidence: float = 0.99
    noise_factor: float = 3.0
    confirmations: int = 2
    decisive_factor: float = 2.0

    def skip_reason(self, data: RunData) -> str | None:
        if not data.has_scalar("val_loss"):
            return "no val_loss logged"
        if not (data.has_scalar("train_loss") or data.has_scalar("epoch_train_loss")):
            return "no training loss logged"
        return None

    def check(self, data: RunData) -> list[Flag]:
        table = evaluation_table(data)
        onset = overfitting_onset(
            table["val_loss"], table["train_loss"],
            patience=self.patience, gl_threshold=self.gl_threshold, confidence=self.confidence,
            noise_factor=self.noise_factor, confirmations=self.confirmations, decisive_factor=self.decisive_factor,
        )
        if onset is None:
            return []
        best_step = onset["best_step"]
        epoch = table["epoch"].get(best_step) if "epoch" in table else None
        position = int(table.index.get_loc(best_step))
        best_epoch = _plain_step(epoch) if epoch is not None and np.isfinite(epoch) else position + 1
        evidence = {k: v for k, v in onset.items() if k not in ("best_step", "onset_step", "last_step")}
        evidence.update(best_epoch=best_epoch, onset_step=best_step, best_step=best_step,
                        decisive_rise=int(onset["decisive_rise"]))
        if "val_acc" in table and np.isfinite(table["val_acc"].get(best_step, np.nan)):
            evidence["val_acc_at_best"] = float(table["val_acc"][best_step])
        explanation = (
            f"Overfitting: validation loss was lowest at epoch {best_epoch} (step {best_step}, "
            f"{fmt(onset['best_val_loss'])}) and has risen over {onset['evaluations_after_best']} evaluations to "
            f"{fmt(onset['last_val_loss'])} (generalisation loss GL = {fmt(onset['gl'])}%) while training loss fell "
            f"from {fmt(onset['train_loss_at_best'])} to {fmt(onset['last_train_loss'])}; the gap between them grew "
            f"from {fmt(onset['gap_at_best'])} to {fmt(onset['gap_last'])}."
        )
        return [
            Flag(
                rule=self.rule,
                severity="warning",
                layers=[],
                first_step=int(best_step),
                last_step=int(onset["last_step"]),
                evidence=evidence,
                explanation=explanation,
                remedy_ids=["early-stopping", "dropout", "l2", "augment", "smaller", "l1"],
            )
        ]


def training_progress(data: RunData, min_points: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Training loss at successive evaluations (steps, values): per evaluation when val_loss or
    epoch_train_loss is logged, else the per-step train_loss averaged in ten equal blocks."""
    table = evaluation_table(data)
    if len(table) >= min_points and np.isfinite(table["train_loss"].to_numpy(dtype=float)).sum() >= min_points:
        values = table["train_loss"].to_numpy(dtype=float)
        keep = np.isfinite(values)
        return table.index.to_numpy(dtype=np.int64)[keep], values[keep]
    logged = data.scalar("epoch_train_loss").dropna()
    if len(logged) >= min_points:
        return logged.index.to_numpy(dtype=np.int64), logged.to_numpy(dtype=float)
    per_step = data.scalar("train_loss")
    per_step = per_step[np.isfinite(per_step.to_numpy(dtype=float))]
    if len(per_step) >= 10 * min_points:
        blocks = np.array_split(np.arange(len(per_step)), 10)
        values = per_step.to_numpy(dtype=float)
        steps = per_step.index.to_numpy(dtype=np.int64)
        return np.array([steps[b[-1]] for b in blocks]), np.array([values[b].mean() for b in blocks])
    return None


@dataclass
class Underfitting(Rule):
    """Training (and validation) loss high and flat: the model is not learning the task.

    After `min_evaluations` (3) evaluations the training loss is still between `progress_ratio`
    (0.9) x and 1 / `progress_ratio` x its initial value (median of the first `initial_points`
    per-step losses: the loss of the untrained network), it changed by less than `flat_tolerance`
    (5%) either way over the last `min_evaluations`, and the validation loss, when logged, is also at least `progress_ratio` x that
    initial value. SageMaker Debugger's LossNotDecreasing rule uses the same "not decreasing by a
    minimum percentage" idea. As evidence the loss is compared with ln(K), the loss of predicting
    uniform class priors for K classes (K from config num_classes or the last Linear layer).
    Nothing is judged before `min_steps` (100) optimizer steps: a network often sits on an initial
    plateau for a few dozen steps, and the evaluations of a tiny training set can be only a few steps
    apart, so three flat evaluations alone say little. A loss that rose above `diverged_factor` (1.5)
    x its initial value on the way is unstable, not weak: loss_divergence reports it and
    "raise the learning rate" would make it worse. Critical when the loss never left a uniform
    guess (>= `chance_fraction` x ln K and x the initial loss): no learning at all.
    """

    rule = "underfitting"
    title = "Underfitting"

    progress_ratio: float = 0.9
    min_evaluations: int = 3
    flat_tolerance: float = 0.05
    initial_points: int = 3
    min_steps: int = 100
    diverged_factor: float = 1.5
    chance_fraction: float = 0.95

    def skip_reason(self, data: RunData) -> str | None:
        if not (data.has_scalar("train_loss") or data.has_scalar("epoch_train_loss")):
            return "no training loss logged"
        return None

    def check(self, data: RunData) -> list[Flag]:
        progress = training_progress(data, self.min_evaluations)
        if progress is None:
            return []
        steps, values = progress
        if steps[-1] + 1 < self.min_steps:
            return []  # too little training to call a plateau: tiny epochs, or the initial plateau
        per_step = data.scalar("train_loss")
        per_step = per_step[np.isfinite(per_step.to_numpy(dtype=float))]
        if len(per_step) >= self.initial_points:
            initial = float(np.median(per_step.to_numpy(dtype=float)[: self.initial_points]))
        else:
            initial = float(values[0])
        current = float(values[-1])
        uniform = data.uniform_loss()
        # The untrained level: the first losses, or ln K when they started above it (an
        # overconfident initialisation that falls to chance and sits there has learned nothing).
        reference = min(initial, uniform) if uniform is not None and initial > 0 else initial
        if not (reference > 0 and current >= self.progress_ratio * reference):
            return []
        recent = values[-self.min_evaluations:]
        change = (recent[0] - recent[-1]) / abs(recent[0]) if recent[0] else 0.0
        if abs(change) >= self.flat_tolerance or current > max(initial, reference) / self.progress_ratio:
            return []  # still falling, or rising (diverging is not underfitting)
        per_step_values = per_step.to_numpy(dtype=float)
        if len(per_step_values) and float(np.nanmax(per_step_values)) > self.diverged_factor * initial:
            return []  # the loss blew up on the way: an unstable run (loss_divergence), not a weak one
        evidence = {
            "initial_train_loss": initial,
            "last_train_loss": current,
            "train_loss_ratio": current / initial,
            "recent_relative_change": float(change),
            "evaluations": int(len(values)),
        }
        val = data.scalar("val_loss").dropna()
        if len(val):
            last_val = float(val.iloc[-1])
            if last_val < self.progress_ratio * reference:
                return []
            evidence["last_val_loss"] = last_val
        classes = data.num_classes()
        # No learning at all: the loss never left the level of a uniform guess.
        at_chance = (uniform is not None and current >= self.chance_fraction * uniform
                     and current / reference >= self.chance_fraction)
        evidence["at_chance"] = int(at_chance)
        prior_text = ""
        if classes:
            prior = math.log(classes) if classes > 1 else math.log(2)
            evidence["uniform_prior_loss"] = prior
            evidence["num_classes"] = classes
            if current >= 0.9 * prior:
                prior_text = f", about the {fmt(prior)} of guessing uniform class priors (ln {max(classes, 2)})"
        explanation = (
            f"Underfitting: after {len(values)} evaluations the training loss is {fmt(current)}, "
            f"{fmt(100 * current / initial)}% of its initial {fmt(initial)}{prior_text}, and it changed by "
            f"{fmt(100 * change)}% over the last {len(recent)}"
            + (f"; validation loss is {fmt(evidence['last_val_loss'])}" if "last_val_loss" in evidence else "")
            + "."
        )
        return [
            Flag(
                rule=self.rule,
                severity="critical" if at_chance else "warning",
                layers=[],
                first_step=int(steps[0]),
                last_step=int(steps[-1]),
                evidence=evidence,
                explanation=explanation,
                remedy_ids=["higher-lr", "relu", "batchnorm", "init", "bigger", "less-regularisation"],
            )
        ]

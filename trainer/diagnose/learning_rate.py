"""Learning rate too high or too low, read from update-to-weight ratios."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import RunData
from .flags import Flag, fmt
from .rule import Rule
from .signals import finite_median, last_true, sustained_onset, sustained_onsets


@dataclass
class LearningRate(Rule):
    """Median update-to-weight ratio |delta W| / |W| across weighted layers, per logged step.

    Karpathy's rule of thumb ("A Recipe for Training Neural Networks"; CS231n): about 1e-3 is
    healthy. The rule flags the learning rate as
    - too high when the median is above `too_high` (1e-2) in at least `min_fraction` of `window`
      consecutive logged steps. That is a warning when the ratio is `severe_factor` (3) x higher
      still (unless the training loss fell by `learning_well` (30%) or more meanwhile and the ratio
      stayed below severe_factor^2 x too_high or clipping bounds the steps: the large steps work) or the training loss fell by less than 5% over that stretch, and info otherwise
      (adaptive optimisers run near 1e-2 early in training and still converge);
    - too low when the median is below `too_low` (1e-5) and no layer updates faster than
      10 x `too_low`, sustained the same way (SageMaker Debugger's WeightUpdateRatio uses an even
      lower small_threshold, 1e-8). Not flagged while the learning rate (the optimizer's own,
      recorded by the capture as opt_lr, else a logged `lr`) has been annealed to a tenth of its
      peak or less: a schedule that ends near zero is intended.
    """

    rule = "learning_rate"
    title = "Learning rate"
    needs_layer_stats = True

    too_high: float = 1e-2
    too_low: float = 1e-5
    severe_factor: float = 3.0
    learning_well: float = 0.3
    window: int = 10
    min_fraction: float = 0.8
    layer_too_high: float = 0.1

    def skip_reason(self, data: RunData) -> str | None:
        reason = super().skip_reason(data)
        if reason is None and data.views.update_ratio.empty:
            reason = "no update-to-weight ratios recorded"
        return reason

    def check(self, data: RunData) -> list[Flag]:
        ratios = data.views.update_ratio
        layers = [layer for layer in data.weighted_layers if layer in ratios.columns] or list(ratios.columns)
        # Zero updates come from zero gradients (a batch already fitted exactly, a dead network),
        # not from the step size: they are left out.
        finite = ratios[layers].where(np.isfinite(ratios[layers]) & (ratios[layers] > 0))
        median = finite.median(axis=1, skipna=True).to_numpy(dtype=float)
        fastest = finite.max(axis=1, skipna=True).to_numpy(dtype=float)
        steps = ratios.index.to_numpy(dtype=np.int64)
        flags = []
        high = np.isfinite(median) & (median > self.too_high)
        onset = sustained_onset(high, self.window, self.min_fraction)
        if onset is not None:
            flags.append(self._too_high(data, steps, median, high, onset))
        else:
            # The median can hide one layer: each weighted layer is judged on its own too.
            layer_flag = self._layer_too_high(data, steps, finite, layers)
            if layer_flag is not None:
                flags.append(layer_flag)
        low = np.isfinite(median) & (median < self.too_low) & (fastest < 10 * self.too_low)
        onset = sustained_onset(low, self.window, self.min_fraction)
        if onset is not None and not self._annealed(data, int(steps[onset])):
            flags.append(self._too_low(data, steps, median, low, onset))
        return flags

    def _too_high(self, data, steps, median, high, onset) -> Flag:
        end = last_true(high)
        level = finite_median(median[onset: end + 1][high[onset: end + 1]])
        peak = self._sustained_peak(median[onset: end + 1])
        change = _loss_change(data, int(steps[onset]), int(steps[end]))
        # "Not improving" is judged from the stretch's first losses: a fast early drop inside its first
        # quarter is learning, not a stall.
        from_start = _loss_change(data, int(steps[onset]), int(steps[end]), from_start=True)
        # Severe when the ratio held severe_factor x too_high over a whole window at any point: a
        # long, milder tail must not average away a stretch of huge updates.
        severe = max(level, peak) >= self.severe_factor * self.too_high
        not_falling = change is not None and change > -0.05 and (from_start is None or from_start > -0.05)
        # A loss falling steeply meanwhile says the large steps work (SGD at lr 20 with clipping on
        # an LSTM language model, Adam's first steps on a transformer): info, not a warning.
        # Not for a burst far beyond severe (severe_factor^2 x too_high) unless clipping bounds each step.
        learning_well = change is not None and change <= -self.learning_well and (
            max(level, peak) < self.severe_factor**2 * self.too_high or data.clips_gradients())
        severity = "warning" if (severe and not learning_well) or not_falling else "info"
        evidence = {"median_update_ratio": level, "peak_update_ratio": max(level, peak), "too_high": self.too_high,
                    "direction": 1}
        if change is not None:
            evidence["train_loss_change"] = change
        lr = _current_lr(data)
        if lr is not None:
            evidence["lr"] = lr
        if change is None:
            loss_text = ""
        elif change <= -0.05:
            loss_text = f"; training loss fell by {fmt(-100 * change)}% meanwhile"
        else:
            loss_text = f"; training loss did not improve (changed by {fmt(100 * change)}%)"
        return Flag(
            rule=self.rule,
            severity=severity,
            layers=[],
            first_step=int(steps[onset]),
            last_step=int(steps[end]),
            evidence=evidence,
            explanation=(
                f"Learning rate looks too high: weights change by {fmt(level)} of their size per step (median over "
                f"layers, steps {steps[onset]}-{steps[end]}"
                + (f"; up to {fmt(peak)} over {self.window} logged steps" if peak >= 2 * level else "")
                + f"), above {fmt(self.too_high)}; about 1e-3 is healthy" + loss_text + "."
            ),
            remedy_ids=["lower-lr", "clipping", "batchnorm"],
        )

    def _layer_too_high(self, data, steps, finite: pd.DataFrame, layers: list[str]) -> Flag | None:
        values = finite.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            mask = np.isfinite(values) & (values > self.layer_too_high)
        onsets = sustained_onsets(mask, self.window, self.min_fraction)
        hit = [j for j in range(len(layers)) if onsets[j] >= 0]
        if not hit:
            return None
        start = int(min(onsets[j] for j in hit))
        end = max(last_true(mask[:, j]) for j in hit)
        per_layer = {layers[j]: finite_median(values[onsets[j]: end + 1, j]) for j in hit}
        change = _loss_change(data, int(steps[start]), int(steps[end]))
        learning_well = change is not None and change <= -self.learning_well
        names = list(per_layer)
        worst = max(per_layer.values())
        evidence = {"per_layer": per_layer, "peak_update_ratio": worst, "layer_too_high": self.layer_too_high,
                    "direction": 1}
        if change is not None:
            evidence["train_loss_change"] = change
        return Flag(
            rule=self.rule, severity="info" if learning_well else "warning", layers=names,
            first_step=int(steps[start]), last_step=int(steps[end]), evidence=evidence,
            explanation=(f"Learning rate looks too high for {', '.join(names)}: "
                         + ", ".join(f"{k} changes by {fmt(v)} of its weights per step" for k, v in per_layer.items())
                         + f" (steps {steps[start]}-{steps[end]}), above {fmt(self.layer_too_high)}, while the median "
                         "over layers looks normal; about 1e-3 is healthy."),
            remedy_ids=["lower-lr", "clipping", "batchnorm"],
        )

    def _too_low(self, data, steps, median, low, onset) -> Flag:
        end = last_true(low)
        level = finite_median(median[onset: end + 1][low[onset: end + 1]])
        evidence = {"median_update_ratio": level, "too_low": self.too_low, "direction": -1}
        lr = _current_lr(data)
        if lr is not None:
            evidence["lr"] = lr
        return Flag(
            rule=self.rule,
            severity="warning",
            layers=[],
            first_step=int(steps[onset]),
            last_step=int(steps[end]),
            evidence=evidence,
            explanation=(
                f"Learning rate looks too low: weights change by only {fmt(level)} of their size per step (median "
                f"over layers, steps {steps[onset]}-{steps[end]}), below {fmt(self.too_low)}; about 1e-3 is healthy."
            ),
            remedy_ids=["higher-lr", "batchnorm", "init"],
        )

    def _sustained_peak(self, median: np.ndarray) -> float:
        """The highest level the median ratio held over a window: the largest trailing-window median
        (at least `min_fraction` of the window finite); -inf for a stretch shorter than the window."""
        needed = max(1, math.ceil(self.min_fraction * self.window - 1e-9))
        rolling = pd.Series(median).rolling(self.window, min_periods=needed).median().to_numpy()
        return float(np.nanmax(rolling)) if np.isfinite(rolling).any() else -math.inf

    @staticmethod
    def _annealed(data: RunData, step: int) -> bool:
        lr = data.lr_series()
        if not len(lr):
            return False
        peak = float(lr.max())
        upto = lr[lr.index <= step]
        current = float(upto.iloc[-1]) if len(upto) else float(lr.iloc[0])
        return peak > 0 and current <= 0.1 * peak


def _current_lr(data: RunData) -> float | None:
    lr = data.lr_series()
    if len(lr):
        return float(lr.iloc[-1])
    value = data.config_value("lr", "learning_rate")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _loss_change(data: RunData, start: int, end: int, from_start: bool = False) -> float | None:
    """Relative change of the training loss from the first to the last quarter of steps start..end
    (from_start: from the median of its first three losses instead of its first quarter)."""
    loss = data.scalar("train_loss")
    window = loss[(loss.index >= start) & (loss.index <= end)].to_numpy(dtype=float)
    window = window[np.isfinite(window)]
    if len(window) < 4:
        return None
    quarter = max(1, len(window) // 4)
    first = np.median(window[: min(3, quarter)] if from_start else window[:quarter])
    last = np.median(window[-quarter:])
    return float((last - first) / abs(first)) if first else None

"""Loss divergence: the training loss itself blows up, climbs back, or ends worse than it began.

Gradient statistics are recorded every `every` steps, but users log the loss at every step; a run
that blows up between two logged steps (SGD at lr 20 on an LSTM, AdamW at lr 1.0 on a transformer)
shows it in the loss first. This rule reads the per-step training loss (and, as evidence, the
every-step gradient-norm sentinel when the capture wrote one), so a run of 10 logged steps at
every=10 is judged on its 100 loss values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..runlog.schema import SENTINEL_GRAD_NORM
from .data import RunData
from .every_step import surge_between
from .flags import Flag, fmt, layer_list
from .rule import Rule
from .signals import running_level, sustained_onset, trailing_median

LOSS_NAMES = ("train_loss", "loss")


def training_loss(data: RunData) -> pd.Series:
    """The per-step training loss (train_loss, else loss), finite or not, by step."""
    for name in LOSS_NAMES:
        series = data.scalar(name)
        if len(series):
            return series
    return data.scalar(LOSS_NAMES[0])


@dataclass
class LossDivergence(Rule):
    """The training loss diverges. Signals, each relative to the loss's own start (the median of
    its first `initial_points` values: the untrained model's loss):

    The initial loss is min(first value, median of the first `initial_points`).
    - blow-up: a value above `spike_factor` (3) x its running median over the previous
      `running_window` values AND above `above_start` (1.5) x the initial loss - a healthy run's
      loss almost never climbs above where it began;
    - worse than the start: the smoothed loss (trailing median of `smooth_window`) above
      `above_start` x the initial loss in `min_fraction` of `window` consecutive points;
    - climbing back: the smoothed loss at least `growth_factor` (2) x its lowest level so far and
      having given back at least `giveback` (half) of what it had learned (initial - lowest),
      sustained: a late divergence that has not yet passed the start.
    NaN/Inf losses are the nonfinite rule's; here they only confirm. Critical when the loss ends
    above its start or above `above_start` x ln K, the loss of a uniform guess over K classes or
    tokens when known (data.uniform_loss: the run has unlearned everything; a loss that starts above
    ln K - an overconfident initialisation - is not a divergence by itself), when it turned
    NaN/Inf, or when the blow-ups repeat; warning for a sustained rise or climb
    that has not (yet) ended worse than it began; info for one blow-up the loss recovered from.
    """

    rule = "loss_divergence"
    title = "Loss divergence"

    initial_points: int = 3
    spike_factor: float = 3.0
    above_start: float = 1.5
    running_window: int = 20
    min_history: int = 3
    smooth_window: int = 5
    window: int = 5
    min_fraction: float = 0.8
    growth_factor: float = 2.0
    giveback: float = 0.5
    min_points: int = 4
    learned_fraction: float = 0.9
    untrained_margin: float = 1.1

    def skip_reason(self, data: RunData) -> str | None:
        if not len(training_loss(data)):
            return "no training loss logged"
        return None

    def check(self, data: RunData) -> list[Flag]:
        loss = training_loss(data)
        values = loss.to_numpy(dtype=float)
        steps = loss.index.to_numpy(dtype=np.int64)
        finite_mask = np.isfinite(values)
        finite_idx = np.flatnonzero(finite_mask)
        if len(finite_idx) < self.min_points:
            return []
        # The first loss is the untrained model's; the median of the first few guards against a
        # noisy first batch, the minimum with the first against a blow-up within those few steps.
        initial = min(float(values[finite_idx[0]]), float(np.median(values[finite_idx[: self.initial_points]])))
        # The untrained level: a step-0 loss is the first value itself; when the first logged value
        # is not one (an average over logging_steps, or logged late) it may already hold the
        # blow-up, so the uniform guess ln K caps the baseline.
        untrained = data.untrained_loss(loss)
        if untrained is not None and untrained["source"] == "ln K":
            initial = min(initial, float(untrained["loss"]))
        if not initial > 0:
            return []
        clean = np.where(finite_mask, values, np.nan)
        window = min(self.window, max(2, len(finite_idx) // 3))  # a short run still needs 2+ points
        level = running_level(clean, self.running_window, self.min_history)
        with np.errstate(invalid="ignore"):
            spikes = finite_mask & np.isfinite(level) & (clean > self.spike_factor * level) & (
                clean > self.above_start * initial)
        smooth = trailing_median(clean, min(self.smooth_window, window))
        with np.errstate(invalid="ignore"):
            worse = np.isfinite(smooth) & (smooth > self.above_start * initial)
        worse_onset = sustained_onset(worse, window, self.min_fraction)
        uniform = data.uniform_loss()
        lowest = np.fmin.accumulate(np.where(np.isfinite(smooth), smooth, np.inf))
        with np.errstate(invalid="ignore"):
            climbing = (
                np.isfinite(smooth) & np.isfinite(lowest) & (smooth >= self.growth_factor * lowest)
                & (smooth - lowest >= self.giveback * (initial - lowest)) & (initial > lowest)
            )
        climb_onset = sustained_onset(climbing, window, self.min_fraction)
        if climb_onset is not None:
            # Report where the climb began (the last point near the lowest level), not where it
            # crossed the threshold.
            near_floor = np.flatnonzero(np.isfinite(smooth[:climb_onset]) & (smooth[:climb_onset] <= 1.1 * lowest[:climb_onset]))
            climb_onset = int(near_floor[-1]) if len(near_floor) else climb_onset

        # Worse than untrained: having learned (below `learned_fraction` x ln K), the smoothed loss
        # went back above ln K, sustained - the model now does worse than a uniform guess.
        # Or, never having learned, it sits `untrained_margin` above the untrained level (the step-0
        # loss, at least ln K): training made it worse than the initial weights.
        untrained_onset = None
        if uniform is not None and np.isfinite(lowest).any():
            floor = max(uniform, float(untrained["loss"]) if untrained is not None else uniform)
            with np.errstate(invalid="ignore"):
                learned = np.fmin.accumulate(np.where(np.isfinite(smooth), smooth, np.inf)) < self.learned_fraction * uniform
                climbed = np.isfinite(smooth) & (smooth > uniform) & learned
                above = np.isfinite(smooth) & (smooth > self.untrained_margin * floor)
            climbed_onset = sustained_onset(climbed, window, self.min_fraction)
            if climbed_onset is not None:
                # from where the climb began: the last point near the lowest level before it
                back = np.flatnonzero(np.isfinite(smooth[:climbed_onset])
                                      & (smooth[:climbed_onset] <= 1.1 * lowest[:climbed_onset]))
                climbed_onset = int(back[-1]) if len(back) else climbed_onset
            # A finding only when the loss ends there: an overconfident start that wobbles above ln K
            # and settles is not one.
            final_now = float(np.median(clean[finite_idx[-min(len(finite_idx), window):]]))
            above_onset = sustained_onset(above, window, self.min_fraction) if final_now > self.untrained_margin * floor else None
            climbed_onset = climbed_onset if final_now > uniform else None
            candidates = [i for i in (climbed_onset, above_onset) if i is not None]
            untrained_onset = min(candidates) if candidates else None
        onsets = [i for i in (worse_onset, climb_onset, untrained_onset) if i is not None]
        spike_idx = np.flatnonzero(spikes)
        if len(spike_idx):
            onsets.append(int(spike_idx[0]))
        if not onsets:
            return []
        first = min(onsets)
        tail = clean[finite_idx[-min(len(finite_idx), window):]]
        final = float(np.median(tail))
        lowest_value = float(np.nanmin(clean))
        peak = float(np.nanmax(clean))
        nonfinite_after = bool((~finite_mask[first:]).any())
        ends_worse = final > self.above_start * initial or (uniform is not None and final > self.above_start * uniform)
        worse_than_untrained = untrained_onset is not None and uniform is not None and final > uniform and (
            final > self.untrained_margin * max(uniform, float(untrained["loss"]) if untrained is not None else uniform)
            or lowest_value < self.learned_fraction * uniform)
        critical = ends_worse or nonfinite_after or len(spike_idx) >= 2 or worse_than_untrained
        # One blow-up the loss recovered from (a bad batch) is worth knowing, not a problem.
        sustained = worse_onset is not None or climb_onset is not None or untrained_onset is not None
        severity = "critical" if critical else ("warning" if sustained else "info")
        evidence = {
            "initial_loss": initial, "lowest_loss": lowest_value, "peak_loss": peak, "final_loss": final,
            "loss_spikes": int(len(spike_idx)), "max_spike_ratio": _max_ratio(clean, level, spikes),
            "ends_above_start": int(final > self.above_start * initial), "loss_nonfinite": int(nonfinite_after),
            "losses_seen": int(len(finite_idx)), "worse_than_untrained": int(worse_than_untrained),
        }
        if untrained is not None:
            evidence["untrained_loss"] = float(untrained["loss"])
        parts = []
        if len(spike_idx):
            parts.append(
                f"the training loss jumped to {fmt(float(clean[spike_idx[0]]))} at step {steps[spike_idx[0]]} "
                f"({fmt(evidence['max_spike_ratio'])}x its running level)"
                + (f" and blew up at {len(spike_idx) - 1} more steps" if len(spike_idx) > 1 else "")
            )
        parts.append(f"it went from {fmt(initial)} at the start to a peak of {fmt(peak)} and ends at {fmt(final)}")
        if uniform is not None:
            evidence["uniform_guess_loss"] = uniform
            if final > self.above_start * uniform or peak > self.above_start * uniform:
                parts.append(f"a uniform guess scores ln K = {fmt(uniform)}")
        if worse_than_untrained:
            parts.append(f"it ends worse than the untrained model: above a uniform guess's ln K = {fmt(uniform)} "
                         f"from step {steps[untrained_onset]}")
        if climb_onset is not None and worse_onset is None:
            parts.append(f"after falling to {fmt(lowest_value)} it climbed back from step {steps[climb_onset]}")
        if nonfinite_after:
            parts.append("then it became NaN/Inf")
        sentinel = data.scalar(SENTINEL_GRAD_NORM)
        grad = _gradient_rise(sentinel, int(steps[first])) if len(sentinel) else None
        if grad is not None:
            evidence["grad_norm_rise"] = grad
            parts.append(f"the gradient norm rose {fmt(grad)}x meanwhile")
        onset_step = int(steps[first])
        layers: list[str] = []
        # The loss is seen at logged (or averaged) points only; the every-step gradient norms date
        # the blow-up to its own step between the previous logged loss and this one.
        previous = int(steps[first - 1]) + 1 if first > 0 else (data.first_optimizer_step() or 0)
        surge = surge_between(data.step_norms, previous, onset_step) if not data.step_norms.empty else None
        if surge is not None and surge.step < onset_step:
            evidence.update(surge.to_evidence())
            layers = surge.layers
            parts.append(f"the every-step gradient norms date its start to step {surge.step} "
                         f"({fmt(surge.ratio)}x their running level"
                         + (f", in {layer_list(surge.layers)}" if surge.layers else "") + ")")
            onset_step = surge.step
        explanation = "The training loss diverges: " + "; ".join(parts) + "."
        last = int(steps[finite_idx[-1]]) if not nonfinite_after else int(steps[-1])
        return [
            Flag(
                rule=self.rule,
                severity=severity,
                layers=layers,
                first_step=onset_step,
                last_step=last,
                evidence=evidence,
                explanation=explanation,
                remedy_ids=_divergence_remedies(data),
            )
        ]


def _max_ratio(values: np.ndarray, level: np.ndarray, spikes: np.ndarray) -> float:
    if not spikes.any():
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmax(values[spikes] / level[spikes]))


def _gradient_rise(norms: pd.Series, step: int) -> float | None:
    """Peak every-step gradient norm from `step` on over its median before it."""
    values = norms.to_numpy(dtype=float)
    steps = norms.index.to_numpy(dtype=np.int64)
    before = values[(steps < step) & np.isfinite(values) & (values > 0)]
    after = values[(steps >= step) & np.isfinite(values)]
    if not len(before) or not len(after):
        return None
    return float(after.max() / np.median(before))


def _divergence_remedies(data: RunData) -> list[str]:
    remedies = ["lower-lr", "clipping"]
    if data.is_plain_rnn():
        remedies.append("lstm")
    return remedies + ["init"]

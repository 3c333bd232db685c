"""Gradient-flow rules: vanishing gradients (early layers starve) and exploding gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import derived
from ..runlog.schema import SENTINEL_GRAD_NORM
from .data import RunData
from .every_step import surge_between
from .flags import Flag, fmt, layer_list
from .rule import Rule
from .signals import (
    finite_median,
    last_true,
    linear_trend,
    running_level,
    safe_log10,
    sustained_onset,
    sustained_onsets,
    trailing_median,
)

SATURATING = ("sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign")
SATURATING_MODULES = ("Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Softsign", "RNN")


def _steps(frame: pd.DataFrame) -> np.ndarray:
    return frame.index.to_numpy(dtype=np.int64)


def max_saturation(data: RunData, start: int, end: int) -> tuple[float, str | None]:
    """Highest median saturated fraction among hidden sigmoid/tanh layers over steps start..end."""
    saturated = data.views.saturated
    if saturated.empty:
        return float("nan"), None
    types = data.module_types
    layers = [c for c in saturated.columns if not types.get(c) or types[c] in SATURATING_MODULES]
    layers = data.hidden_layers(layers)
    window = saturated.loc[(saturated.index >= start) & (saturated.index <= end), layers]
    if window.empty:
        return float("nan"), None
    medians = window.median()
    if medians.isna().all():
        return float("nan"), None
    return float(medians.max()), str(medians.idxmax())


@dataclass
class VanishingGradient(Rule):
    """Early layers' gradients are orders of magnitude below the last layer's, for many steps.

    At a logged step, an early weighted layer "vanishes" when its gradient norm is below
    `ratio_threshold` x the last weighted layer's AND below `norm_threshold` in absolute terms -
    AUTOTRAINER's test (Zhang et al., ICSE 2021: beta_1 = 1e-3 for |g_first| / |g_last|,
    beta_2 = 1e-4 for |g_first|). The rule fires when the first weighted layer vanishes in at least
    `min_fraction` of `window` consecutive logged steps (one odd step is not enough) and reports every
    early layer that vanishes the same sustained way.

    Supporting evidence, reported but not required: update-to-weight ratios of the early layers far
    below Karpathy's ~1e-3 rule of thumb (an adaptive optimiser such as Adam can keep them normal),
    and saturated sigmoid/tanh units (whose derivative is ~0 at the rails).
    """

    rule = "vanishing_gradient"
    title = "Vanishing gradients"
    needs_layer_stats = True

    ratio_threshold: float = 1e-3
    norm_threshold: float = 1e-4
    window: int = 5
    min_fraction: float = 0.8
    weights_collapsed: float = 0.1  # the first layer's weights at <= 1/10 of their initial norm

    def _weights_left(self, data: RunData, layer: str, start: int, end: int) -> float | None:
        """The first layer's weight norm over the flagged steps / its first recorded norm."""
        return _weight_ratio(data, layer, start, end)

    def skip_reason(self, data: RunData) -> str | None:
        reason = super().skip_reason(data)
        if reason is None and len(data.depth_layers) < 2:
            reason = "needs gradient norms of at least two weight matrices on the depth path (embeddings left out)"
        return reason

    def check(self, data: RunData) -> list[Flag]:
        layers = data.depth_layers
        grads = data.views.grad_norm[layers]
        norms = grads.to_numpy(dtype=float)
        steps = _steps(grads)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = norms / norms[:, -1:]
        # An exactly zero gradient is no signal at all (every unit feeding the layer is dead, or the
        # layer is cut off), not a signal that fades on its way back: dead_units reports the former.
        vanishing = (ratio < self.ratio_threshold) & (norms < self.norm_threshold) & (norms > 0)
        early = vanishing[:, :-1]
        onsets = sustained_onsets(early, self.window, self.min_fraction)
        if onsets[0] < 0:
            return []
        start = int(onsets[0])
        end = start + last_true(early[start:, 0])
        span = slice(start, end + 1)
        flagged = [layers[i] for i in range(len(layers) - 1) if onsets[i] >= 0]

        weights_left = self._weights_left(data, layers[0], int(steps[start]), int(steps[end]))
        if weights_left is not None and weights_left <= self.weights_collapsed:
            # Small gradients through weights that shrank to nothing: weight_collapse, not vanishing.
            return []
        per_layer = {layer: finite_median(norms[span, i]) for i, layer in enumerate(layers)}
        log_medians = safe_log10(list(per_layer.values()))
        ok = np.isfinite(log_medians)
        # Decades of gradient norm lost per layer towards the input (1.0: each layer 10x smaller).
        decades_per_layer = linear_trend(log_medians[ok], np.arange(len(layers))[ok])["slope"] if ok.sum() >= 2 else np.nan
        first_ratio = finite_median(ratio[span, 0][early[span, 0]])
        evidence = {
            "first_over_last_ratio": first_ratio,
            "first_layer_grad_norm": per_layer[layers[0]],
            "last_layer_grad_norm": per_layer[layers[-1]],
            "decades_per_layer": decades_per_layer,
            "steps_vanishing": int(early[span, 0].sum()),
            "steps_logged": int(end - start + 1),
            "ratio_threshold": self.ratio_threshold,
            "norm_threshold": self.norm_threshold,
            "per_layer": per_layer,
        }
        if weights_left is not None:
            evidence["first_layer_weight_ratio"] = weights_left
        sentence = (
            f"Gradients vanish towards the input in {layer_list(flagged)}: {layers[0]}'s gradient norm is about "
            f"{fmt(per_layer[layers[0]])}, {fmt(first_ratio)} x that of the last layer {layers[-1]} "
            f"({fmt(per_layer[layers[-1]])}), in {evidence['steps_vanishing']} of {evidence['steps_logged']} "
            f"logged steps from step {steps[start]} to {steps[end]}"
        )

        ratios = data.views.update_ratio
        if layers[0] in ratios.columns:
            window = ratios.loc[(ratios.index >= steps[start]) & (ratios.index <= steps[end]), layers[0]]
            early_update = finite_median(window.to_numpy())
            if np.isfinite(early_update):
                evidence["first_layer_update_ratio"] = early_update
                sentence += f"; {layers[0]} changes by {fmt(early_update)} of its weights per step"
        saturation, saturated_layer = max_saturation(data, steps[start], steps[end])
        if np.isfinite(saturation):
            evidence["max_saturated_frac"] = saturation
            if saturation >= 0.1:
                sentence += f"; {fmt(100 * saturation)}% of {saturated_layer}'s units sit at the rails"
        return [
            Flag(
                rule=self.rule,
                severity="warning",
                layers=flagged,
                first_step=int(steps[start]),
                last_step=int(steps[end]),
                evidence=evidence,
                explanation=sentence + ".",
                remedy_ids=_vanishing_remedies(data),
            )
        ]


def _weight_ratio(data: RunData, layer: str, start: int, end: int) -> float | None:
    weights = data.views.weight_norm
    if layer not in weights.columns:
        return None
    column = weights[layer].dropna()
    column = column[column > 0]
    window = column[(column.index >= start) & (column.index <= end)]
    if not len(column) or not len(window):
        return None
    return float(window.median() / column.iloc[0])


def _vanishing_remedies(data: RunData) -> list[str]:
    activation = data.activation_name() or ""
    if data.architecture in ("transformer", "gated-rnn"):
        return ["init", "lower-lr"]  # residual/gated paths: neither ReLU nor batch norm fits them
    if data.is_plain_rnn():
        return ["lstm", "relu", "init", "batchnorm"]
    if activation in SATURATING:
        return ["relu", "batchnorm", "init"]
    return ["batchnorm", "init", "relu"]


@dataclass
class _Surge:
    """Where a positive series rises far above its own level: spikes and sustained growth."""

    spikes: np.ndarray  # bool per point
    spike_ratio: np.ndarray  # value / running median
    growth: np.ndarray  # decades above the lowest smoothed level so far
    growth_onset: int | None  # first point of a sustained stretch >= growth_decades
    rise_start: int | None  # where that growth began: last point near the floor before the onset

    @property
    def first(self) -> int | None:
        candidates = [self.rise_start] if self.rise_start is not None else []
        spike_hits = np.flatnonzero(self.spikes)
        if len(spike_hits):
            candidates.append(int(spike_hits[0]))
        return min(candidates) if candidates else None


@dataclass
class ExplodingGradient(Rule):
    """Gradient norms surge by orders of magnitude, or updates become a large part of the weights.

    Signals, each relative to the run's own level so no model-specific scale is assumed (the
    initial level is the median of the first `min_history` values):
    - spikes: the gradient norm above `spike_factor` (100) x its running median over the previous
      `running_window` logged values (or x the initial level, whichever is higher; one of the
      first `min_history` values against the median of those before it), at `min_spikes` or more
      points, or one point while the loss diverges;
    - growth: the smoothed log norm (trailing median of `smooth_window`) `growth_decades` (2, i.e.
      100x) or more above the initial level, sustained over `window` logged steps;
    - huge updates: median update-to-weight ratio across layers above `huge_update_ratio` (0.1,
      two orders above Karpathy's ~1e-3 rule of thumb; SageMaker Debugger's WeightUpdateRatio flags
      ratios far from 1e-3 too), sustained.
    - blow-up: the unclipped norm rose `growth_decades` or more within the last `window` finite
      values before it turned NaN/Inf (a run that explodes in a few steps has no history for the
      tests above; the NaN confirms it). Always critical.
    Values below `negligible_fraction` (1e-6) x the series' median (zero gradients of batches the
    model already fits exactly) carry no level and are ignored.
    The gradient used by the first two is the one the optimiser applies: after clipping when the run
    clips (the `grad_norm_clipped` scalar, or min(norm, max_norm) from the config). When only the
    unclipped norm surges the rule reports an info flag that clipping is holding it. Loss spikes
    (> `loss_spike_factor` x running median) or a diverging loss make the flag critical.
    AUTOTRAINER (Zhang et al., ICSE 2021) and SageMaker Debugger's ExplodingTensor cover the NaN end
    of the same failure; see the nonfinite rule.
    """

    rule = "exploding_gradient"
    title = "Exploding gradients"

    spike_factor: float = 100.0
    running_window: int = 20
    min_history: int = 5
    min_spikes: int = 2
    growth_decades: float = 2.0
    smooth_window: int = 5
    window: int = 5
    min_fraction: float = 0.8
    huge_update_ratio: float = 0.1
    loss_spike_factor: float = 3.0
    negligible_fraction: float = 1e-6

    def skip_reason(self, data: RunData) -> str | None:
        if (data.views.grad_norm.empty and not data.has_scalar("grad_norm_total") and data.step_norms.empty
                and not data.has_scalar(SENTINEL_GRAD_NORM) and data.views.update_ratio.empty):
            return "no gradient norms recorded (neither per-layer statistics nor grad_norm_total)"
        return None

    # ---- the series ---------------------------------------------------------------------------
    def _meaningful(self, values: np.ndarray) -> np.ndarray:
        """NaN for zero and negligible values: a batch the model already fits exactly gives a zero
        or 1e-20 gradient (and loss), which says nothing about the level gradients run at."""
        values = np.asarray(values, dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        if not len(positive):
            return np.full(len(values), np.nan)
        floor = self.negligible_fraction * float(np.median(positive))
        return np.where(values > floor, values, np.nan)

    def _surge(self, values: np.ndarray) -> _Surge:
        values = self._meaningful(values)
        finite = np.flatnonzero(np.isfinite(values))
        if len(finite) < self.min_history:
            empty = np.zeros(len(values), dtype=bool)
            return _Surge(empty, np.full(len(values), np.nan), np.full(len(values), np.nan), None, None)
        # The initial level anchors both tests: a well-fitted model's gradients fall far below it
        # on most batches, and a misfit batch jumping back towards it is not an explosion.
        initial = float(np.median(values[finite[: self.min_history]]))
        floor = np.full(len(values), initial)
        # A value among the first ones is judged against those before it only: a blow-up within
        # the first `min_history` steps (an LSTM at SGD lr 20: 0.3 -> 240 at step 4) would
        # otherwise raise its own yardstick above a tenth of itself.
        for k in range(2, min(self.min_history, len(finite))):
            floor[finite[k]] = float(np.median(values[finite[:k]]))
        level = np.fmax(running_level(values, self.running_window, self.min_history), floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            spike_ratio = values / level
        spikes = np.isfinite(spike_ratio) & (spike_ratio > self.spike_factor)
        smooth = trailing_median(safe_log10(values), self.smooth_window)
        growth = smooth - np.log10(initial)
        grow_mask = np.isfinite(growth) & (growth >= self.growth_decades)
        onset = sustained_onset(grow_mask, self.window, self.min_fraction)
        rise_start = None
        if onset is not None:
            # Report where the climb began, not where it crossed the threshold.
            head = growth[: onset + 1]
            near_start = np.flatnonzero(np.isfinite(head) & (head <= self.growth_decades / 8))
            rise_start = int(near_start[-1]) if len(near_start) else int(finite[0])
        return _Surge(spikes, spike_ratio, growth, onset, rise_start)

    def _fires(self, surge: _Surge) -> bool:
        return surge.growth_onset is not None or int(surge.spikes.sum()) >= self.min_spikes

    def _total_norm(self, data: RunData) -> pd.Series:
        """Total gradient norm: the trainer's grad_norm_total (before clipping), else the capture's
        every-step sentinel (as the optimizer sees it), else from the logged layers."""
        total = data.scalar("grad_norm_total")
        if len(total):
            return total
        sentinel = data.scalar(SENTINEL_GRAD_NORM)
        if len(sentinel):
            return sentinel
        if not data.step_norms.empty:
            norms = data.step_norms
            return pd.Series(norms.total(), index=pd.Index(np.asarray(norms.steps, dtype=np.int64), name="step"))
        grads = data.views.grad_norm
        if grads.empty:
            return total
        return derived.total_norm(grads)

    def _applied_norm(self, data: RunData, total: pd.Series) -> tuple[pd.Series, bool, float | None]:
        clipped = data.scalar("grad_norm_clipped")
        clip = data.clip_norm()
        if len(clipped):
            return clipped, True, clip
        if clip is not None and len(total):
            return total.clip(upper=clip), True, clip
        return total, False, clip

    # ---- the rule -----------------------------------------------------------------------------
    def check(self, data: RunData) -> list[Flag]:
        total = self._total_norm(data)
        applied, clipping, clip = self._applied_norm(data, total)
        evidence: dict = {"clipping": int(clipping)}
        if clip is not None:
            evidence["clip_norm"] = clip
        signals: list[tuple[int, int, str]] = []  # (first step, last step, sentence part)

        surge = self._surge(applied.to_numpy(dtype=float)) if len(applied) else None
        # One 100x spike alone can be a misfit batch; with the loss diverging too it is the blow-up.
        if surge is not None and (self._fires(surge) or (surge.spikes.any() and _loss_diverges(data))):
            signals.append(self._describe_surge(applied, surge, clipping, evidence))
        blowup = self._blowup(total)
        if blowup is not None:
            signals.append(blowup[0])
            evidence.update(blowup[1])
        update = self._huge_updates(data)
        if update is not None:
            start, end, peak = update
            evidence["max_median_update_ratio"] = peak
            signals.append((start, end, (
                f"updates reached {fmt(peak)} of the weights per step (median over layers, above "
                f"{fmt(self.huge_update_ratio)}) from step {start} to {end}"
            )))
        if not signals:
            if clipping and len(total):
                raw = self._surge(total.to_numpy(dtype=float))
                if self._fires(raw):
                    return [self._held_by_clipping(total, raw, clip)]
            return []

        first_step = min(s[0] for s in signals)
        last_step = max(s[1] for s in signals)
        layers = self._surging_layers(data, first_step)
        # The every-step per-layer norms date the surge to its own step (an explosion between two
        # logged steps) and name the layers that surged at that step, not those that carry it later.
        surge = self._every_step_surge(data, total, first_step, last_step)
        every_step_text = ""
        if surge is not None:
            evidence.update(surge.to_evidence())
            if surge.layers:
                layers = surge.layers
                evidence["per_layer"] = {layer: surge.layer_ratios.get(layer, float("nan")) for layer in layers}
            if surge.moved_first and set(surge.moved_first) != set(surge.layers):
                evidence["moved_first"] = surge.moved_first
            every_step_text = (f"; every-step norms date the surge to step {surge.step}: the gradient norm "
                               f"{fmt(surge.ratio)}x its running level"
                               + (f", {layer_list(surge.layers)} surging" if surge.layers else ""))
            first_step = surge.step  # the every-step series dates it exactly
        loss = self._loss_evidence(data, first_step)
        evidence.update(loss)
        critical = (
            blowup is not None or loss.get("loss_nonfinite", 0) or loss.get("loss_rise", 0) >= 2.0
            or loss.get("loss_spikes", 0) > 0
        )
        sentence = "Exploding gradients: " + "; ".join(s[2] for s in signals)
        if every_step_text:
            sentence += every_step_text
        elif layers:
            sentence += f"; the surge is in {layer_list(layers)}"
        if loss.get("loss_nonfinite") and blowup is None:
            sentence += "; the loss then became NaN/Inf"
        elif loss.get("loss_rise", 0) >= 2.0:
            sentence += f"; the training loss rose {fmt(loss['loss_rise'])}x above its lowest level"
        elif loss.get("loss_spikes", 0):
            sentence += f"; the training loss spiked at {loss['loss_spikes']} steps"
        return [
            Flag(
                rule=self.rule,
                severity="critical" if critical else "warning",
                layers=layers,
                first_step=first_step,
                last_step=last_step,
                evidence=evidence,
                explanation=sentence + ".",
                remedy_ids=_exploding_remedies(data, clipping),
            )
        ]

    def _every_step_surge(self, data: RunData, series: pd.Series, first_step: int, last_step: int):
        """The every-step surge behind a surge the rule saw at `first_step` (searched from just after the
        series' previous point, so the step between two logged steps is found), or None."""
        if data.step_norms.empty:
            return None
        steps = series.index.to_numpy(dtype=np.int64)
        before = steps[steps < first_step]
        start = int(before[-1]) + 1 if len(before) else int(np.asarray(data.step_norms.steps)[0])
        return surge_between(data.step_norms, start, last_step)

    def _describe_surge(self, series: pd.Series, surge: _Surge, clipping: bool, evidence: dict):
        steps = series.index.to_numpy(dtype=np.int64)
        values = series.to_numpy(dtype=float)
        first = surge.first
        active = surge.spikes | (np.isfinite(surge.growth) & (surge.growth >= self.growth_decades))
        last = last_true(active)
        finite = values[np.isfinite(values)]
        peak_growth = float(np.nanmax(surge.growth)) if np.isfinite(surge.growth).any() else 0.0
        n_spikes = int(surge.spikes.sum())
        evidence.update(
            max_grad_norm=float(finite.max()) if len(finite) else float("nan"),
            growth_decades=peak_growth,
            spikes=n_spikes,
            max_spike_ratio=float(np.nanmax(surge.spike_ratio)) if np.isfinite(surge.spike_ratio).any() else float("nan"),
        )
        what = "gradient norm" + (" after clipping" if clipping else "")
        parts = []
        if surge.growth_onset is not None:
            parts.append(
                f"the {what} grew {fmt(peak_growth)} orders of magnitude (to {fmt(evidence['max_grad_norm'])}) "
                f"from step {steps[first]} to {steps[last]}"
            )
        if n_spikes:
            parts.append(
                f"{n_spikes} logged step{'s' if n_spikes > 1 else ''} had a {what} over "
                f"{fmt(self.spike_factor)}x its running median (up to {fmt(evidence['max_spike_ratio'])}x)"
            )
        return int(steps[first]), int(steps[last]), "; ".join(parts)

    def _blowup(self, total: pd.Series):
        """The norm rose `growth_decades` or more within the last `window` finite values before it
        turned NaN/Inf: too short a history for the running tests, but the NaN confirms it.
        Returns ((first step, last step, sentence part), evidence) or None."""
        values = total.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if not bad.any():
            return None
        first_bad = int(np.argmax(bad))
        before = np.flatnonzero(values[:first_bad] > 0)[-(self.window + 1):]
        if len(before) < 2:
            return None
        logs = np.log10(values[before])
        low = int(np.argmin(logs[:-1]))
        rise = float(logs[-1] - logs[low])
        if rise < self.growth_decades:
            return None
        steps = total.index.to_numpy(dtype=np.int64)
        start, end, nonfinite = int(steps[before[low]]), int(steps[before[-1]]), int(steps[first_bad])
        return (start, nonfinite, (
            f"the gradient norm jumped {fmt(rise)} orders of magnitude ({fmt(values[before[low]])} to "
            f"{fmt(values[before[-1]])}) between steps {start} and {end}, then became NaN/Inf at step {nonfinite}"
        )), {"blowup_decades": rise, "nonfinite_step": nonfinite, "max_grad_norm": float(values[before[-1]])}

    def _huge_updates(self, data: RunData) -> tuple[int, int, float] | None:
        ratios = data.views.update_ratio
        layers = [layer for layer in data.weighted_layers if layer in ratios.columns] or list(ratios.columns)
        if not layers:
            return None
        positive = ratios[layers].where(ratios[layers] > 0)  # a zero update is a zero gradient, not a step size
        median = positive.median(axis=1, skipna=True).to_numpy(dtype=float)
        huge = np.isfinite(median) & (median > self.huge_update_ratio)
        onset = sustained_onset(huge, self.window, self.min_fraction)
        if onset is None:
            return None
        steps = ratios.index.to_numpy(dtype=np.int64)
        last = last_true(huge)
        return int(steps[onset]), int(steps[last]), float(np.nanmax(median[onset: last + 1][huge[onset: last + 1]]))

    def _surging_layers(self, data: RunData, first_step: int) -> list[str]:
        """Layers whose own (applied) gradient norm rose by an order of magnitude or more from their
        level before the surge, forward order."""
        grads = data.views.grad_norm
        if grads.empty:
            return []
        values = grads.to_numpy(dtype=float)
        steps = grads.index.to_numpy(dtype=np.int64)
        clip = data.clip_norm()
        if clip is not None:
            total = derived.total_norm(grads).to_numpy()[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                values = values * np.minimum(1.0, clip / total)
        before = steps < first_step
        after = steps >= first_step
        if not after.any():
            return []
        base_rows = values[before] if before.sum() >= 1 else values[:1]
        with np.errstate(all="ignore"):
            base = np.nanmedian(np.where(np.isfinite(base_rows), base_rows, np.nan), axis=0)
            peak = np.nanmax(np.where(np.isfinite(values[after]), values[after], np.nan), axis=0)
            rise = np.log10(peak / base)
        return [layer for layer, r in zip(grads.columns, rise) if np.isfinite(r) and r >= 1.0]

    def _loss_evidence(self, data: RunData, first_step: int) -> dict:
        loss = data.scalar("train_loss")
        if not len(loss):
            return {}
        values = loss.to_numpy(dtype=float)
        steps = loss.index.to_numpy(dtype=np.int64)
        after = steps >= first_step
        level = running_level(self._meaningful(values), self.running_window, self.min_history)
        with np.errstate(invalid="ignore", divide="ignore"):
            spikes = np.isfinite(level) & (values > self.loss_spike_factor * level) & after
        smooth = trailing_median(values, self.smooth_window)
        finite = smooth[np.isfinite(smooth)]
        out = {"loss_spikes": int(spikes.sum()), "loss_nonfinite": int((~np.isfinite(values) & after).any())}
        if len(finite) and finite.min() > 0:
            out["loss_rise"] = float(finite[-1] / finite.min())
        return out

    def _held_by_clipping(self, total: pd.Series, raw: _Surge, clip: float | None) -> Flag:
        steps = total.index.to_numpy(dtype=np.int64)
        first = raw.first
        active = raw.spikes | (np.isfinite(raw.growth) & (raw.growth >= self.growth_decades))
        last = last_true(active)
        values = total.to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        peak = float(finite.max()) if len(finite) else float("nan")
        clip_text = f" at max_norm {fmt(clip)}" if clip is not None else ""
        return Flag(
            rule=self.rule,
            severity="info",
            layers=[],
            first_step=int(steps[first]),
            last_step=int(steps[last]),
            evidence={
                "clipping": 1,
                "clip_norm": clip if clip is not None else float("nan"),
                "max_unclipped_grad_norm": peak,
                "growth_decades": float(np.nanmax(raw.growth)) if np.isfinite(raw.growth).any() else 0.0,
                "spikes": int(raw.spikes.sum()),
            },
            explanation=(
                f"Gradient clipping{clip_text} is holding back surging gradients: the unclipped norm reached "
                f"{fmt(peak)} between steps {steps[first]} and {steps[last]}, but the applied gradient stayed bounded."
            ),
            remedy_ids=["lower-lr", "init", "batchnorm"],
        )


def _loss_diverges(data: RunData) -> bool:
    from .loss import LossDivergence  # the loss rule confirms a lone gradient spike

    return any(flag.severity != "info" for flag in LossDivergence()(data))


def _exploding_remedies(data: RunData, clipping: bool) -> list[str]:
    # With clipping already on, a tighter max_norm matters less than a smaller step.
    remedies = ["lower-lr", "clipping"] if clipping else ["clipping", "lower-lr"]
    if data.is_plain_rnn():
        remedies.insert(1, "lstm")
    return remedies + ["batchnorm", "init"]

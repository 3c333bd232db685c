"""Activation rules: dead ReLU units and saturated sigmoid/tanh units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .data import BATCH_SIZE_KEYS, RunData
from .flags import Flag, fmt, layer_list
from .gradients import SATURATING_MODULES
from .rule import Rule
from .signals import finite_median, last_true, sustained_onsets

# The capture records dead_frac for these module types only (trainer/capture/activation_stats.py).
RELU_MODULES = ("ReLU", "ReLU6", "RReLU", "Threshold")


@dataclass
class _StuckUnits(Rule):
    """Shared logic: a per-layer activation fraction at or above `threshold` in at least
    `min_fraction` of `window` consecutive logged steps, in hidden layers of the right module type."""

    needs_layer_stats = True
    view: ClassVar[str] = ""
    module_types: ClassVar[tuple[str, ...]] = ()

    threshold: float = 0.5
    critical_threshold: float = 1.1  # above 1: never critical unless a subclass says so
    window: int = 5
    min_fraction: float = 0.8

    def candidate_layers(self, data: RunData) -> list[str]:
        frame = getattr(data.views, self.view)
        types = data.module_types
        layers = [c for c in frame.columns if not types.get(c) or types[c] in self.module_types]
        return data.hidden_layers(layers)

    def skip_reason(self, data: RunData) -> str | None:
        reason = super().skip_reason(data)
        if reason is None and not self.candidate_layers(data):
            reason = f"no {'/'.join(self.module_types[:2])} activation statistics recorded"
        return reason

    def stuck(self, data: RunData):
        """(layers, first_step, last_step, per-layer median fraction over its stuck stretch) or None."""
        layers = self.candidate_layers(data)
        frame = getattr(data.views, self.view)[layers]
        values = frame.to_numpy(dtype=float)
        steps = frame.index.to_numpy(dtype=np.int64)
        stuck = np.isfinite(values) & (values >= self.threshold)
        onsets = sustained_onsets(stuck, self.window, self.min_fraction)
        hit = [i for i in range(len(layers)) if onsets[i] >= 0]
        if not hit:
            return None
        per_layer, firsts, lasts = {}, [], []
        for i in hit:
            start = int(onsets[i])
            end = start + last_true(stuck[start:, i])
            per_layer[layers[i]] = finite_median(values[start: end + 1, i][stuck[start: end + 1, i]])
            firsts.append(steps[start])
            lasts.append(steps[end])
        return [layers[i] for i in hit], int(min(firsts)), int(max(lasts)), per_layer

    def severity(self, per_layer: dict) -> str:
        return "critical" if max(per_layer.values()) >= self.critical_threshold else "warning"


@dataclass
class DeadUnits(_StuckUnits):
    """Dead ReLU units: a layer where at least `threshold` (70%) of the units output zero for the
    whole batch, sustained. AUTOTRAINER (Zhang et al., ICSE 2021) flags dying ReLU at 70% zero
    gradients (gamma = 0.7). SageMaker Debugger's DeadRelu uses 50% of a layer (threshold_layer),
    but counts a unit dead only when it is active in under 1% of steps; the capture's dead_frac is
    per batch, so it also counts rarely active units, and the stricter 70% keeps healthy narrow
    networks (around 50% per batch) from being flagged. Critical at `critical_threshold` (90%): the
    layer has all but died.

    "Zero for the whole batch" is only evidence of death with enough samples per batch, so the rule
    skips runs whose config batch size is below `min_batch_size`.
    """

    rule = "dead_units"
    title = "Dead ReLU units"
    view = "dead"
    module_types = RELU_MODULES

    threshold: float = 0.7
    critical_threshold: float = 0.9
    min_batch_size: int = 8

    def skip_reason(self, data: RunData) -> str | None:
        reason = super().skip_reason(data)
        batch = data.config_value(*BATCH_SIZE_KEYS)
        if reason is None and isinstance(batch, (int, float)) and 0 < batch < self.min_batch_size:
            reason = f"batch size {batch} is below {self.min_batch_size}: a zero unit may just be one sample"
        return reason

    def check(self, data: RunData) -> list[Flag]:
        found = self.stuck(data)
        if found is None:
            return []
        layers, first, last, per_layer = found
        worst = max(per_layer, key=per_layer.get)
        return [
            Flag(
                rule=self.rule,
                severity=self.severity(per_layer),
                layers=layers,
                first_step=first,
                last_step=last,
                evidence={
                    "max_dead_frac": per_layer[worst],
                    "mean_dead_frac": float(np.mean(list(per_layer.values()))),
                    "threshold": self.threshold,
                    "per_layer": per_layer,
                },
                explanation=(
                    f"Dead ReLU units in {layer_list(layers)}: "
                    + (f"{fmt(100 * per_layer[worst])}% of the units" if len(layers) == 1
                       else f"up to {fmt(100 * per_layer[worst])}% of the units (in {worst})")
                    + f" output zero for the whole batch from step {first} to {last}; they no longer learn "
                    "because their gradient is zero."
                ),
                remedy_ids=["lower-lr", "leaky-relu", "init", "batchnorm"],
            )
        ]


@dataclass
class SaturatedUnits(_StuckUnits):
    """Saturated sigmoid/tanh units: a hidden layer with at least `threshold` (50%) of its outputs at
    the rails, sustained - SageMaker Debugger's SaturatedActivation default (threshold_layer = 50%).
    A saturated unit's derivative is ~0, so little gradient passes through it (AUTOTRAINER lists
    saturation as a cause of vanishing gradients). The network's own output activation is left out:
    a confident classifier's sigmoid is meant to saturate.
    """

    rule = "saturated_units"
    title = "Saturated activations"
    view = "saturated"
    module_types = SATURATING_MODULES

    threshold: float = 0.5

    def check(self, data: RunData) -> list[Flag]:
        found = self.stuck(data)
        if found is None:
            return []
        layers, first, last, per_layer = found
        worst = max(per_layer, key=per_layer.get)
        remedies = ["relu", "batchnorm", "init", "lower-lr"]
        if data.is_plain_rnn():
            remedies.insert(1, "lstm")
        return [
            Flag(
                rule=self.rule,
                severity=self.severity(per_layer),
                layers=layers,
                first_step=first,
                last_step=last,
                evidence={
                    "max_saturated_frac": per_layer[worst],
                    "mean_saturated_frac": float(np.mean(list(per_layer.values()))),
                    "threshold": self.threshold,
                    "per_layer": per_layer,
                },
                explanation=(
                    f"Saturated activations: {fmt(100 * per_layer[worst])}% of {worst}'s outputs sit at the "
                    f"rails of the activation from step {first} to {last}"
                    + (f" (also {layer_list([x for x in layers if x != worst])})" if len(layers) > 1 else "")
                    + "; gradients through them are close to zero."
                ),
                remedy_ids=remedies,
            )
        ]

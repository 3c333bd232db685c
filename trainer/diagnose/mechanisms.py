"""Mechanism findings that a per-layer "small gradient" verdict would misname.

- zero_gradients: every gradient is exactly zero (a clip threshold of 0, a loss cut off from the
  graph by .detach() / torch.no_grad(), every parameter frozen by mistake). Nothing trains, and
  "raise the learning rate" cannot help: lr x 0 is 0.
- weight_collapse: the weights themselves shrink by orders of magnitude under regularisation
  (weight decay / an L2 term far too strong for the learning rate); the gradients then look
  vanishing because the signal passes through near-zero weights, but the cure is less
  regularisation, not ReLU or batch norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runlog.schema import SENTINEL_GRAD_NORM
from .data import RunData
from .every_step import all_zero_steps
from .flags import Flag, fmt, layer_list
from .rule import Rule
from .signals import sustained_onset


def zero_gradient_rows(data: RunData) -> tuple[np.ndarray, np.ndarray, str]:
    """(steps, all-zero bool per step, source): from the every-step norms when recorded, else the
    capture's every-step total (sentinel), else the logged per-layer gradient norms."""
    if not data.step_norms.empty:
        steps, zero = all_zero_steps(data.step_norms)
        return steps, zero, "every-step norms"
    sentinel = data.scalar(SENTINEL_GRAD_NORM).dropna()
    if len(sentinel):
        return sentinel.index.to_numpy(dtype=np.int64), sentinel.to_numpy(dtype=float) == 0, "every-step total norm"
    grads = data.views.grad_norm
    layers = [layer for layer in data.weighted_layers if layer in grads.columns] or list(grads.columns)
    if not layers:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), ""
    values = grads[layers].to_numpy(dtype=float)
    seen = np.isfinite(values)
    zero = seen.any(axis=1) & np.all(np.where(seen, values == 0, True), axis=1)
    return grads.index.to_numpy(dtype=np.int64), zero, "logged layer statistics"


@dataclass
class ZeroGradients(Rule):
    """Every parameter's gradient is exactly zero in at least `min_fraction` of `window` consecutive
    steps (critical): the model cannot change. A clip threshold of 0 is named when configured."""

    rule = "zero_gradients"
    title = "All gradients zero"

    window: int = 5
    min_fraction: float = 0.8

    def skip_reason(self, data: RunData) -> str | None:
        if data.step_norms.empty and not data.has_scalar(SENTINEL_GRAD_NORM) and data.views.grad_norm.empty:
            return "no gradient norms recorded"
        return None

    def check(self, data: RunData) -> list[Flag]:
        steps, zero, source = zero_gradient_rows(data)
        window = min(self.window, max(2, len(steps) // 2))
        onset = sustained_onset(zero, window, self.min_fraction)
        if onset is None:
            return []
        last = int(np.flatnonzero(zero)[-1])
        share = float(zero[onset:].mean())
        clip = data.clip_setting()
        cause = ""
        if clip is not None and clip == 0:
            cause = "; the run clips the gradient norm at 0, which scales every gradient to zero"
        elif data.tensors is not None and len(data.tensors) and "trainable" in data.tensors and not \
                data.tensors[data.tensors["role"] == "param"]["trainable"].astype(bool).any():
            cause = "; no parameter is trainable"
        return [Flag(
            rule=self.rule, severity="critical", layers=[], first_step=int(steps[onset]), last_step=int(steps[last]),
            evidence={"zero_steps": int(zero[onset:].sum()), "steps_seen": int(len(zero) - onset),
                      "zero_share": share, "source_every_step": int(source != "logged layer statistics"),
                      "clip_setting": clip if clip is not None else float("nan")},
            explanation=(f"Every gradient is exactly zero from step {steps[onset]} ({fmt(100 * share)}% of the "
                         f"{len(zero) - onset} steps since, {source}){cause}: no weight can change, whatever the "
                         "learning rate."),
            remedy_ids=["zero-grad"],
        )]


@dataclass
class WeightCollapse(Rule):
    """The weighted layers' weight norms shrink to `collapse_ratio` (1/10) of their initial size or
    less, sustained, in at least half of the weighted layers, while regularisation is on (config
    weight_decay / l2, or the optimizer's recorded weight_decay); warning, critical at
    `critical_ratio` (1/1000). Gradients through near-zero weights are small too: that is this
    finding, not vanishing gradients."""

    rule = "weight_collapse"
    title = "Weights collapse under regularisation"
    needs_layer_stats = True

    collapse_ratio: float = 0.1
    critical_ratio: float = 1e-3
    window: int = 5
    min_fraction: float = 0.8

    def check(self, data: RunData) -> list[Flag]:
        weights = data.views.weight_norm
        layers = [layer for layer in data.weighted_layers if layer in weights.columns]
        if not layers or len(weights) < self.window:
            return []
        values = weights[layers].to_numpy(dtype=float)
        initial = np.array([_first_finite(values[:, j]) for j in range(len(layers))])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = values / initial
        collapsed = np.isfinite(ratio) & (ratio <= self.collapse_ratio)
        onsets = [sustained_onset(collapsed[:, j], self.window, self.min_fraction) for j in range(len(layers))]
        hit = [j for j, onset in enumerate(onsets) if onset is not None]
        if len(hit) * 2 < len(layers):
            return []
        decay = data.weight_decay()
        if not decay:
            return []
        steps = weights.index.to_numpy(dtype=np.int64)
        onset = min(onsets[j] for j in hit)
        final = {layers[j]: float(ratio[-1, j]) for j in hit}
        worst = min(final.values())
        grads = data.views.grad_norm
        grad_text = ""
        if layers[hit[0]] in grads.columns:
            grad_now = float(grads[layers[hit[0]]].dropna().iloc[-1]) if grads[layers[hit[0]]].notna().any() else float("nan")
            grad_text = f"; {layers[hit[0]]}'s gradient norm is now {fmt(grad_now)}, small because its weights are"
        flagged = [layers[j] for j in hit]
        return [Flag(
            rule=self.rule, severity="critical" if worst <= self.critical_ratio else "warning", layers=flagged,
            first_step=int(steps[onset]), last_step=int(steps[-1]),
            evidence={"weight_decay": decay, "min_weight_ratio": worst, "per_layer": final,
                      "collapse_ratio": self.collapse_ratio},
            explanation=(f"The weights collapse under regularisation (weight decay {fmt(decay)}): "
                         f"{layer_list(flagged)} shrank to {fmt(worst)} of their initial size from step "
                         f"{steps[onset]}{grad_text}."),
            remedy_ids=["less-regularisation"],
        )]


def _first_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values) & (values > 0)]
    return float(finite[0]) if len(finite) else float("nan")


TIME_RATIO_PREFIX = "rnn_time_grad_ratio/"
FORGET_BIAS_PREFIX = "rnn_forget_bias/"


@dataclass
class VanishingThroughTime(Rule):
    """Inside a recurrent layer the gradient dies on its way back through time: the capture's
    `rnn_time_grad_ratio/<layer>` (mean |dL/dx_t| over the first quarter of the positions / over the
    last quarter, RecurrentTimeRecorder) below `ratio_threshold` (1e-4) in `min_fraction` of `window`
    consecutive records (warning). A layer-vs-layer comparison cannot see this: the layer's own
    weights get gradient from its last positions. Bengio et al. 1994 (long-term dependencies are hard
    to learn by gradient descent); Jozefowicz et al. 2015 (forget-gate bias 1). The LSTM's mean
    forget-gate bias (`rnn_forget_bias/<layer>`) is reported: strongly negative, the gate is shut."""

    rule = "vanishing_through_time"
    title = "Vanishing gradients through time"

    ratio_threshold: float = 1e-4
    window: int = 5
    min_fraction: float = 0.8

    def skip_reason(self, data: RunData) -> str | None:
        if not any(name.startswith(TIME_RATIO_PREFIX) for name in data.scalar_names):
            return "no through-time gradient ratios recorded (RecurrentTimeRecorder)"
        return None

    def check(self, data: RunData) -> list[Flag]:
        found = []
        for name in data.scalar_names:
            if not name.startswith(TIME_RATIO_PREFIX):
                continue
            series = data.scalar(name).dropna()
            values = series.to_numpy(dtype=float)
            onset = sustained_onset(values < self.ratio_threshold, min(self.window, max(2, len(values))),
                                    self.min_fraction)
            if onset is not None and len(values) >= 2:
                found.append((int(series.index[onset]), name[len(TIME_RATIO_PREFIX):], float(np.median(values[onset:]))))
        if not found:
            return []
        found.sort()
        first, layer, ratio = found[0]
        evidence = {"time_grad_ratio": ratio, "ratio_threshold": self.ratio_threshold,
                    "per_layer": {f[1]: f[2] for f in found}}
        sentence = (f"Gradients vanish through time inside {layer_list([f[1] for f in found])}: the gradient reaching "
                    f"the first quarter of the sequence is {fmt(ratio)} x that reaching the last quarter, from step {first}")
        forget = data.scalar(FORGET_BIAS_PREFIX + layer).dropna()
        if len(forget):
            bias = float(forget.iloc[-1])
            evidence["forget_gate_bias"] = bias
            if bias < 0:
                sentence += (f"; the forget gate's bias is {fmt(bias)} (sigmoid {fmt(1 / (1 + np.exp(-bias)))}), "
                             "so the cell drops its state at every step")
        remedies = ["lstm", "gate-bias", "init"] if data.is_plain_rnn() else ["gate-bias", "init", "clipping"]
        return [Flag(rule=self.rule, severity="warning", layers=[f[1] for f in found], first_step=first,
                     last_step=int(max(data.scalar(TIME_RATIO_PREFIX + f[1]).index.max() for f in found)),
                     evidence=evidence, explanation=sentence + ".", remedy_ids=remedies)]

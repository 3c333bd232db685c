"""Large-model instability signals that precede a loss blow-up (transformers).

Read from scalars the capture's AttentionLogitRecorder writes (trainer/capture/attention_logits.py):
- attention_logit_growth: `attn_logit_max/<layer>`, the largest |q.k| x scale of an attention layer.
  Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities")
  show these logits growing by orders of magnitude at high learning rates without QK layer norm,
  ahead of attention-entropy collapse and the loss divergence; Dehghani et al. 2023 (ViT-22B) added QK
  layer norm for it; Megatron-LM logs the max attention logit; Kimi K2's QK-clip caps it at tau = 100.
- output_logit_drift: `output_log_z`, the mean log-partition of the final logits. Untrained logits are
  near 0, so log Z starts near ln K; Wortsman et al.'s "output logit divergence" is log Z drifting far
  from it (the logits as a whole shift), which PaLM's z-loss (1e-4 x log^2 Z) prevents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import RunData
from .flags import Flag, fmt, layer_list
from .rule import Rule
from .signals import sustained_onset

ATTN_PREFIX = "attn_logit_max/"
OUTPUT_LOG_Z = "output_log_z"


@dataclass
class AttentionLogitGrowth(Rule):
    """An attention layer's max logit at or above `max_logit` (100, Kimi K2's QK-clip tau) and
    `growth` (10) x its initial level (median of its first `initial_points` records), in
    `min_fraction` of `window` consecutive records (warning)."""

    rule = "attention_logit_growth"
    title = "Attention logit growth"

    max_logit: float = 100.0
    growth: float = 10.0
    initial_points: int = 3
    window: int = 3
    min_fraction: float = 0.67

    def skip_reason(self, data: RunData) -> str | None:
        if not any(name.startswith(ATTN_PREFIX) for name in data.scalar_names):
            return "no attention logits recorded (AttentionLogitRecorder)"
        return None

    def check(self, data: RunData) -> list[Flag]:
        found = []  # (onset step, layer, initial, peak)
        for name in data.scalar_names:
            if not name.startswith(ATTN_PREFIX):
                continue
            series = data.scalar(name).dropna()
            values = series.to_numpy(dtype=float)
            if len(values) < self.initial_points + 1:
                continue
            initial = float(np.median(values[: self.initial_points]))
            grown = np.isfinite(values) & (values >= self.max_logit) & (values >= self.growth * max(initial, 1e-6))
            onset = sustained_onset(grown, min(self.window, len(values)), self.min_fraction)
            if onset is not None:
                found.append((int(series.index[onset]), name[len(ATTN_PREFIX):], initial, float(np.nanmax(values))))
        if not found:
            return []
        found.sort()
        first = found[0][0]
        order = {layer: data.position(layer) for _, layer, _, _ in found}
        layers = sorted({f[1] for f in found}, key=lambda layer: order[layer])
        peak = max(f[3] for f in found)
        per_layer = {f[1]: f[3] for f in found}
        lead = next(f for f in found if f[0] == first)
        return [Flag(
            rule=self.rule, severity="warning", layers=layers, first_step=first,
            last_step=int(max(data.scalar(ATTN_PREFIX + layer).index.max() for layer in layers)),
            evidence={"max_attention_logit": peak, "initial_attention_logit": lead[2], "max_logit": self.max_logit,
                      "per_layer": per_layer},
            explanation=(f"Attention logits grow in {layer_list(layers)}: the largest |q.k|/sqrt(d) in {lead[1]} went from "
                         f"{fmt(lead[2])} to {fmt(self.max_logit)} or more by step {first} (peak {fmt(peak)}); logits this "
                         "large collapse the attention onto single tokens and precede loss divergence "
                         "(Wortsman et al. 2023)."),
            remedy_ids=["qk-norm", "lower-lr", "warmup"],
        )]


@dataclass
class OutputLogitDrift(Rule):
    """The output log-partition drifts `max_drift` (20 nats) or more from its first value, sustained
    (warning): the logits shift as a whole, Wortsman et al.'s output-logit divergence; z-loss fixes it."""

    rule = "output_logit_drift"
    title = "Output logit drift"

    max_drift: float = 20.0
    window: int = 3
    min_fraction: float = 0.67

    def skip_reason(self, data: RunData) -> str | None:
        return None if data.has_scalar(OUTPUT_LOG_Z) else "no output log-partition recorded (AttentionLogitRecorder)"

    def check(self, data: RunData) -> list[Flag]:
        series = data.scalar(OUTPUT_LOG_Z).dropna()
        values = series.to_numpy(dtype=float)
        if len(values) < 2:
            return []
        start = float(values[0])
        drift = np.abs(values - start)
        onset = sustained_onset(np.isfinite(drift) & (drift >= self.max_drift), min(self.window, len(values)),
                                self.min_fraction)
        if onset is None:
            return []
        worst = int(np.nanargmax(drift))
        return [Flag(
            rule=self.rule, severity="warning", layers=[], first_step=int(series.index[onset]),
            last_step=int(series.index[-1]),
            evidence={"initial_log_z": start, "max_log_z_drift": float(drift[worst]), "log_z_at_max": float(values[worst]),
                      "max_drift": self.max_drift},
            explanation=(f"The output logits drift: their log-partition went from {fmt(start)} to {fmt(values[worst])} "
                         f"by step {series.index[worst]} (drift {fmt(float(drift[worst]))} nats from step "
                         f"{series.index[onset]}); this precedes output-logit divergence (Wortsman et al. 2023)."),
            remedy_ids=["z-loss", "lower-lr", "warmup"],
        )]


ADAM_UPDATE_RMS = "adam_update_rms"


@dataclass
class AdamSecondMomentLag(Rule):
    """Adam's second moment lags the squared gradient: `adam_update_rms` (the largest over weight
    matrices of sqrt(sum g^2 / sum v_hat), written by the capture's AdamLagRecorder before each step)
    at or above `max_rms` (3) (warning). While v tracks g^2 it sits near or below 1; a gradient the
    slow average has not seen makes the update that much larger than Adam's normalisation intends.
    Wortsman et al. 2023b ("Stable and low-precision training for large-scale vision-language
    models") show this RMS spiking a few steps before loss spikes; a lower beta2 or update clipping
    fixes it."""

    rule = "adam_second_moment_lag"
    title = "Adam second moment lags"

    max_rms: float = 3.0
    after_steps: int = 10  # Adam's estimates need a few steps before a lag means anything

    def skip_reason(self, data: RunData) -> str | None:
        return None if data.has_scalar(ADAM_UPDATE_RMS) else "no Adam update RMS recorded (AdamLagRecorder)"

    def check(self, data: RunData) -> list[Flag]:
        series = data.scalar(ADAM_UPDATE_RMS).dropna()
        series = series[series.index >= series.index.min() + self.after_steps] if len(series) else series
        values = series.to_numpy(dtype=float)
        hits = np.flatnonzero(np.isfinite(values) & (values >= self.max_rms))
        if not len(hits):
            return []
        first = int(hits[0])
        peak = float(np.nanmax(values[hits]))
        steps = series.index.to_numpy(dtype=np.int64)
        return [Flag(
            rule=self.rule, severity="warning", layers=[], first_step=int(steps[first]), last_step=int(steps[hits[-1]]),
            evidence={"adam_update_rms": float(values[first]), "peak_adam_update_rms": peak, "max_rms": self.max_rms,
                      "lagging_steps": int(len(hits))},
            explanation=(f"Adam's second moment lags the gradient: at step {steps[first]} a weight matrix's gradient was "
                         f"{fmt(float(values[first]))}x what its second-moment estimate expects (above {fmt(self.max_rms)}; "
                         f"{len(hits)} such steps, up to {fmt(peak)}x), so its update is that much larger than Adam "
                         "intends; loss spikes follow within a few steps (Wortsman et al. 2023b)."),
            remedy_ids=["adam-beta2", "lower-lr", "warmup", "clipping"],
        )]

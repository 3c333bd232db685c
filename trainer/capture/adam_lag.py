"""Adam's second moment lagging the squared gradient, measured at every optimizer step.

Before each step of an Adam-family optimizer (state `exp_avg_sq`), the largest over weight matrices
of sqrt(sum g^2 / sum v_hat) - the gradient in units of what the bias-corrected second-moment
estimate expects - is written as the `adam_update_rms` scalar. It sits near or below 1 while v tracks g^2; a sudden gradient
the estimate has not seen (v is a slow average, beta2 = 0.95-0.999) pushes it far above 1, and the
update with it: Wortsman et al. 2023 ("Stable and low-precision training for large-scale
vision-language models") show this RMS spiking a few steps before loss spikes, fixed by a lower beta2
or update clipping (AdamW-Adafactor). One fused pass over the gradients per step.
"""

from __future__ import annotations

import torch

ADAM_UPDATE_RMS = "adam_update_rms"


class AdamLagRecorder:
    """recorder = AdamLagRecorder(optimizer, run); ... recorder.close()."""

    def __init__(self, optimizer, run):
        self.run = run
        self._steps = 0
        self._handle = optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer, args, kwargs) -> None:
        worst = 0.0
        with torch.no_grad():
            for group in optimizer.param_groups:
                beta2 = group.get("betas", (0.9, 0.999))[1]
                for p in group["params"]:
                    state = optimizer.state.get(p) or {}
                    v = state.get("exp_avg_sq")
                    if p.grad is None or v is None or p.dim() < 2:
                        continue
                    step = float(state.get("step", 0))
                    if step < 1:
                        continue
                    # The gradient's energy over what the bias-corrected second moment expects, per
                    # weight matrix (a ratio of sums: rows an embedding rarely sees, with v ~ 0, do
                    # not dominate it as they would an element-wise RMS).
                    expected = float(v.float().sum()) / (1 - beta2 ** step)
                    if expected > 0:
                        worst = max(worst, (float(p.grad.detach().float().pow(2).sum()) / expected) ** 0.5)
        if worst > 0:
            probe = getattr(self.run, "probe", None)
            step = getattr(probe, "step", None)
            self.run.log(int(step) if step is not None else self._steps, **{ADAM_UPDATE_RMS: worst})
        self._steps += 1

    def close(self) -> None:
        self._handle.remove()

"""Statistics of one module's output (forward hooks), accumulated over the micro-batches of a step.

Saturation and dead-unit tests depend on the module type: only outputs of modules with rails
(sigmoid, tanh, ...) can saturate, and only ReLU-like outputs can be dead.
"""

from __future__ import annotations

import torch

from . import tensor_stats

# Output ranges that count as "at the rails" (within 1% of the output range of the unit).
# AUTOTRAINER (Zhang et al., ICSE 2021) flags sigmoid outputs < 0.01 or > 0.99 as saturated.
SATURATION_BOUNDS = {
    "Sigmoid": (0.01, 0.99),
    "Hardsigmoid": (0.01, 0.99),
    "Tanh": (-0.99, 0.99),
    "Hardtanh": (-0.99, 0.99),
    "Softsign": (-0.99, 0.99),
}
DEAD_UNIT_TYPES = frozenset({"ReLU", "ReLU6", "RReLU", "Threshold"})


def first_tensor(output):
    """The tensor a module produced: LSTM returns (output, (h, c)); take the first tensor found."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def unit_dim(y: torch.Tensor) -> int:
    """The dimension that indexes units: channels for conv maps (N, C, ...), else the last one."""
    return 1 if y.dim() >= 3 and y.dim() <= 5 and y.shape[1] != y.shape[-1] else y.dim() - 1


class ActivationAccumulator:
    """Running sums for one module's outputs within one optimizer step."""

    __slots__ = ("module_type", "sums", "alive", "count")

    def __init__(self, module_type: str):
        self.module_type = module_type
        self.sums = None  # tensor [8]: sum, sumsq, zeros, saturated, numel, min, max, nonfinite
        self.alive = None
        self.count = 0

    def add(self, output) -> None:
        y = first_tensor(output)
        if y is None or not y.is_floating_point() or y.numel() == 0:
            return
        y = y.detach()
        total = y.sum()
        sumsq = torch.linalg.vector_norm(y).square()
        zeros = (y == 0).sum()
        bounds = SATURATION_BOUNDS.get(self.module_type)
        if bounds is not None:
            saturated = ((y <= bounds[0]) | (y >= bounds[1])).sum()
        else:
            saturated = torch.zeros((), device=y.device)
        lo, hi = torch.aminmax(y)
        counts = tensor_stats.nonfinite_counts([y], sumsq.reshape(1))
        vec = torch.stack(
            [total.float(), sumsq.float(), zeros.float(), saturated.float(),
             torch.tensor(float(y.numel()), device=y.device), lo.float(), hi.float(), counts.sum()]
        )
        if self.module_type in DEAD_UNIT_TYPES and y.dim() >= 1:
            dim = unit_dim(y)
            alive = (y > 0).movedim(dim, -1).reshape(-1, y.shape[dim]).any(dim=0)
            same = self.alive is not None and self.alive.shape == alive.shape
            self.alive = (self.alive | alive) if same else alive
        if self.sums is None:
            self.sums = vec
        else:
            prev = self.sums
            self.sums = torch.cat(
                [prev[:5] + vec[:5], torch.minimum(prev[5:6], vec[5:6]), torch.maximum(prev[6:7], vec[6:7]),
                 prev[7:] + vec[7:]]
            )
        self.count += 1

    def result(self) -> torch.Tensor | None:
        """[STAT_FIELDS] float32 on the device, or None if nothing was seen this step.

        NaN/Inf are reported together in nan_count (inf_count 0): activations only need to say
        "non-finite here", and one count saves a pass per module.
        """
        if self.sums is None:
            return None
        s = self.sums
        n = s[4].clamp(min=1)
        mean = s[0] / n
        var = ((s[1] - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)
        nan = torch.tensor(float("nan"), device=s.device)
        saturated = s[3] / n if self.module_type in SATURATION_BOUNDS else nan
        dead = (1.0 - self.alive.float().mean()) if self.alive is not None else nan
        return torch.stack(
            [s[1].sqrt(), mean, var.sqrt(), s[5], s[6], s[7], torch.zeros_like(s[7]), s[2] / n, saturated, dead]
        )

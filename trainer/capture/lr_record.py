"""The optimizer's own learning rates, recorded as scalars so schedules need no logging by the user.

After each counted optimizer step the probe hands the optimizer to `LearningRateRecorder.after_step`;
it writes every param group's lr (schema.optimizer_lr_name) at a logged step and at any step where
a group's lr changed, so a constant lr costs one record per logged step and a schedule (warmup,
cosine decay, step decay) is seen at every step where it moves.
"""

from __future__ import annotations

import math
import time

import torch

from ..runlog import schema
from .optimizer_record import describe_optimizer


def group_lrs(optimizer) -> list[float]:
    """Each param group's lr as a float (NaN where it is missing or not a number)."""
    out = []
    for group in getattr(optimizer, "param_groups", ()):
        value = group.get("lr")
        if isinstance(value, torch.Tensor):
            # A tensor lr (torch.compile-friendly optimizers) lives on the CPU; reading a device
            # tensor would synchronise, so it is skipped.
            value = value.item() if value.device.type == "cpu" and value.numel() == 1 else math.nan
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


class LearningRateRecorder:
    """Writes lr scalars for one run; `after_step(optimizer, step, logged)` once per counted step."""

    def __init__(self, writer):
        self.writer = writer
        self._last: list[float] | None = None
        self._described = False

    def after_step(self, optimizer, step: int, logged: bool) -> None:
        if not self._described and hasattr(self.writer, "set_meta"):
            # Once: the optimizer's class and hyperparameters (remedies are written for them).
            self._described = True
            self.writer.set_meta(optimizer=describe_optimizer(optimizer))
        lrs = group_lrs(optimizer)
        if not lrs:
            return
        changed = self._last is None or len(lrs) != len(self._last) or any(
            not (a == b or (math.isnan(a) and math.isnan(b))) for a, b in zip(lrs, self._last)
        )
        if not (changed or logged):
            return
        self._last = lrs
        self.writer.add_scalars(step, {schema.optimizer_lr_name(i): lr for i, lr in enumerate(lrs)}, time.time())

"""A logged step's state between the gradients' measurement and the record (typed, one class per
capture part): what `Probe` keeps until every optimizer has stepped."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WholeGradients:
    """A logged step's gradients taken from whole tensors (one process, DDP): Measurer groups
    (copied into the flat buffer, or measured in place on the host path)."""

    present: list[tuple[int, torch.Tensor]]  # (parameter index, gradient) of those that have one
    groups: list  # multi_tensor.GroupStep per (device, dtype)
    held_types: dict[str, str]  # activation outputs held until the step: name -> module type


@dataclass
class ShardedGradients:
    """A logged step's gradients taken from local shards (sharded.py), still to be combined."""

    present: list  # probe.WatchedParam of those that have a gradient
    moments: torch.Tensor | None  # [T, 6] local partial moments (sharded.local_moments)
    nonfinite: torch.Tensor | None  # [T, 2] local NaN/Inf counts
    hist: torch.Tensor | None  # [T, HIST_LEN] local sample counts
    sampled: list[int]  # local sample sizes
    old_samples: list | None  # the weights' samples before the update (update ratios)


@dataclass
class UnfinishedRecord:
    """A logged step waiting for every optimizer to step before its weights are measured."""

    step: int
    gradients: WholeGradients | ShardedGradients
    acts: dict  # layer name -> ActivationAccumulator of outputs measured per call

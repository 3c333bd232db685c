"""The optimizer's class and hyperparameters per param group, written once to the run's meta, so the
diagnosis writes remedies for the optimizer the user has (AdamW with its betas and weight decay, a
OneCycle schedule's max_lr) rather than a generic SGD line.

`describe_optimizer` is plain data: numbers, booleans, strings and tuples of numbers only (tensor
hyperparameters on the CPU are read as numbers; device tensors are skipped, reading them would sync).
"""

from __future__ import annotations

import math
import numbers

import torch

# Param-group keys that are not hyperparameters (or are too big to keep).
SKIPPED_KEYS = ("params", "param_names")


def _plain(value):
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu" or value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        value = float(value) if isinstance(value, float) else int(value)
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return items if all(isinstance(v, (int, float)) for v in items) else None
    return None


def describe_optimizer(optimizer) -> dict:
    """{"class", "module", "param_groups": [{hyperparameter: value, "n_params": k}]}."""
    groups = []
    for group in getattr(optimizer, "param_groups", ()):
        described = {}
        for key, value in group.items():
            if key in SKIPPED_KEYS:
                continue
            plain = _plain(value)
            if plain is not None:
                described[key] = plain
        described["n_params"] = len(group.get("params", ()))
        groups.append(described)
    cls = type(optimizer)
    return {"class": cls.__name__, "module": cls.__module__, "param_groups": groups}

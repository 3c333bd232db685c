"""Counts the aten ops a piece of training code dispatches, the way a GPU would launch them.

A GPU step's cost in short steps is the number of kernels launched. On the CPU that number is
read from the profiler's event tree: top-level aten ops (no aten op above them), so a
`_foreach_*` op counts once although the CPU runs it as a loop, and view-only ops (which launch
no kernel) are left out. Used by the dispatch-count test and bench/overhead.py.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

# Ops that only make a new view of existing memory (or an uninitialised buffer): no kernel.
VIEW_ONLY_OPS = frozenset({
    "view", "reshape", "_reshape_alias", "flatten", "as_strided", "select", "slice", "unsqueeze",
    "squeeze", "expand", "t", "transpose", "permute", "detach", "alias", "split", "chunk", "unbind",
    "narrow", "lift_fresh",
})


def _is_view_only(op: str) -> bool:
    return op in VIEW_ONLY_OPS or op.startswith("empty") or op.startswith("_unsafe_view")


def top_level_ops(events) -> Counter:
    """Counter of top-level, kernel-launching aten op names among profiler events."""
    aten = [e for e in events if e.name.startswith("aten::")]
    counts: Counter = Counter()
    for event in aten:
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is not None:
            continue
        op = event.name[len("aten::"):]
        if not _is_view_only(op):
            counts[op] += 1
    return counts


def count_ops(fn, *args, **kwargs) -> tuple[Counter, object]:
    """(top-level op counts, fn's result) of one call of fn, profiled on the CPU."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        result = fn(*args, **kwargs)
    return top_level_ops(prof.events()), result


def step_counts(train_step, steps: int) -> list[int]:
    """Ops dispatched by each of `steps` consecutive calls of train_step(i)."""
    totals = []
    for i in range(steps):
        counts, _ = count_ops(train_step, i)
        totals.append(sum(counts.values()))
    return totals


__all__ = ["VIEW_ONLY_OPS", "count_ops", "step_counts", "top_level_ops", "torch"]

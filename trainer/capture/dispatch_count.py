"""Counts the aten ops a piece of training code dispatches, the way a GPU would launch them.

A GPU step's cost in short steps is the number of kernels launched. On the CPU that number is
read from the profiler's events: top-level aten ops (no aten op above them), so a `_foreach_*` op
counts once although the CPU runs it as a loop, and view-only ops (which launch no kernel) are
left out. Used by the dispatch-count test and bench/overhead.py.

Nesting is read straight from the raw kineto events' time intervals, per thread, by the rule
torch's own event tree uses (`EventList._populate_cpu_children`: a child's [start, end) lies
inside its parent's). Building that tree through `prof.events()` parses every event into a
Python object first and took about half of the dispatch-count tests' time.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# Ops that only make a new view of existing memory (or an uninitialised buffer): no kernel.
VIEW_ONLY_OPS = frozenset({
    "view", "reshape", "_reshape_alias", "flatten", "as_strided", "select", "slice", "unsqueeze",
    "squeeze", "expand", "t", "transpose", "permute", "detach", "alias", "split", "chunk", "unbind",
    "narrow", "lift_fresh",
})


def _is_view_only(op: str) -> bool:
    return op in VIEW_ONLY_OPS or op.startswith("empty") or op.startswith("_unsafe_view")


def _count_top_level(intervals) -> Counter:
    """Counter of top-level aten op names among (thread, start, end, name) CPU intervals: an aten
    op counts when no aten op encloses it (other ranges - autograd nodes, record_function - may)."""
    counts: Counter = Counter()
    for _thread, events in groupby(sorted(intervals, key=lambda e: e[0]), key=lambda e: e[0]):
        # open[i] = (end, is under or is an aten op) of the i-th enclosing range still open
        open_ranges: list[tuple[int, bool]] = []
        for _, start, end, name in sorted(events, key=lambda e: (e[1], -e[2])):
            while open_ranges and (start >= open_ranges[-1][0] or end > open_ranges[-1][0]):
                open_ranges.pop()
            under_aten = bool(open_ranges) and open_ranges[-1][1]
            is_aten = name.startswith("aten::")
            if is_aten and not under_aten:
                op = name[len("aten::"):]
                if not _is_view_only(op):
                    counts[op] += 1
            open_ranges.append((end, under_aten or is_aten))
    return counts


def top_level_ops(events) -> Counter:
    """Counter of top-level, kernel-launching aten op names among FunctionEvents (prof.events())."""
    return _count_top_level(
        (e.thread, e.time_range.start, e.time_range.end, e.name)
        for e in events if not e.is_async and e.device_type == DeviceType.CPU)


def count_ops(fn, *args, **kwargs) -> tuple[Counter, object]:
    """(top-level op counts, fn's result) of one call of fn, profiled on the CPU."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        result = fn(*args, **kwargs)
    raw = prof.profiler.kineto_results.events()
    return _count_top_level(
        (e.start_thread_id(), e.start_ns(), e.end_ns(), e.name())
        for e in raw if not e.is_async() and e.device_type() == DeviceType.CPU), result


def step_counts(train_step, steps: int) -> list[int]:
    """Ops dispatched by each of `steps` consecutive calls of train_step(i)."""
    totals = []
    for i in range(steps):
        counts, _ = count_ops(train_step, i)
        totals.append(sum(counts.values()))
    return totals


__all__ = ["VIEW_ONLY_OPS", "count_ops", "step_counts", "top_level_ops", "torch"]

"""Kernel-launching ops a logged and an unlogged step add, counted with torch.profiler on the CPU
as a GPU would launch them (trainer/capture/dispatch_count.py): at most 4 per parameter tensor for
a logged step, at most 4 for an unlogged step (the every-step sentinels), on models (a), (b) and a
GPT-2-style model (148 tensors) - on the CPU path and on the accelerator path forced on the CPU.
Counts are deterministic; no time is measured."""

from __future__ import annotations

import pytest

from gradwatch.bench_models import capture_extra_ops

EVERY = 10


@pytest.mark.parametrize("accelerator_path", [False, True])
@pytest.mark.parametrize("key", ["text", "deep", "gpt2-narrow"])
def test_capture_ops_per_tensor_and_per_unlogged_step(tmp_path, key, accelerator_path):
    counts = capture_extra_ops(key, tmp_path, EVERY, accelerator_path)
    logged, unlogged, n_tensors, extra = counts["logged"], counts["unlogged"], counts["tensors"], counts["per_step"]
    assert n_tensors == {"text": 13, "deep": 42, "gpt2-narrow": 148}[key]
    assert max(extra[2:]) == min(extra[2:]) == unlogged, extra  # deterministic, same every unlogged step
    assert 0 < unlogged <= 4, extra
    assert 0 < logged <= 4 * n_tensors, (logged / n_tensors, extra)

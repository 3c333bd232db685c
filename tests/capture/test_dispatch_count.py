"""Kernel-launching ops a logged and an unlogged step add, counted with torch.profiler on the CPU
as a GPU would launch them (trainer/capture/dispatch_count.py): at most 4 per parameter tensor for
a logged step on the accelerator path (the flat multi-tensor buffer a GPU runs, forced on the
CPU), and for an unlogged step (every parameter's gradient norm) at most 4 on the accelerator path
(one fused `_foreach_norm` and a stack) and one per parameter tensor (+ 4) on the CPU's host path
(each norm taken in backward while the gradient is in cache), on models (a), (b) and a GPT-2-style
model (148 tensors).

On the CPU itself a dispatched op costs microseconds and a pass over a model-sized buffer
milliseconds, so the host path reads every tensor in place with three reductions (sum, dot,
aminmax) and copies nothing: its test counts those passes and asserts no copy. Counts are
deterministic; no time is measured."""

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
    assert 0 < unlogged <= (4 if accelerator_path else n_tensors + 4), extra
    by_op = counts["by_op"]
    if accelerator_path:
        assert 0 < logged <= 4 * n_tensors, (logged / n_tensors, extra)
        return
    # Host path: one sum, one dot and one aminmax per measured tensor (gradients, weights, held
    # activation outputs), nothing copied into a buffer; a second dot only for the few tensors
    # whose mean dwarfs their spread (exact centred moments). (Outputs measured per call in the
    # forward hook - GELU's, not held - add sums of their own.)
    measured = by_op["aminmax"]
    assert measured >= 2 * n_tensors, by_op
    assert measured <= by_op["dot"] <= measured + n_tensors // 4, by_op
    assert by_op["sum"] >= measured, by_op
    assert not any(op in by_op for op in ("_foreach_copy_", "copy_", "index_select")), by_op

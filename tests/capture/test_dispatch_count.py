"""Kernel-launching ops a logged and an unlogged step add, counted with torch.profiler on the CPU
as a GPU would launch them (trainer/capture/dispatch_count.py): at most 4 per parameter tensor for
a logged step on the accelerator path (the flat multi-tensor buffer a GPU runs, forced on the
CPU), and for an unlogged step (every parameter's gradient norm) at most 4 on the accelerator path
(one fused `_foreach_norm` and a stack) and one per parameter tensor (+ 4) on the CPU's host path
(each norm taken in backward while the gradient is in cache), on models (a), (b) and a GPT-2-style
model (148 tensors).

The fast lane counts on narrow copies of the three models (gradwatch.bench_models.NARROW: the same
modules and tensors at small widths), since the counts follow the tensors, not their sizes; the
slow lane runs models (a) and (b) at full size and checks the narrow copies count the same.

On the CPU itself a dispatched op costs microseconds and a pass over a model-sized buffer
milliseconds, so the host path reads every tensor in place with three reductions (sum, dot,
aminmax) and copies nothing: its test counts those passes and asserts no copy. Counts are
deterministic; no time is measured."""

from __future__ import annotations

import pytest
import torch

from gradwatch.bench_models import NARROW, capture_extra_ops

EVERY = 10
TENSORS = {"text": 13, "deep": 42, "gpt2": 148}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Counts do not depend on threads; one thread keeps a loaded machine's steps short."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_counts(counts: dict, n_expected: int, accelerator_path: bool) -> None:
    logged, unlogged, n_tensors, extra = counts["logged"], counts["unlogged"], counts["tensors"], counts["per_step"]
    assert n_tensors == n_expected
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


@pytest.mark.parametrize("accelerator_path", [False, True])
@pytest.mark.parametrize("model", ["text", "deep", "gpt2"])
def test_capture_ops_per_tensor_and_per_unlogged_step(tmp_path, model, accelerator_path):
    counts = capture_extra_ops(NARROW[model], tmp_path, EVERY, accelerator_path)
    check_counts(counts, TENSORS[model], accelerator_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["text", "deep"])
def test_full_size_models_count_as_their_narrow_copies(tmp_path, model):
    """The full-size models pass the same bounds, and on the accelerator path (whose ops never
    depend on values) dispatch exactly what their narrow copies do."""
    for accelerator_path in (False, True):
        full = capture_extra_ops(model, tmp_path / f"full-{accelerator_path}", EVERY, accelerator_path)
        check_counts(full, TENSORS[model], accelerator_path)
    narrow = capture_extra_ops(NARROW[model], tmp_path / "narrow", EVERY, True)
    assert (full["logged"], full["unlogged"], full["by_op"]) == (narrow["logged"], narrow["unlogged"], narrow["by_op"])

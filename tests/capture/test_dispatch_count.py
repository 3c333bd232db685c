"""Kernel-launching ops a logged and an unlogged step add, counted with torch.profiler on the CPU
as a GPU would launch them (trainer/capture/dispatch_count.py): at most 4 per parameter tensor for
a logged step, at most 4 for an unlogged step (the every-step sentinels), on models (a), (b) and a
GPT-2-style model (148 tensors) - on the CPU path and on the accelerator path forced on the CPU.
Counts are deterministic; no time is measured."""

from __future__ import annotations

import statistics

import pytest
import torch

from gradwatch.bench_models import MODELS, loss_of
from gradwatch.trainer.capture.dispatch_count import step_counts
from gradwatch.trainer.run import Run

EVERY = 10


def _trainer(key, tmp_path=None, accelerator_path=False):
    builder, batch = MODELS[key]
    torch.manual_seed(0)
    model = builder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = batch(torch.Generator().manual_seed(1))
    run = None
    if tmp_path is not None:
        run = Run(tmp_path, name=key)
        probe = run.watch(model, every=EVERY)
        if accelerator_path:
            probe._measurer.host_checks = False  # count NaN/Inf on the device, as a GPU does

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, data)
        loss.backward()
        opt.step()
        if run is not None:
            run.log(i, train_loss=loss.item())
        else:
            loss.item()

    return step, run, sum(1 for _ in model.parameters())


def extra_ops(key, tmp_path, accelerator_path=False):
    """(extra ops of the logged step, per unlogged step) over one whole period after a warm-up one."""
    base, _, n_tensors = _trainer(key)
    watched, run, _ = _trainer(key, tmp_path, accelerator_path)
    for i in range(EVERY):  # first period: layouts, caches, first-call costs
        base(i)
        watched(i)
    base_counts = step_counts(lambda i: base(EVERY + i), EVERY)
    watched_counts = step_counts(lambda i: watched(EVERY + i), EVERY)
    run.finish()
    extra = [w - b for w, b in zip(watched_counts, base_counts)]
    unlogged = statistics.median(extra[2:])  # step 0 logs; its record is finished in step 1
    return sum(extra) - (EVERY - 1) * unlogged, unlogged, n_tensors, extra


@pytest.mark.parametrize("accelerator_path", [False, True])
@pytest.mark.parametrize("key", ["text", "deep", "gpt2-narrow"])
def test_capture_ops_per_tensor_and_per_unlogged_step(tmp_path, key, accelerator_path):
    logged, unlogged, n_tensors, extra = extra_ops(key, tmp_path, accelerator_path)
    assert n_tensors == {"text": 13, "deep": 42, "gpt2-narrow": 148}[key]
    assert max(extra[2:]) == min(extra[2:]) == unlogged, extra  # deterministic, same every unlogged step
    assert 0 < unlogged <= 4, extra
    assert 0 < logged <= 4 * n_tensors, (logged / n_tensors, extra)

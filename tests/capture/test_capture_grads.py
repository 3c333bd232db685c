"""Gradients are recorded as the optimizer sees them: accumulated over micro-batches, unscaled by
GradScaler, and after the user's clip_grad_norm_ (the clipped values)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, schema

# Value-checked on the host path and on the accelerator path a GPU runs (conftest.py).
pytestmark = pytest.mark.usefixtures("capture_path")


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def grad_rows(run_path):
    with RunReader(run_path) as reader:
        df, _ = reader.layer_stats(kinds=("grad",))
        steps, _ = reader.steps()
    return {(r["step"], r["name"]): r for r in df.to_dict("records")}, steps["step"].tolist()


def assert_grads_recorded(rows, step, grads):
    for name, g in grads.items():
        g = g.double()
        row = rows[(step, name)]
        assert row["norm"] == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-5), name
        assert row["mean"] == pytest.approx(g.mean().item(), rel=1e-4, abs=1e-9), name
        assert row["min"] == pytest.approx(g.min().item(), rel=1e-6), name
        assert row["max"] == pytest.approx(g.max().item(), rel=1e-6), name


def test_gradient_accumulation_records_one_record_per_optimizer_step_with_summed_grads(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with Run(tmp_path, name="accum") as run:
        run.watch(model, every=1)
        for _ in range(4):
            opt.zero_grad()
            micro = []
            for _ in range(3):
                loss = model(torch.randn(5, 6)).pow(2).mean() / 3
                loss.backward()
                micro.append({n: p.grad.clone() for n, p in model.named_parameters()})
            opt.step()
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
            # The accumulated gradient is not just the last micro-batch's share.
            assert not torch.allclose(seen[-1]["0.weight"], micro[0]["0.weight"])
    rows, steps = grad_rows(run.path)
    assert steps == [0, 1, 2, 3]
    assert len(rows) == 4 * 4  # four parameter tensors, one record each per optimizer step
    for step, grads in enumerate(seen):
        assert_grads_recorded(rows, step, grads)


def test_gradscaler_records_unscaled_gradients(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scale = 2.0**16
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
    seen = []
    with Run(tmp_path, name="amp") as run:
        run.watch(model, every=1)
        for _ in range(3):
            opt.zero_grad()
            loss = model(torch.randn(8, 6)).pow(2).mean()
            scaler.scale(loss).backward()
            scaled_norm = torch.linalg.vector_norm(model[0].weight.grad).item()
            scaler.step(opt)  # unscales p.grad in place, then steps
            scaler.update()
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
            assert scaled_norm == pytest.approx(scale * torch.linalg.vector_norm(seen[-1]["0.weight"]).item(), rel=1e-4)
    rows, steps = grad_rows(run.path)
    assert steps == [0, 1, 2]
    for step, grads in enumerate(seen):
        assert_grads_recorded(rows, step, grads)


def test_clip_grad_norm_before_step_records_the_clipped_gradients(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    max_norm = 1e-3
    seen, raw_norms = [], []
    with Run(tmp_path, name="clip") as run:
        run.watch(model, every=1)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).sum().backward()
            raw_norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm).item())
            opt.step()
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert min(raw_norms) > 100 * max_norm  # clipping really changed the gradients
    rows, _ = grad_rows(run.path)
    for step, grads in enumerate(seen):
        assert_grads_recorded(rows, step, grads)
        total = sum(rows[(step, n)]["norm"] ** 2 for n in grads) ** 0.5
        assert total == pytest.approx(max_norm, rel=1e-3)


def test_every_n_records_only_every_nth_optimizer_step(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}
    with Run(tmp_path, name="every3") as run:
        run.watch(model, every=3)
        for step in range(8):
            opt.zero_grad()
            model(torch.randn(4, 6)).sum().backward()
            opt.step()
            seen[step] = {n: p.grad.clone() for n, p in model.named_parameters()}
    rows, steps = grad_rows(run.path)
    assert steps == [0, 3, 6]
    for step in steps:
        assert_grads_recorded(rows, step, seen[step])
    with RunReader(run.path) as reader:
        acts, _ = reader.layer_stats(kinds=("activation",))
    assert sorted(set(acts["step"])) == [0, 3, 6]


def test_two_optimizers_each_stepping_part_of_the_model_record_both_updates(tmp_path):
    """E.g. SparseAdam for an embedding and Adam for the rest: one training step is both
    optimizer steps, and each parameter's update-to-weight ratio reflects its own update."""
    model = make_model()
    opt_a = torch.optim.SGD(model[0].parameters(), lr=0.1)
    opt_b = torch.optim.Adam(model[2].parameters(), lr=0.1)
    seen = []
    with Run(tmp_path, name="two-opts") as run:
        run.watch(model, every=1)
        for _ in range(2):
            opt_a.zero_grad()
            opt_b.zero_grad()
            model(torch.randn(5, 6)).pow(2).mean().backward()
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            opt_a.step()
            opt_b.step()
            seen.append({n: (torch.linalg.vector_norm(p.detach() - before[n]) / torch.linalg.vector_norm(p.detach())).item()
                         for n, p in model.named_parameters()})
    rows, steps = grad_rows(run.path)
    assert steps == [0, 1]  # one record per training step, not per optimizer
    with RunReader(run.path) as reader:
        weights, _ = reader.layer_stats(kinds=("weight",))
    for step, ratios in enumerate(seen):
        for name, want in ratios.items():
            assert want > 1e-3
            got = weights[(weights["step"] == step) & (weights["name"] == name)]["update_ratio"].item()
            assert got == pytest.approx(want, rel=1e-4), f"step {step} {name}: recorded {got}, real {want}"


def test_gradients_zeroed_in_place_after_the_step_keep_their_recorded_histograms(tmp_path):
    """zero_grad(set_to_none=False) zeroes gradients in place before the record is finished (at
    the next forward pass); the histograms must still be those of the gradients that stepped."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with Run(tmp_path, name="inplace-zero") as run:
        run.watch(model, every=1)
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            model(torch.randn(5, 6)).pow(2).mean().backward()
            opt.step()
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
    with RunReader(run.path) as reader:
        for name in ("0.bias", "2.bias", "0.weight"):
            steps, counts = reader.histograms(name, "grad")
            for step, row in zip(steps.tolist(), counts):
                grad = seen[step][name]
                nonzero = int((grad != 0).sum())
                assert row.sum() == grad.numel(), name
                # All-zero histograms would put every element on the zero bin.
                assert row.sum() - row[schema.HIST_ZERO_INDEX] == nonzero, (name, step)

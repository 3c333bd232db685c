"""Small CPU activation outputs are held until the optimizer step and measured in stacks: the
stacked measurement equals the per-call one, and outputs changed in place are not misread."""

from __future__ import annotations

import pytest
import torch

from gradwatch.trainer.capture import activation_stats as acts


def per_call(module_type, channels_first, ys):
    acc = acts.ActivationAccumulator(module_type, channels_first)
    for y in ys:
        acc.add(y)
    return acc


def stacked(module_type, channels_first, ys):
    acc = acts.ActivationAccumulator(module_type, channels_first)
    deferred = acts.DeferredOutputs()
    for y in ys:
        deferred.add(acc, y.requires_grad_())
    deferred.flush()
    return acc


def outputs(kind, shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    x[0, :2] = 0.0
    y = {"ReLU": torch.relu(x - 1), "Sigmoid": torch.sigmoid(x), "Tanh": torch.tanh(x)}[kind]
    return y


@pytest.mark.parametrize("kind", ["ReLU", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("shape,channels_first", [((32, 48), False), ((4, 6, 5, 5), True), ((3, 7, 16), False)])
def test_stacked_measurement_equals_per_call_measurement(kind, shape, channels_first):
    ys = [outputs(kind, shape, seed) for seed in range(3)]
    ys[1] = ys[1] * 0 + (0.5 if kind == "Sigmoid" else 1e-3)  # constant: the variance would cancel
    ys[1][0].view(-1)[0] += 1e-4
    ref, got = per_call(kind, channels_first, ys), stacked(kind, channels_first, ys)
    assert torch.allclose(got.sums, ref.sums, rtol=1e-5, atol=1e-6), (got.sums, ref.sums)
    assert got.count == ref.count == 3
    if kind == "ReLU":
        assert torch.equal(got.alive, ref.alive)
    rows = acts.finish_activations([got]), acts.finish_activations([ref])
    assert torch.allclose(rows[0], rows[1], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_non_finite_outputs_are_counted_in_stacks():
    ys = [outputs("Tanh", (8, 8), s) for s in range(2)]
    ys[0][3, 3] = float("nan")
    got = stacked("Tanh", False, ys)
    assert got.sums[7] == 1


def test_an_output_changed_in_place_after_the_hook_is_not_measured():
    acc = acts.ActivationAccumulator("ReLU")
    deferred = acts.DeferredOutputs()
    kept, changed = outputs("ReLU", (4, 5), 0), outputs("ReLU", (4, 5), 1)
    deferred.add(acc, kept)
    deferred.add(acc, changed)
    changed.add_(100.0)  # the forward's values are gone
    deferred.flush()
    assert acc.count == 1 and acc.sums[0] == pytest.approx(float(kept.sum()), rel=1e-6)


def test_many_micro_batches_are_measured_within_the_memory_budget(monkeypatch):
    monkeypatch.setattr(acts, "DEFER_BUDGET", 100)  # flush every few outputs
    ys = [outputs("Sigmoid", (6, 7), s) for s in range(9)]
    acc = acts.ActivationAccumulator("Sigmoid")
    deferred = acts.DeferredOutputs()
    for y in ys:
        deferred.add(acc, y.requires_grad_())
        assert deferred._numel <= 100
    deferred.flush()
    ref = per_call("Sigmoid", False, ys)
    assert torch.allclose(acc.sums, ref.sums, rtol=1e-5, atol=1e-6)


def test_only_small_cpu_outputs_of_output_saving_modules_with_grad_are_deferred():
    relu, gelu = acts.ActivationAccumulator("ReLU"), acts.ActivationAccumulator("GELU")
    y = torch.ones(10, 10, requires_grad=True) * 1.0
    assert acts.deferrable(relu, y)
    assert not acts.deferrable(gelu, y)  # GELU saves its input: its output may change in place
    assert not acts.deferrable(relu, y.detach())  # no autograd to refuse an in-place change
    assert not acts.deferrable(relu, torch.ones(acts.DEFER_NUMEL + 1, requires_grad=True) * 1.0)

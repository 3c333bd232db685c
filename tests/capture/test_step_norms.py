"""Every parameter's gradient norm on every optimizer step, logged or not: taken in backward and
re-measured at the step when something changed the gradient since (clipping, unscaling), in
optimizer loops and `run.step()` loops alike; stored as an envelope, the recent steps and windows
around anomalies, so a spike between logged steps is dated to its step and its layer."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
import torch
from torch import nn

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, schema
from gradwatch.trainer.runlog import step_norms as series


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 2))


def norms_of(model):
    return {n: torch.linalg.vector_norm(p.grad.double()).item() if p.grad is not None else math.nan
            for n, p in model.named_parameters()}


def read(path):
    with RunReader(path) as reader:
        return reader.step_norms()


def assert_rows_equal(norms, seen):
    exact = norms.exact()
    by_step = {int(s): i for i, s in enumerate(exact.steps)}
    for step, want in seen.items():
        row = by_step[step]
        for j, name in enumerate(exact.names):
            assert exact.norm_max[row, j] == pytest.approx(want[name], rel=1e-6), (step, name)


@pytest.mark.parametrize("at_step", [False, True], ids=["in-backward", "fused-at-step"])
@pytest.mark.parametrize("pattern", ["plain", "clipped", "accumulated", "scaled", "zeroed-in-place"])
def test_every_step_norms_equal_torch_as_the_optimizer_sees_them(tmp_path, pattern, at_step):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if pattern == "scaled" else None
    seen = {}
    with Run(tmp_path, name=pattern) as run:
        probe = run.watch(model, every=10)
        if at_step:  # the path an accelerator runs
            probe._grad_norms.measure_at_step()
        for step in range(23):
            opt.zero_grad(set_to_none=pattern != "zeroed-in-place")
            for _ in range(3 if pattern == "accumulated" else 1):
                loss = model(torch.randn(8, 6)).pow(2).mean()
                (scaler.scale(loss) if scaler else loss).backward()
            if pattern == "clipped":
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            if scaler:
                scaler.unscale_(opt)
            seen[step] = norms_of(model)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
    norms = read(run.path)
    assert norms.names == tuple(n for n, _ in model.named_parameters())
    assert norms.layers == ("0", "0", "2", "2", "4", "4")
    assert norms.exact().steps.tolist() == list(range(23))
    assert_rows_equal(norms, seen)


def test_hand_written_updates_get_every_step_norms_through_run_step(tmp_path):
    model = make_model()
    seen = {}
    with Run(tmp_path, name="manual") as run:
        run.watch(model, every=10)
        for step in range(15):
            model.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            seen[step] = norms_of(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-0.05)
            run.step()
    norms = read(run.path)
    assert norms.exact().steps.tolist() == list(range(15))
    assert_rows_equal(norms, seen)
    with RunReader(run.path) as reader:
        total = reader.scalar_series(schema.SENTINEL_GRAD_NORM)
    assert total["step"].tolist() == list(range(15))


def test_a_parameter_without_gradient_is_nan_and_a_nan_gradient_is_counted(tmp_path):
    model = make_model()
    model[0].bias.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    with Run(tmp_path, name="missing") as run:
        run.watch(model, every=100)
        for step in range(6):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            if step == 4:
                model[2].weight.grad[0, 0] = float("inf")
            opt.step()
    norms = read(run.path).exact()
    j_frozen, j_bad = norms.names.index("0.bias"), norms.names.index("2.weight")
    assert np.isnan(norms.norm_max[:, j_frozen]).all()
    assert norms.nonfinite[:, j_bad].tolist() == [0, 0, 0, 0, 1, 0]
    assert norms.nonfinite[:4].sum() == 0 and norms.nonfinite[4].sum() == 1  # (step 5 follows an Inf update)
    assert np.isinf(norms.norm_max[4, j_bad])


def test_a_spike_on_an_unlogged_step_survives_a_long_run_with_its_step_and_layer(tmp_path):
    """1,200 steps at every=50: only the last RECENT_STEPS exact rows stay, plus the window around
    the spike at step 333 (the middle layer's gradient x1000); the envelope covers every step."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with Run(tmp_path, name="long") as run:
        run.watch(model, every=50)
        for step in range(1200):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            if step == 333:
                model[2].weight.grad.mul_(1000.0)
            opt.step()
    norms = read(run.path)
    exact = norms.exact()
    steps = set(exact.steps.tolist())
    assert 333 in steps and set(range(1200 - series.RECENT_STEPS + 1, 1200)) <= steps
    assert set(range(333 - series.WINDOW_BEFORE, 333 + series.WINDOW_AFTER + 1)) <= steps
    assert len(steps) < 1200 - 400  # the rest is only in the envelope
    j = exact.names.index("2.weight")
    row = exact.steps.tolist().index(333)
    spike = exact.norm_max[row]
    ratios = spike / np.median(exact.norm_max, axis=0)
    assert int(np.argmax(ratios)) == j and ratios[j] > 100
    # The envelope: every step is covered by exact rows or blocks, and a block holding 333 keeps its max.
    covered = set(steps)
    for s, span in zip(norms.steps.tolist(), norms.span.tolist()):
        covered |= set(range(s - span + 1, s + 1))
    assert covered == set(range(1200))
    with sqlite3.connect(run.path / schema.DB_FILENAME) as conn:
        blocks = conn.execute("SELECT step, span, norm_max FROM step_norms WHERE span > 1").fetchall()
    assert blocks and all(span == 50 for _, span, _ in blocks[:-1])
    holding = [np.frombuffer(blob, "<f8")[j] for s, span, blob in blocks if s - span < 333 <= s]
    assert holding and holding[0] == pytest.approx(spike[j])


def test_folders_from_before_schema_5_read_an_empty_series(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Run(tmp_path, name="old") as run:
        run.watch(model, every=1)
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            opt.step()
    with sqlite3.connect(run.path / schema.DB_FILENAME) as conn:
        conn.execute("DROP TABLE step_norms")
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    norms = read(run.path)
    assert norms.empty and norms.norm_max.shape == (0, 6)


def test_layer_norms_and_totals_combine_parameters():
    names, layers = ("a.weight", "a.bias", "b.weight"), ("a", "a", "b")
    values = np.array([[3.0, 4.0, 1.0], [np.nan, np.nan, 2.0]])
    norms = series.StepNorms(np.array([0, 1]), names, layers, values, values, np.zeros((2, 3), np.int64),
                             np.array([1, 1]))
    got_layers, per_layer = norms.layer_norms()
    assert got_layers == ("a", "b")
    assert per_layer[0].tolist() == [5.0, 1.0]
    assert np.isnan(per_layer[1, 0]) and per_layer[1, 1] == 2.0
    assert norms.total().tolist() == pytest.approx([math.sqrt(26.0), 2.0])


@pytest.mark.parametrize("at_step", [False, True], ids=["in-backward", "fused-at-step"])
def test_an_unlogged_step_dispatches_few_ops(tmp_path, at_step):
    """The every-step norms cost, on an unlogged step, one norm kernel per parameter in backward (the
    CPU's path: each gradient is read while in cache) or, on an accelerator's path, one fused
    `_foreach_norm` and one stack for the whole step."""
    from gradwatch.trainer.capture.dispatch_count import count_ops

    def train_step(model, opt, x):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    x = torch.randn(8, 6)
    plain, watched = make_model(), make_model()
    plain_opt, watched_opt = (torch.optim.SGD(m.parameters(), lr=1e-3) for m in (plain, watched))
    with Run(tmp_path, name="ops") as run:
        probe = run.watch(watched, every=1000)
        if at_step:
            probe._grad_norms.measure_at_step()
        for _ in range(3):  # step 0 is logged; steps 1-2 warm the unlogged path
            train_step(watched, watched_opt, x)
            train_step(plain, plain_opt, x)
        base, _ = count_ops(train_step, plain, plain_opt, x)
        with_norms, _ = count_ops(train_step, watched, watched_opt, x)
    extra = sum(with_norms.values()) - sum(base.values())
    n_params = len(list(watched.parameters()))
    if at_step:
        assert extra <= 4, (with_norms - base)
        assert with_norms["_foreach_norm"] - base["_foreach_norm"] == 1
    else:
        assert extra <= n_params + 2, (with_norms - base)
        assert with_norms["linalg_vector_norm"] - base["linalg_vector_norm"] == n_params

"""every="auto": the cadence is chosen from the measured cost of a logged step against an unlogged
one so capture stays within the budget; recorded in the run; bad budgets refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwatch.dashboard.data import capture_label
from gradwatch.trainer.capture.cadence import AutoCadence, FixedCadence
from gradwatch.trainer.run import Run, RunSetupError
from gradwatch.trainer.runlog import RunReader, schema


def simulate(cadence, steps, unlogged_s, logged_extra_s, every_step_s=0.0):
    """Drive a cadence with a fake clock: each step takes unlogged_s (of which every_step_s is the
    capture's every-step work), a logged step's extra cost is split over its own interval and the
    next one (where the record is finished)."""
    clock, logged, carry = 0.0, [], 0.0
    for step in range(steps):
        clock += unlogged_s + carry
        carry = 0.0
        if cadence.logged(step):
            logged.append(step)
            clock += logged_extra_s / 2
            carry = logged_extra_s / 2
        cadence.observe(step, clock, every_step_s)
    return logged


def test_auto_cadence_pays_the_every_step_norms_from_the_budget_first():
    # Steps of 0.1 s, 1 ms of it the every-step gradient norms: training is 0.099 s, the budget
    # 1.98 ms per step, 0.98 ms left for logged steps of 0.5 s: one in ceil(0.5 / 0.00098) = 511.
    cadence = AutoCadence(budget=0.02)
    simulate(cadence, 40_000, 0.1, 0.5, every_step_s=0.001)
    assert cadence.every == math.ceil(0.5 / (0.02 * 0.099 - 0.001))
    # Every-step work above the budget on its own: logged steps as rare as allowed.
    greedy = AutoCadence(budget=0.02, max_every=700)
    simulate(greedy, 5_000, 0.1, 0.5, every_step_s=0.003)
    assert greedy.every == 700


def test_auto_cadence_keeps_capture_within_the_budget():
    # A logged step costs 0.5 s extra on 0.1 s steps: 2% needs one logged step in 250.
    cadence = AutoCadence(budget=0.02)
    logged = simulate(cadence, 20_000, 0.1, 0.5)
    assert cadence.every == math.ceil(0.5 / (0.02 * 0.1)) == 250
    gaps = [b - a for a, b in zip(logged, logged[1:])]
    assert gaps[-5:] == [250] * 5
    late = [s for s in logged if s > 5000]
    assert len(late) * 0.5 / ((20_000 - 5000) * 0.1) <= 0.02 + 1e-9


def test_auto_cadence_logs_often_when_capture_is_free_and_grows_gradually():
    free = AutoCadence(budget=0.02)
    simulate(free, 300, 0.1, 0.0)
    assert free.every == AutoCadence.MIN_EVERY == 3  # still leaves plain steps to re-measure against
    costly = AutoCadence(budget=0.02)
    logged = simulate(costly, 60, 0.1, 10.0)
    gaps = [b - a for a, b in zip(logged, logged[1:])]
    assert all(b <= 4 * a for a, b in zip(gaps, gaps[1:]))  # at most x4 per re-check


def test_fixed_cadence_logs_every_nth_step():
    cadence = FixedCadence(7)
    assert [s for s in range(30) if cadence.logged(s)] == [0, 7, 14, 21, 28]


def test_watch_auto_records_the_chosen_cadence(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with Run(tmp_path, name="auto") as run:
        probe = run.watch(model, every="auto", budget=0.05)
        for step in range(200):
            opt.zero_grad()
            model(torch.randn(8, 16)).pow(2).mean().backward()
            opt.step()
            run.log(step, train_loss=1.0)
    with RunReader(run.path) as reader:
        meta = reader.meta
        scalars, _ = reader.scalars()
        steps, _ = reader.steps()
    chosen = scalars[scalars["name"] == schema.CAPTURE_EVERY]
    assert chosen["step"].iloc[0] == 0 and chosen["value"].iloc[-1] == probe.every
    assert meta["watch"]["every"] == "auto" and meta["watch"]["budget"] == 0.05
    assert meta["capture_every"] == probe.every
    assert steps["step"].iloc[0] == 0 and len(steps) >= 2
    assert capture_label(meta) == f"statistics every {probe.every} steps (auto, budget 5%)"


def test_capture_label_of_fixed_cadences():
    assert capture_label({"watch": {"every": 10}}) == "statistics every 10 steps"
    assert capture_label({"watch": {"every": 1}}) == "statistics every step"
    assert capture_label({}) == ""


@pytest.mark.parametrize("kwargs,message", [
    ({"every": "auto", "budget": 1.5}, "budget must be a fraction"),
    ({"every": "auto", "budget": 0}, "budget must be a fraction"),
    ({"every": 10, "budget": 0.02}, 'budget applies to every="auto" only'),
    ({"every": "sometimes"}, 'or "auto"'),
])
def test_bad_cadence_arguments_get_a_clear_error(tmp_path, kwargs, message):
    with Run(tmp_path, name="bad") as run:
        with pytest.raises(RunSetupError, match=message):
            run.watch(nn.Linear(2, 2), **kwargs)

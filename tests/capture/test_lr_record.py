"""The capture records every param group's learning rate from the optimizer itself (no user logging):
at logged steps and wherever a schedule changed it, as the lr the step used."""

from __future__ import annotations

import torch
from torch import nn

from gradwatch import Run
from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR, optimizer_lr_name


def train(tmp_path, *, schedule: bool, steps: int = 12, every: int = 5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD([{"params": model[0].parameters()},
                                 {"params": model[2].parameters(), "lr": 0.5}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.1) if schedule else None
    with Run(tmp_path, name="lr", config={}) as run:
        run.watch(model, every=every)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if scheduler is not None:
                scheduler.step()
        path = run.path
    with RunReader(path) as reader:
        scalars, _ = reader.scalars()
    return {name: dict(zip(g["step"], g["value"])) for name, g in scalars.groupby("name")}


def test_a_schedule_is_recorded_at_every_change_for_every_group(tmp_path):
    lrs = train(tmp_path, schedule=True)
    group0, group1 = lrs[OPTIMIZER_LR], lrs[optimizer_lr_name(1)]
    # StepLR x0.1 every 4 steps: the lr each step used, recorded where it changed and at logged steps
    assert sorted(group0) == [0, 4, 5, 8, 10]
    expected = {0: 0.1, 4: 0.01, 5: 0.01, 8: 0.001, 10: 0.001}
    assert all(abs(group0[s] - v) < 1e-12 for s, v in expected.items())
    assert abs(group1[8] - 0.005) < 1e-12


def test_a_constant_lr_costs_one_record_per_logged_step(tmp_path):
    lrs = train(tmp_path, schedule=False)
    assert sorted(lrs[OPTIMIZER_LR]) == [0, 5, 10]
    assert set(lrs[OPTIMIZER_LR].values()) == {0.1}

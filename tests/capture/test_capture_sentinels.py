"""Every-step sentinels: a total gradient norm and a non-finite gradient count for every optimizer
step whatever `every` is, so NaN/Inf and explosions are dated to their exact step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwatch.trainer.diagnose import diagnose_run
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, schema


def _train(tmp_path, steps, every, poison_at=None, explode_from=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    norms = []
    with Run(tmp_path, name="sentinels") as run:
        run.watch(model, every=every)
        for step in range(steps):
            opt.zero_grad()
            loss = model(torch.randn(16, 6)).pow(2).mean()
            loss.backward()
            if step == poison_at:
                model[2].weight.grad[0, 3] = float("nan")
            if explode_from is not None and step >= explode_from:
                for p in model.parameters():
                    p.grad.mul_(10.0 ** (step - explode_from + 1))
            norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
            opt.step()
    return run.path, norms


def _sentinels(path):
    with RunReader(path) as reader:
        scalars, _ = reader.scalars()
    by_name = {name: frame.set_index("step")["value"] for name, frame in scalars.groupby("name")}
    return by_name[schema.SENTINEL_GRAD_NORM], by_name[schema.SENTINEL_NONFINITE]


def test_sentinels_record_every_step_and_equal_the_reference_norm(tmp_path):
    path, norms = _train(tmp_path, steps=25, every=10)
    grad_norm, nonfinite = _sentinels(path)
    assert grad_norm.index.tolist() == list(range(25)) == nonfinite.index.tolist()
    for step, want in enumerate(norms):
        assert grad_norm[step] == pytest.approx(want, rel=1e-5)
    assert (nonfinite == 0).all()


def test_nan_at_step_537_is_flagged_at_step_537_with_every_1000(tmp_path):
    path, _ = _train(tmp_path, steps=600, every=1000, poison_at=537)
    grad_norm, nonfinite = _sentinels(path)
    assert math.isnan(grad_norm[537]) and nonfinite[537] == 1
    assert math.isfinite(grad_norm[536]) and nonfinite[536] == 0
    with RunReader(path) as reader:
        steps, _ = reader.steps()
    assert steps["step"].tolist() == [0]  # no layer statistics anywhere near the NaN
    flags = {f["rule"]: f for f in diagnose_run(path)["flags"]}
    assert flags["nonfinite"]["first_step"] == 537
    assert "537" in flags["nonfinite"]["explanation"]


def test_exploding_gradient_is_dated_from_the_sentinels_between_logged_steps(tmp_path):
    path, _ = _train(tmp_path, steps=120, every=1000, explode_from=70)
    flags = {f["rule"]: f for f in diagnose_run(path)["flags"]}
    assert "exploding_gradient" in flags
    assert 69 <= flags["exploding_gradient"]["first_step"] <= 75

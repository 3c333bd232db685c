"""summarize_run (the inspect report): its fields equal references computed from the model and
the logged values; the run-log side imports without torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gradwatch.trainer.inspect_run import format_summary, summarize_run
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR, SENTINEL_GRAD_NORM, SENTINEL_NONFINITE

ROOT = Path(__file__).resolve().parents[2]


class Net(nn.Module):
    """Registered out of forward order, with an unused layer (weights but never a gradient)."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(6, 2)
        self.spare = nn.Linear(6, 6)
        self.inp = nn.Linear(3, 6)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.out(self.act(self.inp(x)))


LOSSES = [2.0, 1.5, 0.7, 0.9, float("nan"), 0.4, 0.6]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref = {}
    with Run(tmp_path_factory.mktemp("inspect"), name="inspect-me") as run:
        run.watch(model, every=2)
        for step, loss_value in enumerate(LOSSES):
            opt.zero_grad()
            model(torch.randn(4, 3)).pow(2).mean().backward()
            opt.step()
            if step % 2 == 0:
                ref[step] = (
                    {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                    {n: p.detach().clone() for n, p in model.named_parameters()},
                )
            run.log(step, train_loss=loss_value, lr=0.05)
        run.log(10, val_loss=0.5)
    return run, ref


def layer_norm(tensors: dict, layer: str) -> float:
    parts = [t.double() for name, t in tensors.items() if name.rsplit(".", 1)[0] == layer]
    return math.sqrt(sum(torch.linalg.vector_norm(t).item() ** 2 for t in parts))


def test_summary_status_and_step_counts(finished_run):
    run, _ = finished_run
    summary = summarize_run(run.path)
    assert summary["run"] == run.id and summary["name"] == "inspect-me"
    assert summary["status"] == "finished" and summary["error"] is None
    assert summary["steps_logged"] == 4  # optimizer steps 0, 2, 4, 6 with every=2
    assert summary["last_step"] == 10  # the latest step of any record (val_loss at 10)
    json.dumps(summary, allow_nan=False)  # strictly JSON: no NaN/Infinity literals


def test_summary_scalars_match_logged_values(finished_run):
    run, _ = finished_run
    scalars = summarize_run(run.path)["scalars"]
    # the user's scalars, and the optimizer's lr and the every-step sentinels the capture records
    assert set(scalars) == {"train_loss", "lr", "val_loss", OPTIMIZER_LR, SENTINEL_GRAD_NORM, SENTINEL_NONFINITE}
    loss = scalars["train_loss"]
    assert loss["count"] == len(LOSSES)
    assert loss["first"] == 2.0 and loss["last"] == 0.6
    assert loss["min"] == 0.4 and loss["step_of_min"] == 5
    assert loss["max"] == 2.0 and loss["step_of_max"] == 0
    assert loss["nonfinite"] == 1
    assert scalars["lr"]["min"] == scalars["lr"]["max"] == pytest.approx(0.05)
    assert scalars["val_loss"] == {"count": 1, "first": 0.5, "last": 0.5, "min": 0.5, "max": 0.5,
                                   "step_of_min": 10, "step_of_max": 10, "nonfinite": 0}


def test_summary_layers_in_forward_order_with_reference_norms(finished_run):
    run, ref = finished_run
    layers = summarize_run(run.path)["layers"]
    assert [layer["name"] for layer in layers] == ["inp", "out", "spare"]
    grads, weights = ref[6]  # the last logged step
    for layer in layers:
        assert layer["weight_norm"] == pytest.approx(layer_norm(weights, layer["name"]), rel=1e-5)
        if layer["name"] == "spare":
            assert layer["grad_norm"] is None  # unused: no gradient, no made-up number
        else:
            assert layer["grad_norm"] == pytest.approx(layer_norm(grads, layer["name"]), rel=1e-5)
    text = format_summary(summarize_run(run.path))
    assert "inp" in text and "train_loss" in text and "finished" in text


def test_summary_of_failed_run_carries_the_error(tmp_path):
    with pytest.raises(ValueError):
        with Run(tmp_path, name="fails") as run:
            run.log(0, train_loss=1.0)
            raise ValueError("bad batch")
    summary = summarize_run(run.path)
    assert summary["status"] == "failed" and "bad batch" in summary["error"]
    assert summary["steps_logged"] == 0 and summary["layers"] == []
    assert summary["last_step"] == 0 and summary["scalars"]["train_loss"]["count"] == 1


def test_runlog_and_inspect_import_without_torch():
    code = (
        "import sys\n"
        "import gradwatch, gradwatch.trainer, gradwatch.trainer.runlog, gradwatch.trainer.runlog.writer, gradwatch.trainer.inspect_run\n"
        "from gradwatch.trainer.runlog import RunReader, list_runs\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "[]"

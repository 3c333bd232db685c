"""A torch.compile'd model is recorded with the same statistics as the eager one, and on unlogged
steps its compiled forward runs without graph breaks or recompiles (gradwatch's hooks run outside
dynamo, and none is attached then). CPU, backend="eager"."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.utils import counters

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader

EVERY = 10


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def train(model, forward, steps, start=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(start)
    for _ in range(steps):
        opt.zero_grad()
        forward(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()


def records(path):
    with RunReader(path) as reader:
        df, _ = reader.layer_stats()
    return df.sort_values(["step", "kind", "name"]).reset_index(drop=True)


def test_compiled_model_same_statistics_and_no_graph_break_on_unlogged_steps(tmp_path):
    eager = make_model()
    with Run(tmp_path / "eager", name="eager") as run:
        run.watch(eager, every=EVERY)
        train(eager, eager, 3 * EVERY)
    model = make_model()
    compiled = torch.compile(model, backend="eager")
    dynamo.reset()
    counters.clear()
    with Run(tmp_path / "compiled", name="compiled") as run:
        run.watch(compiled, every=EVERY)
        train(model, compiled, 3 * EVERY)  # three logged steps: hooks attached and detached
        counters.clear()
        train(model, compiled, EVERY - 2, start=1)  # steps 31..38: none logged
        assert dict(counters["graph_break"]) == {}
        assert counters["stats"]["unique_graphs"] == 0  # no recompile either
        assert counters["stats"]["calls_captured"] == 0
    a, b = records(tmp_path / "eager" / only(tmp_path / "eager")), records(run.path)
    a, b = a[a["step"] < 3 * EVERY], b[b["step"] < 3 * EVERY]
    assert sorted(b["step"].unique()) == [0, EVERY, 2 * EVERY]
    assert list(a["name"]) == list(b["name"]) and list(a["kind"]) == list(b["kind"])
    assert set(b[b["kind"] == "activation"]["layer"]) == {"1", "3"}
    for column in ("norm", "mean", "std", "min", "max", "zero_frac", "dead_frac"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-5, abs=1e-7, nan_ok=True), column


def only(logdir):
    (folder,) = [p.name for p in logdir.iterdir() if not p.name.startswith(".")]
    return folder

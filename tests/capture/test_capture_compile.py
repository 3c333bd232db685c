"""A torch.compile'd model compiles to the same graphs watched as unwatched, with no graph break
(dynamo's counters), and its records equal the eager model's, activation statistics included:
logged steps run eagerly (trainer/capture/eager_steps.py), every other step runs the user's graphs
with nothing of gradwatch in them. CPU; backend "aot_eager" in the fast lane (dynamo and AOT
autograd as inductor sees them, no C compiler), inductor in a slow test."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.utils import counters

from gradwatch.trainer.capture import eager_steps
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader

EVERY = 5
STEPS = 3 * EVERY + 3  # three logged steps (0, 5, 10, 15), their neighbours and unlogged runs


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def train(model, forward, steps, run=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        opt.zero_grad()
        loss = forward(torch.randn(4, 8, generator=g)).pow(2).mean()
        loss.backward()
        opt.step()
        if run is not None:
            run.log(step, train_loss=loss.item())


def compiled_training(tmp_path, backend: str, watched: bool, **compile_kwargs):
    """(graphs compiled, graph breaks, run path or None) of STEPS steps of a compiled model."""
    model = make_model()
    forward = torch.compile(model, backend=backend, **compile_kwargs)
    dynamo.reset()
    counters.clear()
    if not watched:
        train(model, forward, STEPS)
        return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()), None
    with Run(tmp_path / backend, name="compiled") as run:
        run.watch(forward, every=EVERY)
        train(model, forward, STEPS, run)
    assert not eager_steps.eager_now()  # the stance is restored when the run ends
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()), run.path


def records(path):
    with RunReader(path) as reader:
        df, _ = reader.layer_stats()
    return df.sort_values(["step", "kind", "name"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def eager_records(tmp_path_factory):
    model = make_model()
    with Run(tmp_path_factory.mktemp("eager"), name="eager") as run:
        run.watch(model, every=EVERY)
        train(model, model, STEPS, run)
    return records(run.path)


def check_same_records(path, eager):
    got = records(path)
    assert sorted(got["step"].unique()) == [0, EVERY, 2 * EVERY, 3 * EVERY]
    assert list(got["name"]) == list(eager["name"]) and list(got["kind"]) == list(eager["kind"])
    assert set(got[got["kind"] == "activation"]["layer"]) == {"1", "3"}  # ReLU and Tanh outputs
    for column in ("norm", "mean", "std", "min", "max", "zero_frac", "dead_frac", "saturated_frac", "update_ratio"):
        assert got[column].to_numpy() == pytest.approx(eager[column].to_numpy(), rel=1e-5, abs=1e-7, nan_ok=True), column


def test_watched_compiled_model_has_the_unwatched_graphs_and_eager_records(tmp_path, eager_records):
    graphs, breaks, _ = compiled_training(tmp_path, "aot_eager", watched=False)
    assert (graphs, breaks) == (1, 0)
    graphs, breaks, path = compiled_training(tmp_path, "aot_eager", watched=True)
    assert (graphs, breaks) == (1, 0)
    check_same_records(path, eager_records)


def test_fullgraph_compile_of_a_watched_model_does_not_fail(tmp_path, eager_records):
    """fullgraph=True turns any graph break into an error: gradwatch must add none."""
    graphs, breaks, path = compiled_training(tmp_path, "aot_eager", watched=True, fullgraph=True)
    assert (graphs, breaks) == (1, 0)
    check_same_records(path, eager_records)


@pytest.mark.slow
def test_inductor_compiled_model_has_the_unwatched_graphs_and_eager_records(tmp_path, eager_records):
    unwatched = compiled_training(tmp_path, "inductor", watched=False)[:2]
    graphs, breaks, path = compiled_training(tmp_path, "inductor", watched=True)
    assert (graphs, breaks) == unwatched == (1, 0)
    check_same_records(path, eager_records)

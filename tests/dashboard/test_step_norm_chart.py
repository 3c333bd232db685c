"""The Run page's every-step chart: each layer's gradient norm at every optimizer step, logged or
not, from a real training run; a spike between logged steps shows at its step in its layer, and a
long run is bucketed by each bucket's largest value so the spike survives the downsampling."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradwatch.dashboard import ids
from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.run_data import max_per_bucket
from gradwatch.dashboard.views import run_charts
from gradwatch.testing import make_run
from gradwatch.trainer.run import Run


def trained_run(logdir, steps=400, spike_at=233):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with Run(logdir, name="spiky") as run:
        run.watch(model, every=50)
        for step in range(steps):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            if step == spike_at:
                model[2].weight.grad.mul_(1000.0)
            opt.step()
    return run.path.name


def chart_traces(store, run_id, **args):
    chart = run_charts.BY_ID[ids.FIG_STEP_NORMS]
    info = store.run_info(run_id)
    drawn = run_charts.render(chart, store, run_charts.ChartArgs(run_id=run_id, shape={"layers": len(info["layers"])},
                                                                 **args))
    traces = {t.meta: t for t in drawn["figure"].data if str(getattr(t, "meta", "")).startswith("every:")}
    return drawn, traces


def test_a_spike_between_logged_steps_shows_at_its_step_in_its_layer(tmp_path):
    run_id = trained_run(tmp_path / "logs")
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    drawn, traces = chart_traces(store, run_id)
    assert set(traces) == {"every:0", "every:2", "every:4"}
    spiky = traces["every:2"]
    x, y = np.asarray(spiky.x), np.asarray(spiky.y, dtype=float)
    assert int(x[np.nanargmax(y)]) == 233
    assert np.nanmax(y) > 100 * np.nanmedian(y)
    for other in ("every:0", "every:4"):
        assert int(np.asarray(traces[other].x)[np.nanargmax(np.asarray(traces[other].y, dtype=float))]) != 233
    assert drawn["live"]["cursor"] > 0  # redrawn while statistics arrive
    # Zoomed to a range without the spike, it is not drawn.
    _, zoomed = chart_traces(store, run_id, range_from=300, range_to=399)
    assert np.asarray(zoomed["every:2"].x).min() >= 300


def test_bucketing_keeps_each_bucket_largest_value():
    steps = np.arange(10_000)
    values = np.ones((10_000, 2))
    values[7_777, 1] = 50.0
    values[:100, 0] = np.nan
    shown_steps, shown = max_per_bucket(steps, values, 1000)
    assert len(shown_steps) == 1000 and shown_steps[-1] == 9_999
    assert shown[:, 1].max() == 50.0 and 7_777 <= shown_steps[np.argmax(shown[:, 1])] < 7_777 + 10
    assert np.isnan(shown[:10, 0]).all() and (shown[10:, 0] == 1.0).all()


def test_a_run_without_every_step_norms_says_so(tmp_path):
    make_run(tmp_path / "logs", "synthetic", steps=20, layers=3)
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    drawn, traces = chart_traces(store, "synthetic")
    assert not traces
    assert "no every-step gradient norms" in drawn["figure"].layout.annotations[0].text


"""trainer.derived: each derived fact checked against a slow, obvious reference, and every consumer
(diagnosis, dashboard, inspect, lesson) shown to report the same fact for the same run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradwatch.dashboard import series
from gradwatch.dashboard.data import RunStore
from gradwatch.testing import make_run
from gradwatch.trainer import derived
from gradwatch.trainer.diagnose.data import RunData
from gradwatch.trainer.inspect_run import summarize_run
from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.train.lesson import summarize

NAN = float("nan")


def test_layer_norm_is_the_root_of_summed_squares_and_a_nan_parameter_makes_the_layer_nan():
    stats = pd.DataFrame([
        dict(step=0, layer="fc1", param="weight", kind="grad", norm=3.0),
        dict(step=0, layer="fc1", param="bias", kind="grad", norm=4.0),
        dict(step=0, layer="fc2", param="weight", kind="grad", norm=NAN),
        dict(step=0, layer="fc2", param="bias", kind="grad", norm=1.0),
        dict(step=1, layer="fc1", param="weight", kind="grad", norm=math.inf),
        dict(step=1, layer="fc2", param="weight", kind="weight", norm=2.0),
    ])
    table = derived.layer_table(stats, "grad_norm", ["fc2", "fc1"])
    assert list(table.columns) == ["fc2", "fc1"] and list(table.index) == [0, 1]
    assert table.loc[0, "fc1"] == pytest.approx(5.0)
    assert math.isnan(table.loc[0, "fc2"])  # not 1.0: the layer's gradient is not finite
    assert table.loc[1, "fc1"] == math.inf and math.isnan(table.loc[1, "fc2"])
    assert derived.total_norm(table.loc[[0]].fillna(0.0)).iloc[0] == pytest.approx(5.0)
    assert series.layer_table is derived.layer_table  # the dashboard draws the same table


def test_validation_summary_first_finite_minimum_and_its_epoch():
    steps = [9, 19, 29, 39, 49]
    values = [0.5, NAN, 0.3, 0.3, 0.4]
    summary = derived.validation_summary(steps, values, {9: 1.0, 19: 2.0, 29: 3.0, 39: 4.0, 49: 5.0})
    assert summary == {"best_val_loss": 0.3, "best_step": 29, "best_epoch": 3, "last_val_loss": 0.4}
    assert derived.validation_summary(steps, values)["best_epoch"] is None  # no epoch scalar: unknown
    assert derived.validation_summary([1], [NAN])["best_val_loss"] is None
    assert derived.per_epoch_summary([0.5, 0.2, 0.4])["best_epoch"] == 2


def test_test_metrics_read_the_trainers_keys_only():
    assert derived.test_metrics({"test_accuracy": 0.8, "test_macro_f1": 0.7, "test_loss": 0.5}) == {
        "test_accuracy": 0.8, "test_macro_f1": 0.7, "test_loss": 0.5}
    assert derived.test_metrics({"accuracy": 0.8, "test_macro_f1": NAN, "test_loss": True}) == {
        "test_accuracy": None, "test_macro_f1": None, "test_loss": None}
    assert derived.test_metrics(None)["test_accuracy"] is None


def test_gradient_gap_is_the_median_ratio_of_last_to_first_layer():
    grads = pd.DataFrame({"a": [1.0, 2.0, 0.0, 1.0], "b": [10.0, 40.0, 5.0, 30.0]})
    assert derived.gradient_gap(grads, "a", "b") == pytest.approx(np.median([10.0, 20.0, 30.0]))
    assert math.isnan(derived.gradient_gap(grads, "a", "missing"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("derived"), "overfit", steps=200, pathology="overfit", layers=3)


def test_every_consumer_reports_the_same_facts_for_one_run(run_dir):
    with RunReader(run_dir) as reader:
        facts = derived.run_summary(reader)
        data = RunData.from_reader(reader)
        last = reader.last_logged_step()
    store = RunStore(run_dir.parent)
    listed = next(s for s in store.summaries(budget_s=60)[0] if s["run_id"] == run_dir.name)
    inspected = summarize_run(run_dir)
    lesson = summarize(run_dir)
    assert facts["best_epoch"] == 3 and facts["best_val_loss"] == pytest.approx(0.3)
    assert (listed["best_epoch"], listed["best_val_loss"]) == (facts["best_epoch"], facts["best_val_loss"])
    assert inspected["summary"]["best_epoch"] == facts["best_epoch"]
    assert lesson.best_epoch == facts["best_epoch"] and lesson.test_accuracy == facts["test_accuracy"] == 0.78
    assert lesson.grad_gap == pytest.approx(facts["grad_gap"])
    # A layer's gradient norm at the last step: inspect, diagnosis and the dashboard's flow chart agree.
    flow = dict(zip(store.gradient_flow(run_dir.name, None)["layers"], store.gradient_flow(run_dir.name, None)["grad_norm"]))
    for layer in inspected["layers"]:
        assert layer["grad_norm"] == pytest.approx(data.views.grad_norm.loc[last, layer["name"]])
        assert layer["grad_norm"] == pytest.approx(flow[layer["name"]])

"""dashboard.data: summaries, id validation, cached views and cursors, against real run folders."""

import numpy as np
import pytest

from gradwatch.dashboard.data import RunNotFound, RunStore, config_summary, merge_flags
from gradwatch.testing import LiveRun, make_corrupt_run, make_run
from gradwatch.trainer.runlog import RunReader


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_run(root, "overfit", steps=300, pathology="overfit", preset="overfit")
    make_run(root, "exploding", steps=300, pathology="exploding")
    make_run(root, "healthy", steps=120, epochs=4, notes=[{"text": "first", "step": 10, "author": "ann"}])
    make_corrupt_run(root, "broken")
    (root / "bad name!").mkdir()
    return root


@pytest.fixture
def store(logdir, tmp_path):
    return RunStore(logdir, tmp_path / "cache")


def test_summaries_show_every_run_and_an_error_row_for_unreadable_ones(store):
    summaries, pending = store.summaries(budget_s=60)  # contents, not the time budget (tested below with 0)
    assert pending == 0
    by_id = {s["run_id"]: s for s in summaries}
    assert set(by_id) == {"overfit", "exploding", "healthy", "broken", "bad name!"}
    assert "corrupt" in by_id["broken"]["error"]
    assert "not a valid run id" in by_id["bad name!"]["error"]
    overfit = by_id["overfit"]
    assert overfit["status"] == "finished" and overfit["error"] is None
    assert overfit["best_epoch"] == 3 and overfit["best_val_loss"] == pytest.approx(0.3)
    assert overfit["last_val_loss"] > overfit["best_val_loss"]
    assert overfit["flags"]["warning"] >= 1 and "overfitting" in overfit["flag_rules"]
    assert overfit["preset"] == "overfit" and overfit["steps"] == 300
    exploding = by_id["exploding"]
    assert exploding["status"] == "failed" and "NaN" in exploding["failure"]
    assert exploding["flags"]["critical"] >= 1


def test_summaries_are_cached_and_budgeted(logdir, tmp_path):
    store = RunStore(logdir, tmp_path / "cache")
    summaries, pending = store.summaries(budget_s=0.0)
    assert pending == len(summaries)  # nothing computed yet: placeholders only
    assert all(s["pending"] for s in summaries)
    store.summaries(budget_s=60)
    calls = []
    original = store._compute_summary
    store._compute_summary = lambda *a: calls.append(a) or original(*a)
    again, pending = store.summaries()
    assert pending == 0 and calls == []  # served from the disk cache


def test_run_ids_from_urls_are_validated(store):
    for bad in ("../etc", "a/b", "", ".jobs", "..", "x" * 300):
        with pytest.raises(RunNotFound):
            store.run_dir(bad)
    with pytest.raises(RunNotFound, match="no run 'missing'"):
        store.open("missing")
    with pytest.raises(RunNotFound, match="corrupt"):
        store.open("broken")


def test_stats_at_steps_matches_the_public_reader(logdir):
    with RunReader(logdir / "overfit") as reader:
        fast = reader.stats_at_steps([5, 17], kinds=("grad", "weight"))
    with RunReader(logdir / "overfit") as reader:
        slow, _ = reader.layer_stats(kinds=("grad", "weight"))
    slow = slow[slow["step"].isin([5, 17])].sort_values(["step", "seq"]).reset_index(drop=True)
    assert fast[slow.columns].equals(slow)


def test_scalar_view_downsamples_and_reports_nonfinite(store):
    view = store.scalar_view("exploding", max_points=50)
    loss = view["series"]["train_loss"]
    assert len(loss.steps) <= 52 and loss.total_points > 250
    assert len(loss.bad_steps) > 0 and np.all(np.isfinite(loss.values))
    zoomed = store.scalar_view("exploding", 100, 120)
    assert zoomed["series"]["train_loss"].steps.tolist() == list(range(100, 121))


def test_scalar_delta_after_cursor_is_exactly_the_new_records(tmp_path):
    live = LiveRun(tmp_path / "logs", "live", layers=2)
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    try:
        for _ in range(5):
            live.write_step()
        live.writer.flush()
        view = store.scalar_view("live")
        cursor = view["cursor"]
        assert view["series"]["train_loss"].steps.tolist() == [0, 1, 2, 3, 4]
        for _ in range(3):
            live.write_step()
        live.writer.flush()
        first = store.scalar_delta("live", cursor)
        second = store.scalar_delta("live", cursor)  # a repeated tick: the same delta
        assert first["cursor"] == second["cursor"] > cursor
        assert first["rows"].equals(second["rows"])
        loss = first["rows"][first["rows"]["name"] == "train_loss"]
        assert loss["step"].tolist() == [5, 6, 7] and (first["rows"]["seq"] > cursor).all()
        assert store.scalar_delta("live", first["cursor"])["rows"].empty
    finally:
        live.stop()


def test_layer_view_samples_long_runs_and_keeps_flagged_steps(store):
    view = store.layer_view("overfit", ("grad_norm", "dead_frac"), max_points=40, must_include=(123,))
    assert view["sampled"] and view["logged"] == 300 and view["shown"] <= 45
    steps = view["tables"]["grad_norm"].index
    assert 123 in steps and steps[0] == 0 and steps[-1] == 299  # flagged step, first and last kept
    zoomed = store.layer_view("overfit", ("grad_norm", "update_ratio"), 100, 110, max_points=40)
    assert list(zoomed["tables"]["update_ratio"].index) == list(range(100, 111)) and not zoomed["sampled"]
    assert list(view["tables"]["grad_norm"].columns) == ["net.0", "net.2", "net.4", "net.6"]
    assert view["tables"]["dead_frac"].shape[1] == 3


def test_gradient_flow_snaps_to_a_logged_step(tmp_path):
    make_run(tmp_path, "sparse", steps=100, every=10)
    store = RunStore(tmp_path, None)
    flow = store.gradient_flow("sparse", 37)
    assert flow["step"] == 30
    assert flow["layers"] == ["net.0", "net.2", "net.4", "net.6"]
    assert all(v > 0 for v in flow["grad_norm"])
    assert store.gradient_flow("sparse", None)["step"] == 90


def test_histograms_and_lesson_figure_data(store):
    hist = store.histogram_view("overfit", "net.0.weight", "grad", max_columns=30)
    assert hist["counts"].shape[1] == 129 and len(hist["steps"]) <= 30 and hist["sampled"]
    delta = store.histogram_delta("overfit", "net.0.weight", "grad", 295)
    assert delta["steps"].tolist() == [296, 297, 298, 299]
    epochs = store.weights_by_epoch("overfit")
    assert epochs["x_label"] == "epoch" and list(epochs["std"].index) == list(range(1, 11))
    assert epochs["std"]["net.0"].iloc[-1] > epochs["std"]["net.0"].iloc[0]  # weights spread out
    assert [e for e, _ in epochs["loss"]["val_loss"]] == list(range(1, 11))


def test_flags_merge_diagnosis_with_stored_live_flags(tmp_path):
    stored = {"rule": "custom_check", "severity": "info", "layers": [], "first_step": 3, "last_step": 3,
              "evidence": {"x": 1}, "explanation": "a user flag", "remedies": [], "remedy_ids": []}
    make_run(tmp_path, "withflag", steps=300, pathology="overfit", flags=[stored])
    result = RunStore(tmp_path, None).flags("withflag")
    rules = [f["rule"] for f in result["flags"]]
    assert rules[0] == "overfitting" and "custom_check" in rules
    merged = merge_flags([{"rule": "a", "layers": ["x"], "severity": "info"}],
                         [{"rule": "a", "layers": ["x"], "severity": "info"}])
    assert len(merged) == 1


def test_notes_round_trip_and_validation(store, logdir):
    seq = store.add_note("healthy", "spike here", author="bob", step=20, layer="net.0")
    notes = store.notes("healthy")
    assert notes[-1]["seq"] == seq and notes[-1]["text"] == "spike here" and notes[-1]["author"] == "bob"
    with pytest.raises(ValueError):
        store.add_note("healthy", "   ", author="bob", step=None, layer=None)


def test_config_summary_names_the_regularisers():
    text = config_summary({"model": "mlp", "depth": 2, "width": 128, "activation": "relu", "optimizer": "adam",
                           "lr": 0.001, "dropout": 0.5, "l2": 1e-4, "early_stopping": True, "clip_norm": None})
    assert text == "mlp 2x128, relu, adam lr=0.001, dropout=0.5, L2=0.0001, early stop"


def test_large_runs_are_diagnosed_in_the_background(logdir, tmp_path, monkeypatch):
    import time

    import gradwatch.dashboard.diagnosis as diagnosis_module

    monkeypatch.setattr(diagnosis_module, "LARGE_RUN_STATS_ROWS", 10)
    store = RunStore(logdir, tmp_path / "cache")
    first = store.flags("overfit", wait=False)
    assert first["pending"] and "background" in first["note"]
    summaries, _ = store.summaries(budget_s=60)
    assert next(s for s in summaries if s["run_id"] == "overfit")["flags_pending"] in (True, False)
    deadline = time.monotonic() + 30
    while (result := store.flags("overfit", wait=False))["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not result["pending"] and result["flags"][0]["rule"] == "overfitting"


def test_config_column_shows_a_users_own_config():
    from gradwatch.dashboard.summaries import config_summary

    assert config_summary({"lr": 1e-3}) == "lr=0.001"  # the README's Run(config=...)
    hf = {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_train_epochs": 3, "weight_decay": 0.0,
          "lr_scheduler_type": "linear", "seed": 42, "optim": "adamw_torch", "max_steps": -1, "batch_size": 8}
    text = config_summary(hf)
    assert text.startswith("lr=5e-05, per_device_train_batch_size=8, num_train_epochs=3") and text.endswith(", seed=42, +3 more")
    lightning = {"hidden": 64, "lr": 0.01, "model_name": "x" * 40}
    assert config_summary(lightning) == "lr=0.01, hidden=64, model_name=" + "x" * 23 + "…"
    builtin = {"preset": "dropout", "model": "mlp", "depth": 2, "width": 64, "activation": "relu", "optimizer": "adam",
               "lr": 1e-3, "batch_size": 64, "epochs": 20, "dropout": 0.5}
    assert config_summary(builtin) == "mlp 2x64, relu, adam lr=0.001, dropout=0.5"  # the built-in trainer's summary


def test_flag_badges_name_their_rules():
    from gradwatch.dashboard.components import flag_badges
    from gradwatch.dashboard.summaries import rules_by_severity

    flags = [{"rule": "overfitting", "severity": "warning"}, {"rule": "dead_units", "severity": "warning"},
             {"rule": "nonfinite", "severity": "critical"}]
    badges = flag_badges({"critical": 1, "warning": 2, "info": 0}, rules_by_severity(flags))
    assert [b.children for b in badges.children] == ["1 critical: nonfinite", "2 warning: overfitting, dead_units"]


def test_layer_view_reads_the_quantities_it_is_asked_for(store):
    """The charts declare what they read (views/run_charts.py); the data layer has no list of its own."""
    from gradwatch.dashboard.views import run_charts

    assert set(store.layer_view("overfit", ("update_ratio",), max_points=20)["tables"]) == {"update_ratio"}
    declared = {q for chart in run_charts.CHARTS for q in chart.quantities}
    assert set(run_charts.LAYER_QUANTITIES) == declared == {"grad_norm", "update_ratio", "saturated_frac", "dead_frac"}

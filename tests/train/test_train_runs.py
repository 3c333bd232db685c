"""Small real runs into temporary folders: what a run stores, clipping, NaN halts, early stopping
with restored weights, reproducibility, live flags and the vanishing/ReLU gradient gap."""

import math

import numpy as np
import pytest

from gradwatch.trainer.presets import resolve
from gradwatch.trainer.runlog.reader import RunReader
from gradwatch.trainer.train import train
from gradwatch.trainer.train.lesson import gradient_gap, summarize

FAST = {"threads": 1}
TINY_TWEETS = dict(FAST, limit=300, max_vocab=300, width=64, depth=2, batch_size=16, data=None)


def _train(tmp_path, preset=None, **overrides):
    options = resolve(preset, {**FAST, **overrides})
    return train(options, preset=preset, logdir=tmp_path, quiet=True)


def _series(run_path, name):
    with RunReader(run_path) as reader:
        return reader.scalar_series(name)


def test_run_stores_config_dataset_scalars_and_results(tmp_path):
    outcome = _train(tmp_path, "relu", epochs=2, limit=300)
    assert outcome.status == "finished" and outcome.run_path.parent == tmp_path
    with RunReader(outcome.run_path) as reader:
        meta = reader.meta
        names = set(reader.scalar_names())
        epochs = reader.scalar_series("epoch")
        steps = reader.scalar_series("train_loss")["step"]
        assert reader.status() == "finished"
        assert len(reader.logged_steps()) > 0  # layer statistics from the probe
    assert {"train_loss", "grad_norm_total", "lr", "epoch", "epoch_train_loss", "train_acc", "val_loss",
            "val_acc"} <= names
    assert "grad_norm_clipped" not in names  # clipping is off
    config = meta["config"]
    assert config["preset"] == "relu" and config["activation"] == "relu" and config["epochs"] == 2
    assert set(resolve("relu")) <= set(config)  # every resolved option
    assert meta["dataset"]["name"] == "synthetic-circles"
    # the epoch is logged at the step of its last optimizer step; steps are 0-based
    steps_per_epoch = math.ceil(210 / config["batch_size"])
    assert epochs["value"].tolist() == [1.0, 2.0]
    assert epochs["step"].tolist() == [steps_per_epoch - 1, 2 * steps_per_epoch - 1]
    assert steps.tolist() == list(range(2 * steps_per_epoch))
    results = meta["results"]
    assert results["class_names"] == ["outer", "inner"]
    assert np.array(results["confusion_matrix"]).sum() == meta["dataset"]["split_counts"]["test"]
    for key in ("test_accuracy", "test_macro_f1", "val_loss", "train_loss", "best_val_loss", "best_epoch"):
        assert math.isfinite(results[key]), key
    assert results == outcome.results


def test_clipping_logs_norms_before_and_after_and_bounds_them(tmp_path):
    outcome = _train(tmp_path, "clipping", epochs=1, limit=300)
    assert outcome.status == "finished"
    total = _series(outcome.run_path, "grad_norm_total")["value"].to_numpy()
    clipped = _series(outcome.run_path, "grad_norm_clipped")["value"].to_numpy()
    assert len(total) == len(clipped) > 0
    assert total.max() > 10  # this net's raw gradients are large ...
    assert clipped.max() <= 1.0 + 1e-4  # ... and clipping holds them at clip_norm
    assert np.allclose(clipped, np.minimum(total, 1.0), rtol=1e-4)


def test_clip_value_bounds_every_element(tmp_path):
    outcome = _train(tmp_path, "exploding", epochs=1, limit=300, clip_value=0.01, halt_on_nonfinite=False)
    total = _series(outcome.run_path, "grad_norm_total")["value"].to_numpy()
    clipped = _series(outcome.run_path, "grad_norm_clipped")["value"].to_numpy()
    with RunReader(outcome.run_path) as reader:
        stats, _ = reader.layer_stats(kinds=("grad",))  # recorded after clipping
    assert (clipped <= total + 1e-6).all() and (clipped < total).any()
    assert stats["max"].max() <= 0.01 + 1e-7 and stats["min"].min() >= -0.01 - 1e-7


def test_nonfinite_loss_halts_marks_failed_and_keeps_records(tmp_path):
    outcome = _train(tmp_path, "exploding", epochs=2, limit=300)
    assert outcome.status == "failed"
    assert "halted at optimizer step" in outcome.error
    with RunReader(outcome.run_path) as reader:
        meta = reader.meta
        flags, _ = reader.flags()
        norms = reader.scalar_series("grad_norm_total")["value"].to_numpy()
        assert reader.status() == "failed"
    assert "halted" in meta["error"]
    assert meta["results"]["stop_reason"].startswith("non-finite")
    assert not np.isfinite(norms[-1]) and np.isfinite(norms[0])
    assert np.nanmax(norms[np.isfinite(norms)]) > 100 * norms[0]  # exploded before overflowing
    assert any(f["rule"] == "nonfinite" and f["severity"] == "critical" for f in flags)


def test_nonfinite_without_halt_keeps_training(tmp_path):
    outcome = _train(tmp_path, "exploding", epochs=1, limit=300, halt_on_nonfinite=False)
    assert outcome.status == "finished"
    losses = _series(outcome.run_path, "train_loss")["value"].to_numpy()
    assert not np.isfinite(losses).all() and len(losses) == math.ceil(210 / 32)


def test_same_seed_gives_identical_losses(tmp_path):
    # dropout and batch norm: the seed must fix the shuffling and the dropout masks too
    overrides = dict(epochs=2, limit=300, dropout=0.2, batchnorm=True, every=3)
    first = _series(_train(tmp_path, "relu", **overrides).run_path, "train_loss")
    second = _series(_train(tmp_path, "relu", **overrides).run_path, "train_loss")
    other = _series(_train(tmp_path, "relu", seed=1, **overrides).run_path, "train_loss")
    assert first["value"].tolist() == second["value"].tolist()
    assert first["value"].tolist() != other["value"].tolist()


def test_early_stopping_stops_within_patience_and_restores_best(tmp_path):
    outcome = _train(tmp_path, "early-stopping", epochs=15, patience=2, lr=3e-3, **TINY_TWEETS)
    results = outcome.results
    val = _series(outcome.run_path, "val_loss")["value"].tolist()
    best_epoch = int(np.argmin(val)) + 1
    assert results["early_stopped"] and results["stop_reason"] == "early stopping"
    assert results["epochs_run"] == len(val) < 15
    assert results["epochs_run"] - best_epoch == 2 == results["epochs_run"] - results["best_epoch"]
    assert results["restored_best"]
    # the final model is the best epoch's: its validation loss is the minimum, not the last value
    assert results["val_loss"] == pytest.approx(min(val), rel=1e-5)
    assert results["val_loss"] < val[-1]


def test_stop_on_overfitting_uses_the_overfitting_rule(tmp_path):
    outcome = _train(tmp_path, "overfit", epochs=20, stop_on_overfitting=True, lr=3e-3, **TINY_TWEETS)
    assert outcome.results["stop_reason"] == "overfitting detected"
    assert outcome.results["epochs_run"] < 20
    with RunReader(outcome.run_path) as reader:
        flags, _ = reader.flags()
    assert any(f["rule"] == "overfitting" for f in flags)


def test_vanishing_gap_and_relu_narrowing_at_reduced_scale(tmp_path):
    vanishing = _train(tmp_path, "vanishing", epochs=3, limit=300, every=1)
    relu = _train(tmp_path, "relu", epochs=3, limit=300, every=1)
    with RunReader(vanishing.run_path) as reader:
        gap_vanishing, first, last = gradient_gap(reader)
        flags, _ = reader.flags()
    with RunReader(relu.run_path) as reader:
        gap_relu, _, _ = gradient_gap(reader)
    assert (first, last) == ("fc1", "out")
    assert gap_vanishing >= 100
    assert gap_vanishing / gap_relu >= 10
    assert any(f["rule"] == "vanishing_gradient" for f in flags)  # raised live, stored with the run
    assert summarize(vanishing.run_path).grad_gap == pytest.approx(gap_vanishing)


@pytest.mark.parametrize("preset,overrides", [
    ("lstm", dict(TINY_TWEETS, width=8, embedding_dim=8, epochs=1)),
    (None, dict(TINY_TWEETS, model="embedding", width=8, embedding_dim=8, epochs=1)),
    (None, dict(FAST, dataset="images", model="cnn", width=4, depth=2, limit=60, epochs=1, batchnorm=True)),
])
def test_other_models_train_end_to_end(tmp_path, preset, overrides):
    outcome = _train(tmp_path, preset, **overrides)
    assert outcome.status == "finished"
    assert math.isfinite(outcome.results["test_accuracy"])

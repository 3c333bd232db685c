"""The rule changes the diagnosis evaluation (bench/diagnosis_eval.py) led to, each on a synthetic run:
zero gradients are not vanishing ones, a burst of huge updates makes a too-high learning rate a
warning, a decisive validation-loss rise is flagged without waiting for a long trend, and underfitting
is not judged on a handful of steps."""

from __future__ import annotations

import math

import numpy as np

from gradwatch.trainer.diagnose import diagnose, overfitting_onset
from tests.diagnose.test_diagnose_rules import build_run, epochs


def rule_flags(data, rule):
    return [f for f in diagnose(data) if f.rule == rule]


def test_exactly_zero_early_gradients_are_dead_units_not_vanishing():
    # a ReLU net killed by one huge step: every unit feeding fc1..fc3 is silent, their gradients are 0
    dead = build_run(act="ReLU", grad=lambda s, i: 0.0 if (s >= 50 and i < 3) else 0.05,
                     dead=lambda s, j: 1.0 if s >= 50 and j < 3 else 0.02)
    assert rule_flags(dead, "vanishing_gradient") == []
    assert rule_flags(dead, "dead_units")[0].severity == "critical"
    # tiny but non-zero gradients still vanish
    fading = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * 10.0 ** -(4 - i) * 0.1)
    assert rule_flags(fading, "vanishing_gradient")


def test_burst_of_huge_updates_makes_a_too_high_learning_rate_a_warning():
    # 0.2 of the weights per step for the first 60 steps, then 0.015 for 440 steps: the median over the
    # whole stretch is mild, but a window of it was 20x too high
    burst = build_run(ratio=lambda s, i: 0.2 if s < 60 else 0.015)
    flag = rule_flags(burst, "learning_rate")[0]
    assert flag.severity == "warning"
    assert flag.evidence["median_update_ratio"] < 0.03 <= flag.evidence["peak_update_ratio"]
    mild = build_run(ratio=lambda s, i: 0.015)
    assert rule_flags(mild, "learning_rate")[0].severity == "info"


def test_decisive_validation_rise_is_flagged_two_evaluations_earlier():
    # a realistic overfitting curve (an embedding model at Adam lr 3e-3): lowest at epoch 2, then up
    val = [0.859, 0.809, 0.835, 0.952, 0.916, 1.167, 1.430, 1.614, 1.588, 1.929]
    train = [0.899, 0.725, 0.579, 0.452, 0.327, 0.205, 0.144, 0.078, 0.050, 0.030]
    first = next(n for n in range(4, len(val) + 1) if overfitting_onset(val[:n], train[:n]) is not None)
    assert first == 6
    onset = overfitting_onset(val[:6], train[:6])
    assert onset["best_index"] == 1 and onset["decisive_rise"]
    without = next(n for n in range(4, len(val) + 1)
                   if overfitting_onset(val[:n], train[:n], decisive_factor=math.inf) is not None)
    assert without == 9


def test_decisive_path_needs_a_rise_far_above_the_noise():
    # a rise of 6% that is only ~3 sigma of this curve's noise is left to the t test (which fails here)
    rng = np.random.default_rng(5)
    val = list(0.5 + rng.normal(0, 0.01, 10)) + [0.53, 0.51, 0.54, 0.52]
    train = list(np.linspace(0.9, 0.1, len(val)))
    onset = overfitting_onset(val, train)
    assert onset is None or not onset["decisive_rise"]


def test_underfitting_waits_for_enough_training_steps():
    flat = [1.1, 1.1, 1.1]
    # three flat evaluations 7 steps apart (a tiny training set): too early to call
    tiny = build_run(steps=range(0, 21), loss=lambda s: 1.1,
                     scalars=epochs(flat, flat, steps_per_epoch=7), config={"num_classes": 3})
    assert rule_flags(tiny, "underfitting") == []
    # the same after 300 steps
    longer = build_run(steps=range(0, 300, 5), loss=lambda s: 1.1,
                       scalars=epochs(flat, flat, steps_per_epoch=100), config={"num_classes": 3})
    assert rule_flags(longer, "underfitting")

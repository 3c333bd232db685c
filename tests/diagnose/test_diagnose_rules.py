"""Each diagnosis rule on realistic synthetic runs: the pathology fires with the right layers and
steps, and the healthy control next to it raises no warning or critical flag."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gradwatch.trainer.diagnose import (
    REMEDIES,
    DeadUnits,
    ExplodingGradient,
    Flag,
    LearningRate,
    NonFinite,
    Overfitting,
    RunData,
    SaturatedUnits,
    Underfitting,
    VanishingGradient,
    diagnose,
    overfitting_onset,
)

FC = [f"net.fc{i}" for i in range(1, 6)]
ACT = [f"net.act{i}" for i in range(1, 5)]


def build_run(
    *,
    act: str = "ReLU",
    steps=range(0, 500, 5),
    grad=None,
    ratio=None,
    saturated=None,
    dead=None,
    loss=None,
    scalars: dict | None = None,
    config: dict | None = None,
    output_act: str | None = None,
    nonfinite=None,
    seed: int = 0,
) -> RunData:
    """A 5-layer MLP (fc1..fc5, activation act1..act4 between them, optional output activation).

    grad(step, i) / ratio(step, i): gradient norm and update ratio of fc{i+1} (log-normal noise is
    added to gradients); saturated(step, i) / dead(step, i): fractions of act{i+1};
    nonfinite(step, kind, layer) -> True marks that row as holding NaN.
    """
    rng = np.random.default_rng(seed)
    tensors, order = [], 0
    for i, fc in enumerate(FC):
        for param, shape in (("weight", [64, 64]), ("bias", [64])):
            tensors.append(dict(tensor_id=len(tensors), name=f"{fc}.{param}", layer=fc, param=param, role="param",
                                module_type="Linear", shape=shape, numel=int(np.prod(shape)), ord=order, trainable=True))
        order += 1
        act_type = act if i < 4 else output_act
        if act_type:
            name = f"net.act{i + 1}"
            tensors.append(dict(tensor_id=len(tensors), name=name, layer=name, param="", role="output",
                                module_type=act_type, shape=[32, 64], numel=2048, ord=order, trainable=False))
            order += 1
    acts = [t["layer"] for t in tensors if t["role"] == "output"]

    rows = []
    for step in steps:
        for i, fc in enumerate(FC):
            g = (grad(step, i) if grad else 0.05) * math.exp(rng.normal(0, 0.2))
            r = ratio(step, i) if ratio else 1e-3 * math.exp(rng.normal(0, 0.2))
            for param, share in (("weight", 0.9), ("bias", 0.1)):
                for kind, norm, extra in (("grad", g, {}), ("weight", 5.0, {"update_ratio": r})):
                    bad = bool(nonfinite and nonfinite(step, kind, fc))
                    rows.append(dict(step=step, name=f"{fc}.{param}", layer=fc, param=param, kind=kind,
                                     norm=np.nan if bad else norm * math.sqrt(share), nan_count=7 if bad else 0,
                                     inf_count=0, **extra))
        for j, layer in enumerate(acts):
            layer_type = act if j < 4 else output_act
            bad = bool(nonfinite and nonfinite(step, "activation", layer))
            rows.append(dict(
                step=step, name=layer, layer=layer, param="", kind="activation", norm=np.nan if bad else 3.0,
                nan_count=11 if bad else 0, inf_count=0,
                saturated_frac=(saturated(step, j) if saturated else 0.05) if layer_type in ("Sigmoid", "Tanh") else np.nan,
                dead_frac=(dead(step, j) if dead else 0.02) if layer_type == "ReLU" else 0.0,
            ))
    last = max(steps)
    scalar_rows = []
    for step in range(last + 1):
        value = loss(step) if loss else 1.1 * math.exp(-step / 250) + 0.1 + rng.normal(0, 0.01)
        scalar_rows.append(dict(step=step, name="train_loss", value=value))
    for name, points in (scalars or {}).items():
        scalar_rows += [dict(step=s, name=name, value=v) for s, v in points]
    meta = {"config": {"activation": act.lower(), "batch_size": 32, **(config or {})}}
    return RunData.from_frames(pd.DataFrame(scalar_rows), pd.DataFrame(rows), pd.DataFrame(tensors), meta, "synthetic")


def epochs(val, train, steps_per_epoch=100):
    """Per-epoch scalars as the trainer logs them: at the step of each epoch's last optimizer step."""
    points = {"val_loss": [], "epoch_train_loss": [], "epoch": []}
    for e, (v, t) in enumerate(zip(val, train), 1):
        step = e * steps_per_epoch - 1
        points["val_loss"].append((step, v))
        points["epoch_train_loss"].append((step, t))
        points["epoch"].append((step, e))
    return points


def serious(flags: list[Flag]) -> list[Flag]:
    return [f for f in flags if f.severity in ("warning", "critical")]


def only(flags: list[Flag], rule: str) -> Flag:
    found = [f for f in flags if f.rule == rule]
    assert len(found) == 1, [f.to_dict() for f in flags]
    return found[0]


# ---- healthy controls -------------------------------------------------------------------------
def test_healthy_relu_run_raises_nothing_serious():
    data = build_run(act="ReLU", grad=lambda s, i: 0.05 * 1.5 ** -(4 - i))
    assert serious(diagnose(data)) == []


def test_healthy_tanh_run_with_epochs_raises_nothing_serious():
    rng = np.random.default_rng(3)
    e = np.arange(1, 21)
    train = 1.0 * np.exp(-e / 6) + 0.2
    val = 1.0 * np.exp(-e / 6) + 0.3 + rng.normal(0, 0.01, len(e))
    data = build_run(act="Tanh", steps=range(0, 2000, 20), loss=lambda s: 1.0 * math.exp(-s / 600) + 0.2,
                     scalars=epochs(val, train))
    assert serious(diagnose(data)) == []


# ---- vanishing gradients ----------------------------------------------------------------------
def test_vanishing_fires_on_sigmoid_net_decaying_10x_per_layer():
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * 10.0 ** -(4 - i),
                     ratio=lambda s, i: 1e-3 * 10.0 ** -(4 - i), saturated=lambda s, j: 0.7 if j < 2 else 0.2)
    flag = only(diagnose(data), "vanishing_gradient")
    assert flag.severity == "warning"
    assert flag.layers[0] == "net.fc1" and "net.fc5" not in flag.layers
    assert flag.layers == sorted(flag.layers, key=FC.index)
    assert flag.first_step == 0
    assert flag.evidence["first_over_last_ratio"] == pytest.approx(1e-4, rel=0.5)
    assert flag.evidence["decades_per_layer"] == pytest.approx(1.0, abs=0.1)
    assert flag.evidence["first_layer_update_ratio"] < 1e-5
    assert flag.evidence["max_saturated_frac"] == pytest.approx(0.7)
    assert flag.remedy_ids[0] == "relu"
    assert "net.fc1" in flag.explanation


def test_vanishing_does_not_fire_on_relu_net_with_narrower_gap():
    for decay in (1.5, 10 ** 0.5):  # 1.5x per layer, and a 10x narrower gap than the sigmoid net
        data = build_run(act="ReLU", grad=lambda s, i, d=decay: 0.05 * d ** -(4 - i))
        assert [f for f in diagnose(data) if f.rule == "vanishing_gradient"] == []


def test_vanishing_needs_to_be_sustained_not_one_step():
    # Gradients collapse for two logged steps only.
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * (10.0 ** -(4 - i) if s in (100, 105) else 1.0))
    assert [f for f in diagnose(data) if f.rule == "vanishing_gradient"] == []


def test_vanishing_onset_step_when_it_starts_late():
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * (10.0 ** -(4 - i) if s >= 200 else 1.0))
    flag = only(diagnose(data), "vanishing_gradient")
    assert flag.first_step == 200
    assert flag.last_step == 495


def test_vanishing_not_fired_when_early_gradients_large_in_absolute_terms():
    # A huge last-layer gradient makes the ratio small, but the first layer is not starving.
    data = build_run(act="Sigmoid", grad=lambda s, i: 1e-2 * (1e4 if i == 4 else 1.0))
    assert [f for f in diagnose(data) if f.rule == "vanishing_gradient"] == []


# ---- exploding gradients ----------------------------------------------------------------------
def explode(s, i):
    return 0.05 * 10.0 ** (max(0, s - 100) / 20)  # 10x per 20 steps after step 100


def test_exploding_fires_when_norms_grow_10x_per_20_steps():
    data = build_run(steps=range(0, 201, 2), grad=explode,
                     loss=lambda s: 0.8 if s < 100 else 0.8 * 10 ** ((s - 100) / 50))
    flag = only(diagnose(data), "exploding_gradient")
    assert flag.severity == "critical"  # the loss diverged with it
    assert 90 <= flag.first_step <= 110  # where the climb began
    assert flag.evidence["growth_decades"] >= 2
    assert flag.layers == FC
    assert flag.remedy_ids[0] == "clipping"


def test_exploding_does_not_fire_when_clipping_keeps_norms_bounded():
    steps = range(0, 201, 2)
    raw = {s: math.sqrt(5) * explode(s, 0) for s in range(201)}
    clipped = [(s, min(v, 1.0)) for s, v in raw.items()]
    data = build_run(steps=steps, grad=explode, config={"clip_grad_norm": 1.0},
                     scalars={"grad_norm_total": list(raw.items()), "grad_norm_clipped": clipped})
    flags = [f for f in diagnose(data) if f.rule == "exploding_gradient"]
    assert [f.severity for f in flags] == ["info"]  # clipping is holding them: worth knowing, not a warning
    assert flags[0].evidence["clip_norm"] == 1.0


def test_exploding_with_clip_config_but_no_clipped_scalar():
    data = build_run(steps=range(0, 201, 2), grad=explode, config={"grad_clip": {"max_norm": 0.5}})
    assert serious([f for f in diagnose(data) if f.rule == "exploding_gradient"]) == []


def test_exploding_fires_on_repeated_spikes_far_above_running_median():
    data = build_run(steps=range(0, 400, 4), grad=lambda s, i: 0.05 * (500 if s in (200, 260) else 1.0))
    flag = only(diagnose(data), "exploding_gradient")
    assert flag.first_step == 200 and flag.evidence["spikes"] == 2
    assert flag.evidence["max_spike_ratio"] > 100


def test_exploding_ignores_a_single_spike_and_steady_noise():
    data = build_run(steps=range(0, 400, 4), grad=lambda s, i: 0.05 * (500 if s == 200 else 1.0))
    assert [f for f in diagnose(data) if f.rule == "exploding_gradient"] == []


def test_exploding_fires_on_huge_update_ratios():
    data = build_run(ratio=lambda s, i: 0.3 if s >= 300 else 1e-3)
    flag = only(diagnose(data), "exploding_gradient")
    assert flag.first_step == 300
    assert flag.evidence["max_median_update_ratio"] == pytest.approx(0.3)


def test_exploding_from_grad_norm_total_alone():
    points = [(s, 0.2 * 10 ** (max(0, s - 300) / 40)) for s in range(600)]
    data = RunData.from_frames(pd.DataFrame([dict(step=s, name="grad_norm_total", value=v) for s, v in points]))
    flag = only(diagnose(data), "exploding_gradient")
    assert flag.layers == [] and 300 <= flag.first_step <= 400


# ---- non-finite values -------------------------------------------------------------------------
def test_nonfinite_in_layer_3_at_step_37():
    data = build_run(steps=range(60), nonfinite=lambda s, kind, layer: s >= 37 and layer == "net.fc3")
    flag = only(diagnose(data), "nonfinite")
    assert flag.severity == "critical"
    assert flag.first_step == 37 and flag.last_step == 59
    assert flag.layers == ["net.fc3"]
    assert "step 37" in flag.explanation and "net.fc3" in flag.explanation


def test_nonfinite_reports_the_first_layer_in_forward_order():
    # The forward pass breaks in act3: later activations, every gradient and the loss follow.
    def bad(step, kind, layer):
        if step < 37:
            return False
        if kind == "activation":
            return ACT.index(layer) >= 2
        return True

    data = build_run(steps=range(60), nonfinite=bad, loss=lambda s: float("nan") if s >= 37 else 0.5)
    flags = diagnose(data)
    assert flags[0].rule == "nonfinite"  # critical flags come first
    flag = flags[0]
    assert flag.first_step == 37
    assert flag.layers == ["net.act3", "net.act4"]
    assert flag.evidence["loss_nonfinite_step"] == 37


def test_nonfinite_loss_only():
    data = RunData.from_frames(pd.DataFrame(
        [dict(step=s, name="train_loss", value=float("inf") if s >= 12 else 1.0) for s in range(20)]
    ))
    flag = only(diagnose(data), "nonfinite")
    assert flag.first_step == 12 and flag.layers == []


# ---- dead and saturated units -------------------------------------------------------------------
def test_dead_relu_units_in_one_layer():
    data = build_run(act="ReLU", dead=lambda s, j: 0.8 if (j == 1 and s >= 100) else 0.05)
    flag = only(diagnose(data), "dead_units")
    assert flag.layers == ["net.act2"] and flag.first_step == 100
    assert flag.severity == "warning"
    assert flag.evidence["per_layer"]["net.act2"] == pytest.approx(0.8)
    assert flag.remedy_ids[0] == "lower-lr"


def test_half_the_units_silent_per_batch_is_not_dead():
    # Narrow ReLU nets on small batches: about half the units of deep layers are zero on a given
    # batch without being dead (they fire on other inputs).
    data = build_run(act="ReLU", dead=lambda s, j: 0.55)
    assert [f for f in diagnose(data) if f.rule == "dead_units"] == []


def test_dead_units_critical_when_layer_nearly_dead_and_skipped_for_tiny_batches():
    data = build_run(act="ReLU", dead=lambda s, j: 0.95 if j >= 2 else 0.05)
    assert only(diagnose(data), "dead_units").severity == "critical"
    data = build_run(act="ReLU", dead=lambda s, j: 0.8, config={"batch_size": 1})
    assert [f for f in diagnose(data) if f.rule == "dead_units"] == []


def test_dead_units_need_to_be_sustained():
    data = build_run(act="ReLU", dead=lambda s, j: 0.8 if s % 20 == 0 else 0.05)
    assert [f for f in diagnose(data) if f.rule == "dead_units"] == []


def test_saturated_sigmoid_units_but_not_the_output_activation():
    data = build_run(act="Sigmoid", output_act="Sigmoid",
                     saturated=lambda s, j: 0.8 if j in (0, 1) else (0.97 if j == 4 else 0.1))
    flag = only(diagnose(data), "saturated_units")
    assert flag.layers == ["net.act1", "net.act2"]
    assert flag.remedy_ids[0] == "relu"


# ---- overfitting ------------------------------------------------------------------------------
def u_shaped(seed=0, n=30, noise=0.01):
    rng = np.random.default_rng(seed)
    e = np.arange(1, n + 1)
    val = 0.3 + 0.002 * (e - 10) ** 2 + rng.normal(0, noise, n)
    train = 0.7 * np.exp(-e / 8) + 0.05 + rng.normal(0, 0.003, n)
    return val, train


def test_overfitting_on_u_shaped_validation_loss():
    val, train = u_shaped()
    data = build_run(steps=range(0, 3000, 50), loss=lambda s: 0.7 * math.exp(-s / 800) + 0.05,
                     scalars=epochs(val, train))
    flag = only(diagnose(data), "overfitting")
    assert abs(flag.evidence["best_epoch"] - 10) <= 2
    assert flag.first_step == flag.evidence["best_epoch"] * 100 - 1
    assert flag.evidence["gl"] > 100
    assert flag.evidence["gap_last"] > flag.evidence["gap_at_best"]
    assert flag.remedy_ids[0] == "early-stopping"
    assert f"epoch {flag.evidence['best_epoch']}" in flag.explanation


def test_overfitting_not_flagged_on_noisy_flat_validation_loss():
    # Validation loss flat with 4% noise while training loss keeps falling. Post hoc no run is
    # flagged; asked after every epoch (as the live trainer would), almost none ever is.
    flagged_post_hoc, flagged_live = 0, 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        e = np.arange(1, 41)
        val = 0.5 + rng.normal(0, 0.02, len(e))
        train = 0.7 * np.exp(-e / 8) + 0.05
        flagged_post_hoc += overfitting_onset(val, train) is not None
        flagged_live += any(overfitting_onset(val[:end], train[:end]) is not None for end in range(4, len(e) + 1))
    assert flagged_post_hoc == 0
    assert flagged_live <= 3


def test_overfitting_not_flagged_on_noisy_plateau_through_the_rule():
    rng = np.random.default_rng(11)
    e = np.arange(1, 31)
    val = 0.4 + 0.5 * np.exp(-e / 3) + rng.normal(0, 0.02, len(e))
    train = 0.9 * np.exp(-e / 8) + 0.05
    data = build_run(steps=range(0, 3000, 50), loss=lambda s: 0.9 * math.exp(-s / 800) + 0.05,
                     scalars=epochs(val, train))
    assert [f for f in diagnose(data) if f.rule == "overfitting"] == []


def test_overfitting_onset_pure_function_with_step_index():
    val, train = u_shaped(seed=4)
    steps = np.arange(1, 31) * 100 - 1
    onset = overfitting_onset(pd.Series(val, index=steps), pd.Series(train, index=steps), patience=3)
    assert onset is not None
    assert onset["best_step"] in steps and abs(onset["best_index"] - 9) <= 2
    assert onset["rising_since_step"] == onset["best_step"] + 100
    assert onset["gl"] == pytest.approx(100 * (val[-1] / val.min() - 1))
    with pytest.raises(ValueError, match="differ in length"):
        overfitting_onset([1.0, 2.0], [1.0])


def test_overfitting_needs_training_loss_still_falling():
    val, _ = u_shaped()
    train = np.full(30, 0.4)  # val rising while train is flat: not the textbook case
    assert overfitting_onset(val, train) is None


def test_overfitting_from_per_step_train_loss_without_epoch_train_loss():
    val, _ = u_shaped(seed=2)
    data = build_run(steps=range(0, 3000, 50), loss=lambda s: 0.7 * math.exp(-s / 800) + 0.05,
                     scalars={"val_loss": [(e * 100 - 1, v) for e, v in enumerate(val, 1)]})
    assert only(diagnose(data), "overfitting").first_step % 100 == 99


# ---- underfitting ------------------------------------------------------------------------------
def test_underfitting_when_losses_stay_at_class_prior_level():
    rng = np.random.default_rng(1)
    n = 10
    prior = math.log(3)
    val = prior + rng.normal(0, 0.005, n)
    train = prior + rng.normal(0, 0.005, n)
    data = build_run(steps=range(0, 1000, 20), loss=lambda s: prior + 0.01 * math.sin(s),
                     scalars=epochs(val, train), config={"num_classes": 3})
    flag = only(diagnose(data), "underfitting")
    assert flag.evidence["uniform_prior_loss"] == pytest.approx(prior)
    assert flag.evidence["train_loss_ratio"] > 0.9
    assert "class priors" in flag.explanation
    assert flag.remedy_ids[0] == "higher-lr"


def test_underfitting_not_flagged_for_a_model_that_learned_fast_then_plateaued():
    n = 10
    train = np.full(n, 0.2)
    val = np.full(n, 0.25)
    data = build_run(steps=range(0, 1000, 20), loss=lambda s: 1.1 if s < 3 else 0.2, scalars=epochs(val, train))
    assert [f for f in diagnose(data) if f.rule == "underfitting"] == []


def test_underfitting_from_per_step_loss_only():
    data = RunData.from_frames(pd.DataFrame(
        [dict(step=s, name="train_loss", value=0.69 + 0.01 * math.sin(s)) for s in range(300)]
    ))
    assert only(diagnose(data), "underfitting").layers == []


# ---- learning rate -----------------------------------------------------------------------------
def test_learning_rate_too_high_with_a_stalling_loss():
    data = build_run(ratio=lambda s, i: 5e-2, loss=lambda s: 0.9 + 0.05 * math.sin(s))
    flag = only(diagnose(data), "learning_rate")
    assert flag.severity == "warning" and flag.evidence["direction"] == 1
    assert flag.remedy_ids[0] == "lower-lr"


def test_learning_rate_somewhat_high_but_loss_falling_is_only_info():
    data = build_run(ratio=lambda s, i: 1.5e-2)
    flag = only(diagnose(data), "learning_rate")
    assert flag.severity == "info"


def test_learning_rate_too_low():
    data = build_run(ratio=lambda s, i: 1e-6, loss=lambda s: 1.0)
    flag = only(diagnose(data), "learning_rate")
    assert flag.severity == "warning" and flag.evidence["direction"] == -1
    assert flag.remedy_ids[0] == "higher-lr"


def test_learning_rate_low_after_annealing_schedule_is_fine():
    lr = [(s, 0.1 if s < 300 else 1e-4) for s in range(500)]  # a step schedule, decayed 1000x at step 300
    data = build_run(ratio=lambda s, i: 1e-3 if s < 300 else 1e-6, scalars={"lr": lr})
    assert [f for f in diagnose(data) if f.rule == "learning_rate"] == []


# ---- flags, registry, partial inputs ------------------------------------------------------------
def test_flag_to_dict_is_plain_json_with_remedy_text_and_ids():
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * 10.0 ** -(4 - i))
    for flag in diagnose(data):
        body = flag.to_dict()
        json.loads(json.dumps(body, allow_nan=False))
        assert body["remedies"] == [REMEDIES[r] for r in body["remedy_ids"]]
        assert Flag.from_dict(body).key == flag.key


def test_flags_sorted_by_severity_then_first_step():
    data = build_run(steps=range(60), nonfinite=lambda s, kind, layer: s >= 37,
                     ratio=lambda s, i: 1e-6, loss=lambda s: 1.0)
    flags = diagnose(data)
    ranks = [("critical", "warning", "info").index(f.severity) for f in flags]
    assert ranks == sorted(ranks) and flags[0].rule == "nonfinite"


def test_rules_by_id_and_unknown_rule():
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * 10.0 ** -(4 - i))
    assert {f.rule for f in diagnose(data, rules=["vanishing_gradient"])} == {"vanishing_gradient"}
    assert diagnose(data, rules=[VanishingGradient(ratio_threshold=1e-5)]) == []
    with pytest.raises(ValueError, match="unknown diagnosis rule 'nope'"):
        diagnose(data, rules=["nope"])


def test_layer_rules_skip_quietly_on_scalars_only_runs():
    data = RunData.from_frames(pd.DataFrame([dict(step=s, name="train_loss", value=1 / (s + 1)) for s in range(50)]))
    for rule in (VanishingGradient(), DeadUnits(), SaturatedUnits(), LearningRate()):
        assert rule(data) == [] and rule.skip_reason(data)
    for rule in (NonFinite(), ExplodingGradient(), Overfitting(), Underfitting()):
        assert rule(data) == []


def test_empty_run_data():
    data = RunData.from_frames()
    assert diagnose(data) == []
    assert not data.has_records


def test_stats_frame_without_tensors_uses_row_order():
    data = build_run(act="Sigmoid", grad=lambda s, i: 0.05 * 10.0 ** -(4 - i))
    bare = RunData.from_frames(data.scalars, data.stats[["step", "layer", "kind", "norm", "update_ratio"]])
    assert bare.layer_order[:2] == ["net.fc1", "net.fc2"]
    assert only(diagnose(bare), "vanishing_gradient").layers[0] == "net.fc1"


def test_bad_frames_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="stats need at least columns"):
        RunData.from_frames(stats=pd.DataFrame({"step": [1]}))
    with pytest.raises(ValueError, match="kind must be one of"):
        RunData.from_frames(stats=pd.DataFrame({"step": [1], "layer": ["a"], "kind": ["grads"], "norm": [1.0]}))


def test_fast_early_drop_inside_the_stretch_is_learning_not_a_stall():
    # Updates at 1.5e-2 (above too_high, below severe) the whole run; the loss falls from 2.3 to 0.5 in
    # the first 10 steps, then stays there: a healthy recipe's fast start, not "loss not improving".
    data = build_run(steps=range(0, 200, 2), ratio=lambda s, i: 1.5e-2,
                     loss=lambda s: 0.5 + 1.8 * math.exp(-s / 3))
    flags = [f for f in diagnose(data, rules=["learning_rate"]) if f.evidence.get("direction") == 1]
    assert flags and flags[0].severity == "info"
    # the same updates with a loss that never moves: a warning
    stalled = build_run(steps=range(0, 200, 2), ratio=lambda s, i: 1.5e-2, loss=lambda s: 2.3)
    assert only(diagnose(stalled, rules=["learning_rate"]), "learning_rate").severity == "warning"

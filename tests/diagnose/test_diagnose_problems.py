"""Issue 12's rule changes on synthetic runs: the loss-divergence rule, the every-step gradient
sentinel, embeddings out of the depth path, one flag per problem (merge with history), remedies
checked against the run with the code change for its stack, and severity that follows consequence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradwatch.trainer.diagnose import RunData, diagnose
from gradwatch.trainer.diagnose.loss import LossDivergence
from gradwatch.trainer.diagnose.merge import merge_flags
from gradwatch.trainer.diagnose.remedies import fit_remedies, remedy_code
from gradwatch.trainer.runlog.schema import SENTINEL_GRAD_NORM, optimizer_lr_name
from tests.diagnose.test_diagnose_rules import build_run, epochs

ACTIVE = ("warning", "critical")


def loss_run(values, *, config=None, scalars=None):
    rows = [dict(step=s, name="train_loss", value=v) for s, v in enumerate(values)]
    for name, points in (scalars or {}).items():
        rows += [dict(step=s, name=name, value=v) for s, v in points]
    return RunData.from_frames(pd.DataFrame(rows), meta={"config": config or {}})


def flags_of(data, rule):
    return [f for f in diagnose(data) if f.rule == rule]


# ---- loss divergence -----------------------------------------------------------------------------
def test_loss_blow_up_after_a_few_steps_is_critical_from_its_first_step():
    values = [6.9, 5.7, 8.5, 8.2, 239.0, 13.5, 126.0, 83.0, 97.0, 86.0] + [60.0] * 20
    flag = LossDivergence()(loss_run(values, config={"vocab_size": 1000}))[0]
    assert flag.severity == "critical" and flag.first_step == 4
    assert flag.evidence["uniform_guess_loss"] == math.log(1000)
    assert flag.remedy_ids[:2] == ["lower-lr", "clipping"]


def test_loss_climbing_back_late_is_flagged_below_its_start():
    # falls from 2.3 to 0.4, then climbs to 1.5: still below the start, but it gave back most of it
    values = [2.3 * math.exp(-s / 30) + 0.3 for s in range(150)] + [0.4 + 0.02 * s for s in range(60)]
    flag = LossDivergence()(loss_run(values))[0]
    assert flag.severity == "warning" and 150 <= flag.first_step <= 190


def test_healthy_noisy_loss_and_an_overconfident_start_are_not_divergence():
    rng = np.random.default_rng(0)
    healthy = [1.1 * math.exp(-s / 100) + 0.2 + abs(rng.normal(0, 0.08)) for s in range(400)]
    assert LossDivergence()(loss_run(healthy, config={"num_classes": 3})) == []
    # a saturated network's loss starts above ln 3 and wobbles there: not a divergence
    wobbly = [1.5, 1.9, 2.07, 1.3, 1.69, 1.8, 1.47, 1.47, 1.76, 1.65, 1.43, 1.47, 1.44, 1.08, 1.07, 1.35]
    assert LossDivergence()(loss_run(wobbly, config={"num_classes": 3})) == []


def test_underfitting_is_not_raised_on_a_loss_that_blew_up_and_is_critical_at_chance():
    blew = [1.1] * 3 + [5.0] + [1.08] * 300
    evals = epochs([1.1] * 6, [1.08] * 6, steps_per_epoch=50)
    assert flags_of(loss_run(blew, config={"num_classes": 3}, scalars=evals), "underfitting") == []
    chance = [1.1 + 0.001 * math.sin(s) for s in range(300)]
    flag = flags_of(loss_run(chance, config={"num_classes": 3}, scalars=evals), "underfitting")[0]
    assert flag.severity == "critical" and flag.evidence["at_chance"] == 1


# ---- the every-step gradient sentinel --------------------------------------------------------------
def test_exploding_reads_the_every_step_sentinel_between_logged_steps():
    # layer statistics every 100 steps (three records, healthy), the sentinel at every step: a surge
    norms = [(s, 0.5 if s < 120 else 0.5 * 10 ** ((s - 120) / 20)) for s in range(200)]
    data = build_run(steps=range(0, 300, 100), scalars={SENTINEL_GRAD_NORM: norms})
    flag = flags_of(data, "exploding_gradient")[0]
    assert flag.severity in ACTIVE and 110 <= flag.first_step <= 130
    blind = build_run(steps=range(0, 300, 100))
    assert flags_of(blind, "exploding_gradient") == []


# ---- layer kinds ------------------------------------------------------------------------------------
def embedding_run(first_grad: float):
    """embedding -> lstm -> decoder: the embedding's sparse gradient is tiny, the LSTM's is healthy."""
    tensors = [
        dict(tensor_id=0, name="encoder.weight", layer="encoder", param="weight", role="param",
             module_type="Embedding", shape=[30000, 200], numel=6_000_000, ord=0, trainable=True),
        dict(tensor_id=1, name="rnn.weight_ih_l0", layer="rnn", param="weight_ih_l0", role="param",
             module_type="LSTM", shape=[800, 200], numel=160_000, ord=1, trainable=True),
        dict(tensor_id=2, name="decoder.weight", layer="decoder", param="weight", role="param",
             module_type="Linear", shape=[30000, 200], numel=6_000_000, ord=2, trainable=True),
    ]
    rows = []
    for step in range(0, 100, 2):
        for layer, norm in (("encoder", 1e-6), ("rnn", first_grad), ("decoder", 0.5)):
            rows.append(dict(step=step, layer=layer, kind="grad", norm=norm))
            rows.append(dict(step=step, layer=layer, kind="weight", norm=10.0, update_ratio=1e-3))
    scalars = pd.DataFrame([dict(step=s, name="train_loss", value=7.0 - s / 50) for s in range(100)])
    return RunData.from_frames(scalars, pd.DataFrame(rows), pd.DataFrame(tensors), {"config": {}})


def test_embedding_is_left_out_of_the_depth_path():
    healthy = embedding_run(first_grad=0.05)
    assert healthy.depth_layers == ["rnn", "decoder"] and healthy.layer_kind("encoder") == "embedding"
    assert healthy.architecture == "gated-rnn"
    assert flags_of(healthy, "vanishing_gradient") == []
    starving = embedding_run(first_grad=1e-7)  # the LSTM itself starves: that is evidence
    flag = flags_of(starving, "vanishing_gradient")[0]
    assert flag.layers == ["rnn"]
    assert not {"relu", "batchnorm"} & set(flag.remedy_ids)


# ---- remedies -------------------------------------------------------------------------------------
def test_remedies_skip_what_the_run_applies_and_what_contradicts_the_findings():
    explode = build_run(grad=lambda s, i: 0.05 if s < 200 else 0.05 * 10 ** ((s - 200) / 30),
                        config={"clip_norm": 1.0}, scalars={"grad_norm_clipped": [(s, 1.0) for s in range(500)]})
    for flag in diagnose(explode):
        assert "clipping" not in flag.remedy_ids
    diverging = [6.9] * 3 + [50.0] * 200
    evals = epochs([7.0] * 5, [6.9] * 5, steps_per_epoch=40)
    flags = diagnose(loss_run(diverging, scalars=evals))
    assert any(f.rule == "loss_divergence" for f in flags)
    assert all("higher-lr" not in f.remedy_ids for f in flags)


def test_remedy_code_follows_the_runs_stack():
    plain = build_run(config={"lr": 0.3, "optimizer": "sgd"})
    assert remedy_code("clipping", plain) == (
        "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # after loss.backward(), before optimizer.step()")
    assert remedy_code("lower-lr", plain) == "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)"
    lightning = build_run()
    lightning.meta["integration"] = "lightning"
    assert remedy_code("clipping", lightning) == "trainer = Trainer(gradient_clip_val=1.0)"
    hf = build_run()
    hf.meta["integration"] = "transformers"
    assert remedy_code("clipping", hf) == "args = TrainingArguments(..., max_grad_norm=1.0)"
    assert remedy_code("smaller", hf) == ""
    flags = fit_remedies(flags_of(build_run(grad=lambda s, i: 0.05 * 10.0 ** -(4 - i) * 0.1, act="Sigmoid"),
                                  "vanishing_gradient"), plain)
    assert len(flags[0].remedy_code) == len(flags[0].remedy_ids)


def test_meta_grad_clip_counts_as_clipping():
    data = build_run()
    assert not data.clips_gradients()
    data.meta["grad_clip"] = 0.5
    assert data.clips_gradients() and data.clip_norm() == 0.5


# ---- one flag per problem ------------------------------------------------------------------------
def vanishing(layers, first, last, severity="warning", **extra):
    return dict(rule="vanishing_gradient", severity=severity, layers=layers, first_step=first, last_step=last,
                evidence={}, explanation="Gradients vanish.", remedy_ids=["relu"], **extra)


def test_live_and_posthoc_flags_of_one_problem_merge_with_their_history():
    posthoc = [vanishing(["fc1", "fc2", "fc3"], 4, 99)]
    stored = [vanishing(["fc1"], 4, 20, raised_step=20), vanishing(["fc1", "fc2"], 4, 40, raised_step=40)]
    merged = merge_flags(posthoc, stored)
    assert len(merged) == 1
    flag = merged[0]
    assert flag["layers"] == ["fc1", "fc2", "fc3"] and flag["source"] == "diagnosis"
    assert flag["history"]["first_raised_step"] == 20 and flag["history"]["active"]
    assert [e["layers_added"] for e in flag["history"]["raised_live"]] == [["fc1"], ["fc2"]]
    assert "First raised live at step 20 (fc1); fc2 added at step 40; fc3 found after the run" in flag["explanation"]


def test_cleared_problem_keeps_its_worst_severity_and_disjoint_ones_stay_apart():
    stored = [vanishing(["fc1"], 4, 20, severity="critical", raised_step=20),
              vanishing(["fc1"], 4, 30, raised_step=30), vanishing(["fc5"], 300, 310, raised_step=310)]
    merged = merge_flags([], stored)
    assert len(merged) == 2
    cleared = next(f for f in merged if "fc1" in f["layers"])
    assert cleared["severity"] == "critical" and not cleared["history"]["active"]
    assert "cleared" in cleared["explanation"]
    # too high and too low learning rates are two problems of one rule
    high = dict(rule="learning_rate", severity="warning", layers=[], first_step=0, last_step=50,
                evidence={"direction": 1}, explanation="")
    low = dict(high, evidence={"direction": -1}, first_step=400, last_step=500)
    assert len(merge_flags([high, low], [dict(high, raised_step=20)])) == 2


def test_optimizer_lr_names():
    assert optimizer_lr_name(0) == "opt_lr" and optimizer_lr_name(2) == "opt_lr_g2"


def test_vanishing_that_begins_after_a_blow_up_is_its_aftermath():
    from gradwatch.trainer.diagnose import Flag
    from gradwatch.trainer.diagnose.engine import after_blow_up

    def flag(rule, severity, first):
        return Flag(rule, severity, [], first, first + 10, {}, "x.")

    flags = after_blow_up([flag("loss_divergence", "critical", 4), flag("vanishing_gradient", "warning", 20),
                           flag("dead_units", "warning", 20)])
    assert [f.severity for f in flags] == ["critical", "info", "warning"]
    assert "after the blow-up at step 4" in flags[1].explanation
    before = after_blow_up([flag("exploding_gradient", "critical", 50), flag("vanishing_gradient", "warning", 10)])
    assert before[1].severity == "warning"


def test_a_plain_rnn_keeps_its_embedding_on_the_depth_path():
    data = embedding_run(first_grad=0.05)
    data.tensors.loc[data.tensors["layer"] == "rnn", "module_type"] = "RNN"
    data.__dict__.pop("module_types", None)
    data.__dict__.pop("architecture", None)
    data.__dict__.pop("depth_layers", None)
    assert data.architecture == "rnn" and data.depth_layers == ["encoder", "rnn", "decoder"]


def test_merging_an_already_merged_result_again_changes_nothing():
    posthoc = [vanishing(["fc1", "fc2"], 4, 99)]
    stored = [vanishing(["fc1"], 4, 20, raised_step=20), vanishing(["fc9"], 400, 420, raised_step=400)]
    once = merge_flags(posthoc, stored)
    twice = merge_flags(once, stored)
    assert [(f["layers"], f["explanation"]) for f in twice] == [(f["layers"], f["explanation"]) for f in once]


def test_clip_thresholds_are_read_for_what_they_do():
    norms = {SENTINEL_GRAD_NORM: [(s, 2.0) for s in range(20)]}
    never = loss_run([2.0] * 20, config={"clip_norm": 1e9}, scalars=norms)
    assert never.clip_setting() == 1e9 and never.clip_norm() is None and not never.clips_gradients()
    above_all = loss_run([2.0] * 20, config={"clip_norm": 5e3}, scalars=norms)  # > 1000x the largest norm
    assert above_all.clip_norm() is None
    zero = loss_run([2.0] * 20, config={"clip_norm": 0.0}, scalars=norms)
    assert zero.clip_setting() == 0 and zero.clip_norm() is None
    real = loss_run([2.0] * 20, config={"clip_norm": 0.25}, scalars=norms)
    assert real.clip_norm() == 0.25 and real.clips_gradients()
    # an exploding run with clip=1e9 is still offered clipping
    blow = [0.3, 0.4, 0.35, 0.4] + [40.0 * 10 ** (s / 4) for s in range(16)]
    data = loss_run([6.9, 6.5, 6.4, 6.3] + [60.0] * 16, config={"clip_norm": 1e9, "vocab_size": 1000},
                    scalars={SENTINEL_GRAD_NORM: list(enumerate(blow))})
    cards = [f for f in diagnose(data) if f.severity in ACTIVE]
    assert any("clipping" in f.remedy_ids for f in cards)

"""Diagnosis on small real torch runs beyond the lesson (bench/diagnosis_userloops.py): an LSTM
language model blowing up at SGD lr 20 without clipping, a GPT-2 at AdamW lr 1.0 watched at
every=10, a schedule decaying to ~0 with no lr logged, the example's own clipped recipe, and the
lesson's vanishing preset - each flagged right and with no remedy that would do harm."""

from __future__ import annotations

import pytest

from bench.diagnosis_userloops import LM_HARMFUL, get_case, train_loop_case
from gradwatch.trainer.diagnose import RunData, diagnose, diagnose_run, expand_absorbed, format_report
from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR

ACTIVE = ("warning", "critical")

torch = pytest.importorskip("torch")


def run_case(case_id, tmp_path):
    torch.set_num_threads(1)
    path = train_loop_case(get_case(case_id), tmp_path)
    with RunReader(path) as reader:
        data = RunData.from_reader(reader)
    return path, data, diagnose(data)


def active(flags, rule=None):
    flags = expand_absorbed(flags)  # a cause-chain card tells the divergence and NaN findings too
    return [f for f in flags if f.severity in ACTIVE and (rule is None or f.rule == rule)]


def harmful(flags, ids):
    return [(f.rule, r) for f in active(flags) for r in f.remedy_ids if r in ids]


def test_lstm_lm_blow_up_is_exploding_near_step_6_not_vanishing_embedding_or_underfitting(tmp_path):
    path, data, flags = run_case("user-lstm-lm-noclip", tmp_path)
    loss = data.scalar("train_loss")
    assert loss.max() > 20 * loss.iloc[0]  # the run really blew up
    exploding = active(flags, "exploding_gradient")
    assert exploding and exploding[0].severity == "critical"
    assert abs(exploding[0].first_step - 6) <= 6  # the climb begins at step 1-2, the loss jumps at 4
    assert not active(flags, "underfitting")
    assert not [f for f in flags if f.rule == "vanishing_gradient" and "encoder" in f.layers]
    assert harmful(flags, LM_HARMFUL) == []
    # a plain loop (no integration in meta) gets the torch code change for clipping
    code = dict(zip(exploding[0].remedy_ids, exploding[0].remedy_code))
    assert code["clipping"].startswith("torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)")
    # and `gradwatch diagnose` prints it under the remedy
    report = format_report(diagnose_run(path))
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" in report


def test_example_recipe_with_clipping_gets_no_clipping_remedy_and_no_warning(tmp_path):
    _, data, flags = run_case("user-lstm-lm-clip", tmp_path)
    assert data.clips_gradients()
    assert active(flags) == []
    assert all("clipping" not in f.remedy_ids for f in flags)
    assert all(r not in f.remedy_ids for f in flags for r in ("relu", "batchnorm", "higher-lr"))


def test_gpt2_at_lr_1_is_flagged_at_every_10(tmp_path):
    _, data, flags = run_case("user-gpt2-lr1-e10", tmp_path)
    assert len(data.views.grad_norm) <= 10  # only 10 logged steps: the loss carries the verdict
    divergence = active(flags, "loss_divergence")
    assert divergence and divergence[0].severity == "critical"
    assert divergence[0].evidence["final_loss"] > divergence[0].evidence["uniform_guess_loss"]
    assert divergence[0].first_step <= 10
    assert harmful(flags, LM_HARMFUL) == []
    assert data.architecture == "transformer"


def test_schedule_decaying_to_zero_is_unflagged_because_the_optimizer_lr_is_recorded(tmp_path):
    _, data, flags = run_case("user-lr-decay-to-zero", tmp_path)
    lr = data.scalar(OPTIMIZER_LR)
    assert lr.iloc[0] == pytest.approx(0.1) and lr.iloc[-1] == pytest.approx(1e-5)
    assert not data.has_scalar("lr")  # the user logged no learning rate
    assert active(flags) == []
    # the same records without the recorded lr: the rule would take the decayed lr for a mistake
    series = {k: v for k, v in data.scalar_series.items() if k != OPTIMIZER_LR}
    blind = RunData(None, None, data.tensors, data.meta, views=data.views, scalar_series=series)
    assert [f.evidence["direction"] for f in active(diagnose(blind), "learning_rate")] == [-1]


def test_lesson_vanishing_run_has_one_vanishing_flag(tmp_path):
    from bench.diagnosis_cases import get_case as lesson_case
    from bench.diagnosis_eval import train_case

    torch.set_num_threads(1)
    outcome = train_case(lesson_case("lesson-vanishing"), tmp_path, quick=True, data_path=None, device="cpu")
    with RunReader(outcome.run_path) as reader:
        stored, _ = reader.flags()
    result = diagnose_run(outcome.run_path)
    vanishing = [f for f in result["flags"] if f["rule"] == "vanishing_gradient"]
    assert len(vanishing) == 1
    assert any(f["rule"] == "vanishing_gradient" for f in stored)  # it was raised live, and merged
    assert vanishing[0]["history"]["first_raised_step"] is not None
    assert "First raised live at step" in vanishing[0]["explanation"]
    # the lesson's run tries remedies as presets: the report shows no code for it
    assert result["preset"] == "vanishing"

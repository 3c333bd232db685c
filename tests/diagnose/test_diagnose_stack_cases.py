"""What the evaluation's Lightning and HF Trainer cases (bench/diagnosis_stacks.py) led to: a blow-up
within the first few steps is an exploding gradient (each early value is judged against the values
before it, not against a level that already holds the blow-up); and those cases, trained for real,
flagged right with remedies in the stack's own code."""

from __future__ import annotations

import pandas as pd
import pytest

from gradwatch.trainer.diagnose import RunData, diagnose
from gradwatch.trainer.runlog.schema import SENTINEL_GRAD_NORM

ACTIVE = ("warning", "critical")
# The every-step sentinel of a word-level LSTM LM at SGD lr 20 without clipping (recorded through
# Lightning at every=10): 0.3 -> 240 at step 4, then settling ~15x above where it began.
EARLY_BLOWUP = [0.3, 0.4, 3.8, 2.6, 240.3, 21.9, 189.0, 43.1, 112.9, 9.8, 6.1, 5.7, 8.9, 23.8, 10.8] + [5.2] * 25
BLOWUP_LOSS = [6.91, 6.6, 5.74, 8.55, 239.0, 120.0, 261.0, 230.0, 250.0] + [240.0] * 31


def scalar_run(**series) -> RunData:
    rows = [dict(step=s, name=name, value=v) for name, values in series.items() for s, v in enumerate(values)]
    return RunData.from_frames(pd.DataFrame(rows), meta={"config": {}})


def exploding(data):
    return [f for f in diagnose(data) if f.rule == "exploding_gradient" and f.severity in ACTIVE]


def test_blow_up_within_the_first_steps_is_exploding_from_the_step_it_happened():
    flags = exploding(scalar_run(**{SENTINEL_GRAD_NORM: EARLY_BLOWUP, "train_loss": BLOWUP_LOSS}))
    assert len(flags) == 1 and flags[0].severity == "critical"
    assert flags[0].first_step == 4
    assert flags[0].evidence["max_spike_ratio"] > 100  # 240 against the median 1.5 of steps 0-3


def test_an_early_jump_of_the_gradient_norm_without_a_diverging_loss_is_not_exploding():
    # a healthy start: the norm rises ~10x as the model leaves its initialisation; and a single
    # 100x spike alone, with the loss falling, stays a misfit batch
    rising = [0.3, 0.5, 1.5, 3.0, 2.8] + [3.0] * 35
    falling_loss = [6.9 - 0.1 * s for s in range(40)]
    assert exploding(scalar_run(**{SENTINEL_GRAD_NORM: rising, "train_loss": falling_loss})) == []
    lone_spike = [0.3, 0.4, 0.35, 60.0] + [0.35] * 36
    assert exploding(scalar_run(**{SENTINEL_GRAD_NORM: lone_spike, "train_loss": falling_loss})) == []


@pytest.mark.parametrize("case_id, rule, code", [
    ("lightning-lstm-lm-noclip", "loss_divergence", "trainer = Trainer(gradient_clip_val=1.0)"),
    ("hf-gpt2-lr1", "loss_divergence", "args = TrainingArguments(..., max_grad_norm=1.0)"),
])
def test_stack_case_is_flagged_with_the_stacks_clipping_code(tmp_path, case_id, rule, code):
    pytest.importorskip("lightning" if case_id.startswith("lightning") else "transformers")
    from bench import diagnosis_eval as evaluation

    result = evaluation.evaluate_case(case_id, str(tmp_path), False, None, "cpu")
    assert rule in result["fired"] and not result["missing"] and not result["unexpected"]
    assert result["harmful_remedies"] == [] and result["check_failures"] == []
    from gradwatch.trainer.diagnose import diagnose_run

    # the divergence may be told in an exploding card's cause chain (one card per problem)
    flag = next(f for f in diagnose_run(result["run"])["flags"]
                if rule in [f["rule"]] + [a["rule"] for a in f.get("absorbed") or []])
    assert dict(zip(flag["remedy_ids"], flag["remedy_code"]))["clipping"] == code
    if case_id.startswith("lightning"):  # the sentinel caught the step-4 blow-up at every=10
        assert result["fired"].get("exploding_gradient") == "critical"

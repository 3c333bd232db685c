"""Two large-model instabilities reproduced in a small GPT on the CPU (bench/large_model_instabilities.py),
each flagged before the loss blows up. Truth: the plain-torch loss, blown up at the first step whose loss is
>= 2x the lowest before it."""

from __future__ import annotations

import pytest

from bench.large_model_instabilities import blow_up_step, train
from gradwatch.trainer.diagnose import RunData, diagnose
from gradwatch.trainer.runlog import RunReader

pytest.importorskip("torch")


def flagged(path):
    with RunReader(path) as reader:
        flags = diagnose(RunData.from_reader(reader))
    return {f.rule: f for f in flags if f.severity in ("warning", "critical")}


@pytest.mark.slow
def test_attention_logit_growth_is_flagged_long_before_the_blow_up_and_qk_norm_bounds_it(tmp_path):
    path, losses = train(tmp_path / "plain", qk_norm=False)
    blow = blow_up_step(losses)
    assert blow is not None and blow > 50  # truth: the loss blows up late in the warmup
    flags = flagged(path)
    growth = flags["attention_logit_growth"]
    assert blow - growth.first_step >= 20  # lead time in steps
    assert "qk-norm" in growth.remedy_ids[:2]  # after lower-lr when the lr is flagged too high as well
    # the same recipe with QK layer norm: the logits stay bounded, no attention flag
    path, losses = train(tmp_path / "qk", qk_norm=True)
    assert "attention_logit_growth" not in flagged(path)


@pytest.mark.slow
def test_adam_second_moment_lag_is_flagged_before_the_blow_up(tmp_path):
    path, losses = train(tmp_path / "qk", qk_norm=True)
    blow = blow_up_step(losses)
    assert blow is not None
    lag = flagged(path)["adam_second_moment_lag"]
    assert 1 <= blow - lag.first_step <= 10
    assert "adam-beta2" in lag.remedy_ids[:2]

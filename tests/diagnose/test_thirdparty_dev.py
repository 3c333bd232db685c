"""The development set's third-party cases (pytorch/examples word_language_model, vendored): the oracle
reads plain-torch records, and the strict score holds on the runs."""

from __future__ import annotations

import math

import pytest

from bench import diagnosis_thirdparty as thirdparty


def test_oracle_reads_kinds_from_plain_records():
    ln_k = math.log(100)
    base = {"ln_k": ln_k, "nonfinite": [False] * 8, "zero": [False] * 8}
    assert thirdparty.oracle(dict(base, loss=[4.6, 4.0, 3.5, 3.2, 3.0, 2.9, 2.8, 2.7], grad=[1.0] * 8)) == ("healthy", None)
    assert thirdparty.oracle(dict(base, loss=[4.6] * 8, grad=[1, 1, 1, 1, 500, 2, 2, 2])) == ("exploding", 4)
    assert thirdparty.oracle(dict(base, loss=[4.6, 4, 5, 6, 6, 6, 6, 6], grad=[1] * 8)) == ("worse", 2)
    assert thirdparty.oracle(dict(base, loss=[4.6] * 8, grad=[0] * 8, zero=[True] * 8)) == ("zero", 0)


@pytest.mark.slow
def test_word_language_model_dev_cases_score_strictly(tmp_path):
    pytest.importorskip("torch")
    cases = tuple(c for c in thirdparty.DEV_CASES if c.id in ("wlm-noclip-e10", "wlm-clip0"))
    out = thirdparty.evaluate(cases, tmp_path)
    assert out["summary"]["strict_correct"] == 2, out["results"]
    assert out["summary"]["harmful_remedies"] == 0

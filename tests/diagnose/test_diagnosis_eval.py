"""The diagnosis evaluation (bench/diagnosis_eval.py): its scoring on hand-made results, and the
--quick matrix end to end - every pathology flagged with its rule, no warning or critical flag on a
healthy run, within the lag targets."""

from __future__ import annotations

import json

import pytest

from bench import diagnosis_eval as evaluation
from bench.diagnosis_eval import CASES, get_case


def result(case, expected=(), allowed=(), fired=None, raised=None, group="pathology", lags=None):
    fired = dict(fired or {})
    raised = list(raised if raised is not None else fired)
    return {
        "case": case, "arch": "mlp", "group": group, "expected": list(expected), "allowed": list(allowed),
        "fixes": [], "fired": fired, "info": [], "live_fired": raised, "raised": raised,
        "missing": [r for r in expected if r not in fired],
        "unexpected": [r for r in raised if r not in expected and r not in allowed],
        "lags": lags or {}, "seconds": 0.1, "cpu_seconds": 0.1,
    }


def test_logged_lag_counts_logged_steps_between_oracle_and_detection():
    grid = [0, 5, 10, 15, 20]
    assert evaluation.logged_lag(grid, 5, 20) == 3
    assert evaluation.logged_lag(grid, 7, 7) == 0
    assert evaluation.logged_lag(grid, 20, 5) == -3
    assert evaluation.logged_lag(grid, None, 5) is None


def test_precision_counts_only_rules_neither_expected_nor_allowed():
    results = [
        result("a", expected=["vanishing_gradient"], allowed=["underfitting"],
               fired={"vanishing_gradient": "warning", "underfitting": "warning"}),
        result("b", expected=["dead_units"], fired={"dead_units": "critical", "vanishing_gradient": "warning"}),
        result("c", expected=["dead_units"], fired={}),
        result("h", group="healthy", fired={}, raised=["underfitting"]),  # raised live only
    ]
    summary = evaluation.summarise(results, wall=1.0)
    assert summary["per_rule"]["vanishing_gradient"] == {"precision": 0.5, "recall": 1.0}
    assert summary["per_rule"]["underfitting"]["precision"] == 0.0  # allowed in a, unexpected in h
    assert summary["per_rule"]["dead_units"]["recall"] == 0.5
    assert summary["pathology_recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["healthy_false_flags"] == 1
    assert not summary["all_targets_met"]


def test_lag_beyond_the_target_fails_the_targets():
    late = {"vanishing_gradient": {"lag_logged": evaluation.MAX_LAG_LOGGED_STEPS + 1}}
    on_time = {"vanishing_gradient": {"lag_logged": 2}}
    assert not evaluation.lag_ok(result("a", lags=late))
    assert evaluation.lag_ok(result("a", lags=on_time))


def test_case_matrix_is_labelled_consistently():
    rules = set(evaluation.ORACLES)
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert set(case.expected) <= rules and set(case.allowed) <= rules and set(case.fixes) <= rules
        assert not set(case.expected) & set(case.allowed), case.id
        assert not set(case.fixes) & (set(case.expected) | set(case.allowed)), case.id
    # each pathology on at least two architectures, and a healthy control of each architecture
    for rule in rules:
        assert len({case.arch for case in CASES if rule in case.expected}) >= 2, rule
    healthy = {case.arch for case in CASES if case.group == "healthy"}
    assert {"mlp", "embedding", "lstm", "cnn", "lstm-lm", "gpt2", "resnet"} <= healthy
    # users' loops are watched at three cadences, and the lesson's clipping run must not be told to clip
    assert {case.every for case in CASES if hasattr(case, "every")} >= {1, 10, 100}
    assert "clipping" in evaluation.harmful_remedies(get_case("lesson-clipping"))
    lesson = {case.preset: case for case in CASES if case.group == "lesson"}
    assert "vanishing_gradient" in lesson["vanishing"].expected
    assert "exploding_gradient" in lesson["exploding"].expected
    assert "overfitting" in lesson["overfit"].expected
    assert lesson["relu"].fixes == ("vanishing_gradient",)
    assert lesson["clipping"].fixes == ("exploding_gradient",)
    assert lesson["regularized"].fixes == ("overfitting",)
    with pytest.raises(KeyError, match="unknown case"):
        get_case("no-such-case")


def test_matrix_holds_runs_recorded_through_lightning_and_hf_trainer():
    stack_cases = [case for case in CASES if isinstance(case, evaluation.stacks.StackCase)]
    by_stack = {stack: [c for c in stack_cases if c.stack == stack] for stack in ("lightning", "transformers")}
    for stack, cases in by_stack.items():
        assert any(c.healthy for c in cases), stack
        assert any(c.accumulate > 1 and c.healthy for c in cases), stack
        assert any({"loss_divergence", "exploding_gradient"} & set(c.expected) for c in cases), stack
        # a diverging run without clipping is told to clip in its own stack's words
        clip_code = {"lightning": "gradient_clip_val", "transformers": "max_grad_norm"}[stack]
        assert any(c.remedy_code.get("clipping") == clip_code for c in cases), stack
    assert any("dead_units" in c.expected for c in by_stack["lightning"])
    # a pathology watched at every=100 (one logged layer step): the loss and sentinels carry it
    assert any(getattr(c, "every", 0) == 100 and c.expected for c in CASES)
    # HF clips at 1.0 by default: its healthy runs must not be told to clip
    assert all("clipping" in evaluation.harmful_remedies(c) for c in by_stack["transformers"] if c.clip)


def test_remedy_code_checks_name_a_missing_remedy_and_code_in_the_wrong_stack():
    from gradwatch.trainer.diagnose import Flag

    def flag(severity, ids, codes):
        return Flag(rule="loss_divergence", severity=severity, layers=[], first_step=0, last_step=1, evidence={},
                    explanation="", remedy_ids=ids, remedy_code=codes)

    lightning = flag("critical", ["lower-lr", "clipping"], ["...", "trainer = Trainer(gradient_clip_val=1.0)"])
    plain = flag("warning", ["clipping"], ["torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"])
    wanted = {"clipping": "gradient_clip_val"}
    assert evaluation.remedy_code_failures([lightning], wanted) == []
    assert evaluation.remedy_code_failures([lightning, plain], wanted) == [
        "'clipping' code lacks 'gradient_clip_val': 'torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)'"]
    info_only = flag("info", ["clipping"], ["trainer = Trainer(gradient_clip_val=1.0)"])
    assert evaluation.remedy_code_failures([info_only], wanted) == ["no active flag offers 'clipping'"]


def test_quick_matrix_flags_every_pathology_and_nothing_on_healthy_runs(tmp_path, capsys):
    out = evaluation.main(["--quick", "--logdir", str(tmp_path), "--json-out", str(tmp_path / "result.json")])
    cases = out["cases"]
    assert len(cases) == len([c for c in CASES if getattr(c, "quick", None) is not None]) >= 15
    for case in cases:
        if case["expected"]:
            assert not case["missing"], f"{case['case']}: expected {case['expected']}, fired {case['fired']}"
        else:
            assert not case["raised"], f"healthy {case['case']} carries {case['raised']}"
        assert not case["unexpected"], f"{case['case']}: unexpected {case['unexpected']}"
        assert evaluation.lag_ok(case), f"{case['case']}: {case['lags']}"
        assert case["harmful_remedies"] == [], case["case"]
    summary = out["summary"]
    assert summary["harmful_remedies"] == 0
    assert summary["pathology_recall"] == 1.0 and summary["healthy_false_flags"] == 0
    assert summary["all_targets_met"]
    # the last printed line is the summary as one JSON object
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(summary))
    assert json.loads((tmp_path / "result.json").read_text())["summary"]["cases"] == len(cases)

"""The held-out diagnosis evaluation (bench/diagnosis_heldout.py): the truth probe's measurements
against torch, the oracle's labels on hand-made records, the strict scoring on hand-made flags, and
one case end to end producing a well-formed JSON line. No test here asserts a held-out score."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bench import diagnosis_heldout as heldout
from bench.thirdparty_heldout import oracle
from bench.thirdparty_heldout.cases import CASES, get_case
from bench.thirdparty_heldout.truth_probe import TruthProbe


def record(losses, norms, val=(), dead=None, depth=("fc1", "fc2", "fc3"), num_classes=None):
    return {"steps": len(norms), "loss": dict(enumerate(losses)), "val": list(val), "grad_norms": norms,
            "nonfinite_grads": [0 if all(math.isfinite(v) for v in n.values()) else 1 for n in norms],
            "dead": dead or {}, "depth_layers": list(depth), "layer_of_site": {}, "num_classes": num_classes}


def flag(rule, first_step, remedies=(), layers=(), severity="warning"):
    return {"rule": rule, "severity": severity, "first_step": first_step, "remedy_ids": list(remedies),
            "layers": list(layers)}


# ---- the probe ----------------------------------------------------------------------------------
def test_probe_measures_every_steps_layer_norms_losses_and_dead_units_like_torch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    nn.init.constant_(model[0].bias, -50.0)  # every hidden unit dead
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = TruthProbe(model, relu_sites={"1": "output"}, layer_of_site={"1": "0"})
    expected = []
    with probe:
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 2, (16,)))
            probe.record_loss(loss)
            loss.backward()
            expected.append(torch.cat([p.grad.flatten() for p in model[2].parameters()]).norm().item())
            optimizer.step()
            optimizer.zero_grad()
    rec = probe.record()
    assert rec["steps"] == 3 and sorted(rec["loss"]) == [0, 1, 2]
    assert [n["2"] for n in rec["grad_norms"]] == pytest.approx(expected, rel=1e-6)
    assert all(n["0"] == 0.0 for n in rec["grad_norms"])  # no gradient passes a dead layer
    assert rec["dead"]["1"] == {0: 1.0, 1: 1.0, 2: 1.0}
    assert rec["depth_layers"] == ["0", "2"]
    # detached: a later step of another optimizer is not counted
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert probe.record()["steps"] == 3


# ---- the oracle ---------------------------------------------------------------------------------
def steady(n, **norms):
    return [dict(norms) for _ in range(n)]


def test_oracle_dates_a_blow_up_to_the_gradient_surge_and_names_the_surging_layers():
    norms = steady(6, fc1=1.0, fc2=1.0, fc3=1.0) + [{"fc1": 500.0, "fc2": 300.0, "fc3": 2.0}] + \
        [{"fc1": math.nan, "fc2": math.nan, "fc3": math.nan}]
    losses = [2.3, 2.2, 2.1, 2.0, 1.9, 1.9, 1.9, 40.0]
    truth = oracle.truth(record(losses, norms, num_classes=10))
    assert truth["kind"] == "divergence"
    assert truth["onset"] == 6 and truth["layers"] == ["fc1", "fc2"]
    assert truth["findings"]["divergence"]["nan_step"] == 7


def test_oracle_finds_vanishing_dead_overfitting_underfitting_and_healthy():
    vanishing = steady(20, fc1=1e-7, fc2=5e-5, fc3=1e-1)
    assert oracle.truth(record([1.0] * 20, vanishing))["kind"] == "vanishing"
    assert oracle.truth(record([1.0] * 20, vanishing))["layers"] == ["fc1", "fc2"]

    dead = {"relu1": {s: (0.1 if s < 4 else 0.95) for s in range(20)}}
    truth = oracle.truth(record([1.0 - 0.01 * s for s in range(20)], steady(20, fc1=1, fc2=1, fc3=1), dead=dead))
    assert (truth["kind"], truth["onset"], truth["layers"]) == ("dead_units", 4, ["relu1"])

    losses = [2.0 - 0.05 * s for s in range(40)]
    val = [(9, 1.5), (19, 1.2), (29, 1.3), (39, 1.45)]
    truth = oracle.truth(record(losses, steady(40, fc1=1, fc2=1, fc3=1), val=val))
    assert (truth["kind"], truth["onset"]) == ("overfitting", 19)

    flat = [math.log(10) + 0.01 * (-1) ** s for s in range(40)]
    assert oracle.truth(record(flat, steady(40, fc1=1, fc2=1, fc3=1), num_classes=10))["kind"] == "underfitting"

    learning = [2.3 * 0.97 ** s for s in range(40)]
    val = [(9, 1.6), (19, 1.2), (29, 0.9), (39, 0.8)]
    assert oracle.truth(record(learning, steady(40, fc1=1, fc2=1, fc3=1), val=val, num_classes=10))["kind"] == "healthy"


# ---- scoring ------------------------------------------------------------------------------------
def divergence_truth(onset=6, layers=("fc1",)):
    return {"kind": "divergence", "onset": onset, "layers": list(layers), "findings": {"divergence": {}}}


def test_strict_needs_kind_onset_layers_and_a_fitting_remedy_without_harm():
    case = get_case("resnet-lr-high")  # applies batch norm, ReLU, weight decay
    right = heldout.score_case(case, divergence_truth(), [flag("exploding_gradient", 8, ["lower-lr"], ["fc1"])])
    assert right["strict_right"] and right["onset_error"] == 2

    late = heldout.score_case(case, divergence_truth(), [flag("loss_divergence", 6 + heldout.TOLERANCE_STEPS + 1,
                                                              ["lower-lr"])])
    assert late["kind_right"] and not late["onset_right"] and not late["strict_right"]

    blamed = heldout.score_case(case, divergence_truth(), [flag("exploding_gradient", 6, ["lower-lr"], ["fc9"])])
    assert blamed["layers_right"] is False and not blamed["strict_right"]

    harmful = heldout.score_case(case, divergence_truth(), [flag("nonfinite", 6, ["lower-lr", "batchnorm"]),
                                                            flag("underfitting", 0, ["higher-lr"])])
    assert harmful["harmful_remedies"] == ["nonfinite:batchnorm", "underfitting:higher-lr"]
    assert harmful["kind_right"] and not harmful["strict_right"]

    no_fit = heldout.score_case(case, divergence_truth(), [flag("loss_divergence", 6, ["init"])])
    assert not no_fit["remedy_right"] and not no_fit["strict_right"]

    wrong_kind = heldout.score_case(case, divergence_truth(), [flag("vanishing_gradient", 6, ["init"])])
    assert not wrong_kind["kind_right"] and wrong_kind["unexpected"] == ["vanishing_gradient"]


def test_steps_of_the_stack_shift_the_truth_and_info_flags_do_not_count():
    case = get_case("hf-bert-lr-high")  # HF counts optimizer steps from 1
    shifted = heldout.score_case(case, divergence_truth(onset=4, layers=()), [flag("loss_divergence", 5, ["lower-lr"])],
                                 step_offset=1)
    assert shifted["truth_onset"] == 5 and shifted["onset_error"] == 0 and shifted["strict_right"]
    healthy = {"kind": "healthy", "onset": None, "layers": [], "findings": {}}
    quiet = heldout.score_case(get_case("hf-bert-healthy"), healthy, [flag("learning_rate", 3, severity="info")])
    assert quiet["strict_right"] and quiet["false_flags"] == 0
    noisy = heldout.score_case(get_case("hf-bert-healthy"), healthy, [flag("learning_rate", 3, ["clipping"])])
    assert noisy["false_flags"] == 1 and noisy["harmful_remedies"] == ["learning_rate:clipping"]


def test_summary_scores_pathologies_and_counts_false_flags_and_errors():
    rows = [
        {"case": "a", "intent": "divergence", "truth": "divergence", "strict_right": True, "kind_right": True,
         "onset_error": -2, "harmful_remedies": [], "layers_right": True},
        {"case": "b", "intent": "vanishing", "truth": "vanishing", "strict_right": False, "kind_right": True,
         "onset_error": 7, "harmful_remedies": ["vanishing_gradient:relu"], "layers_right": True},
        {"case": "c", "intent": "healthy", "truth": "healthy", "false_flags": 2, "harmful_remedies": []},
        {"case": "d", "intent": "underfitting", "truth": None, "error": "RuntimeError: boom"},
    ]
    summary = heldout.summarise(rows, wall=1.0)
    assert summary["pathology_cases"] == 3 and summary["healthy_cases"] == 1
    assert summary["strict_score"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["kind_score"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["false_flags_healthy"] == 2 and summary["harmful_remedies"] == 1 and summary["errors"] == 1
    assert summary["onset_error_steps"]["max"] == 7


def test_cases_cover_five_codebases_each_with_a_healthy_run():
    codebases = {case.codebase for case in CASES}
    assert len(codebases) >= 5
    assert all(any(c.codebase == name and c.intent == "healthy" for c in CASES) for name in codebases)
    assert {c.intent for c in CASES} >= {"divergence", "vanishing", "dead_units", "overfitting", "underfitting"}
    # none of the development set's third-party runs (issue 18): word_language_model, GPT-2, a Lightning MLP
    assert not any(word in c.id for c in CASES for word in ("gpt2", "word", "lstm-lm", "mlp"))
    with pytest.raises(SystemExit):
        heldout.main(["--only", "no-such-case"])


def test_seeds_run_each_case_again_with_its_seed_offset():
    case = get_case("mnist-healthy-s2")
    assert (case.id, case.seed_offset, case.options) == ("mnist-healthy-s2", 2, get_case("mnist-healthy").options)
    ids = [c.id for c in heldout.select(False, "mnist-healthy,resnet-healthy", seeds=2)]
    assert ids == ["mnist-healthy", "resnet-healthy", "mnist-healthy-s1", "resnet-healthy-s1"]
    assert len(heldout.select(True, None, seeds=3)) == 3 * sum(c.quick for c in CASES)
    with pytest.raises(KeyError):
        get_case("mnist-healthy-sx")
    with pytest.raises(SystemExit):
        heldout.main(["--seeds", "0", "--list"])


# ---- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_case_end_to_end_prints_a_well_formed_json_line(capsys, tmp_path):
    heldout.main(["--only", "lightning-ae-healthy", "--logdir", str(tmp_path), "--json-out", str(tmp_path / "r.json")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["set"] == "heldout" and summary["cases"] == 1
    for key in ("strict_score", "kind_score", "false_flags_healthy", "harmful_remedies", "onset_error_steps"):
        assert key in summary
    assert summary["errors"] == 0
    (case,) = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert case["truth"] in ("healthy", *oracle.KINDS)
    assert case["truth_evidence"]["steps"] > 0 and case["run"].startswith(str(tmp_path))

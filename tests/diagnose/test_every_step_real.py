"""Diagnosis with every step seen, on real small torch runs.

An LSTM language model at SGD lr 20 without clipping (word_language_model's model without its clip)
blows up within its first steps; gradwatch watches it at every=10, so layer statistics exist at steps
0, 10, 20 only. The per-parameter gradient norms of every step are measured here with plain torch
(p.grad.norm() before optimizer.step(), what the capture's every-step sentinels record) and handed to
the diagnosis as StepNorms; truth (the surge step and the layers that surged) is read from the same
plain-torch numbers by a direct test, not by a gradwatch rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.diagnosis_userloops import VOCAB, lstm_lm, token_batches
from gradwatch.trainer.diagnose import RunData, diagnose
from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.runlog.step_norms import StepNorms

torch = pytest.importorskip("torch")
ACTIVE = ("warning", "critical")


def train_lstm(tmp_path, *, lr: float, steps: int, every: int, loss_log: str = "every", seed: int = 0):
    """Train the LSTM LM in a plain loop watched at `every`; returns (RunData, measured StepNorms,
    per-step losses). loss_log: "every" logs each step's loss; "mean10" logs the mean over each
    10 steps at the 10th (the HF Trainer's logging_steps average)."""
    from torch import nn

    from gradwatch import Run

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = lstm_lm()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = token_batches(seed, 20, steps)
    names = [n for n, _ in model.named_parameters()]
    layers = [n.rsplit(".", 1)[0] for n in names]
    norms, losses = [], []
    config = {"optimizer": "sgd", "lr": lr, "vocab_size": VOCAB}
    if loss_log != "every":
        config["loss_averaged"] = True
    with Run(tmp_path, name="lstm", config=config) as run:
        run.watch(model, every=every)
        pending = []
        for step in range(steps):
            x, y = batches[step % len(batches)]
            out = model(x)
            loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            loss.backward()
            norms.append([float(p.grad.norm()) if p.grad is not None else math.nan for p in model.parameters()])
            optimizer.step()
            optimizer.zero_grad()
            value = float(loss.detach())
            losses.append(value)
            pending.append(value)
            if loss_log == "every":
                run.log(step, train_loss=value)
            elif (step + 1) % 10 == 0:
                run.log(step, train_loss=float(np.mean(pending)))
                pending = []
            if not math.isfinite(value):
                break
        path = run.path
    with RunReader(path) as reader:
        data = RunData.from_reader(reader)
    if not data.step_norms.empty:
        # the capture's layer of each parameter (an LSTM's layers are rnn.l0, rnn.l1)
        assert len(data.step_norms.layers) == len(names)  # one column per parameter, in parameters() order
        layers = list(data.step_norms.layers)
    values = np.asarray(norms, dtype=float)
    n = len(values)
    measured = StepNorms(np.arange(n, dtype=np.int64), tuple(names), tuple(layers), values, values.copy(),
                         np.zeros(values.shape, dtype=np.int64), np.ones(n, dtype=np.int64))
    if data.step_norms.empty:  # a capture without every-step norms: the plain-torch measurement
        data.step_norms = measured
    else:  # the capture's numbers are torch's
        exact = data.step_norms.exact()
        np.testing.assert_allclose(exact.norm_max, values[exact.steps], rtol=1e-6)
    return data, measured, np.asarray(losses)


def truth_surge(norms: StepNorms, factor: float = 20.0):
    """Plain reading of the measured norms: the first step whose total norm is `factor` x the median
    of the steps before it (from the third step), and the layers whose own norm rose 10x there."""
    total = np.sqrt(np.nansum(np.asarray(norms.norm_max) ** 2, axis=1))
    layer_names, per_layer = norms.layer_norms()
    for i in range(3, len(total)):
        if total[i] >= factor * np.median(total[:i]):
            rose = [layer for j, layer in enumerate(layer_names)
                    if per_layer[i, j] >= 10 * np.median(per_layer[:i, j])]
            return i, rose
    return None, []


def test_blow_up_between_logged_steps_is_dated_to_its_step_and_its_layers(tmp_path):
    data, measured, losses = train_lstm(tmp_path, lr=20.0, steps=40, every=10)
    step, rose = truth_surge(measured)
    assert step is not None and step % 10 != 0  # the surge happened on an unlogged step
    assert sorted(data.views.grad_norm.index)[:2] == [0, 10]  # layer statistics only at every 10th
    flags = diagnose(data)
    exploding = [f for f in flags if f.rule == "exploding_gradient" and f.severity in ACTIVE]
    assert exploding, [f.rule for f in flags]
    flag = exploding[0]
    assert abs(flag.first_step - step) <= 1
    assert flag.evidence["every_step_onset"] == step  # dated to its own step by the every-step norms
    assert flag.layers and set(flag.layers) <= set(rose)
    assert any(layer.startswith("rnn") for layer in flag.layers)
    assert f"date the surge to step {step}" in flag.explanation
    # one problem, one card: the loss divergence is told in its cause chain, the fix first
    story = [f for f in flags if f.rule in ("exploding_gradient", "loss_divergence", "nonfinite")
             and f.severity in ACTIVE]
    assert story == [flag] and "loss_divergence" in flag.rules
    chain = flag.evidence["chain"]
    assert [c["step"] for c in chain] == sorted(c["step"] for c in chain)  # causes in step order
    assert {c["rule"] for c in chain} == {"exploding_gradient", "loss_divergence"}
    assert f"radients surged in {flag.layers[0]}" in flag.explanation.split(". ")[0]
    assert "the loss diverged from step" in flag.explanation.split(". ")[0].lower()
    assert flag.remedy_ids[0] == "clipping"  # no clipping in the run: clipping is the fix
    # the Runs page counts merged flags: the card and the same findings raised live are one problem
    from gradwatch.trainer.diagnose.merge import merge_flags

    live = [dict(told, raised_step=20) for told in flag.absorbed] + [dict(flag.to_dict(), raised_step=10)]
    problems = [f for f in merge_flags([f.to_dict() for f in flags], live) if f["severity"] in ACTIVE]
    assert len(problems) == 1 and problems[0]["history"]["findings"] == len(live) + 1


def test_averaged_loss_does_not_hide_or_delay_the_divergence(tmp_path):
    data, measured, losses = train_lstm(tmp_path, lr=20.0, steps=40, every=10, loss_log="mean10")
    step, _ = truth_surge(measured)
    loss = data.scalar("train_loss")
    assert list(loss.index[:2]) == [9, 19]  # the first logged value is the mean of steps 0-9
    flags = diagnose(data)
    found = [f for f in flags if f.rule in ("loss_divergence", "exploding_gradient") and f.severity in ACTIVE]
    assert found
    assert min(f.first_step for f in found) <= step + 1  # dated to the step, not the 10-step mean


def test_untrained_level_is_the_step0_loss_or_ln_k(tmp_path):
    data, _, losses = train_lstm(tmp_path, lr=1.0, steps=12, every=10)
    untrained = data.untrained_loss()
    assert untrained["source"] == "step-0 loss" and untrained["loss"] == pytest.approx(losses[0], rel=1e-6)
    assert untrained["chance"] == pytest.approx(math.log(VOCAB))
    averaged, _, _ = train_lstm(tmp_path / "avg", lr=1.0, steps=20, every=10, loss_log="mean10")
    assert averaged.untrained_loss()["source"] == "ln K"

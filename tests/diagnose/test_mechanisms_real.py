"""Mechanism checks on real small torch runs: all-zero gradients (a clip threshold of 0), weights
collapsing under weight decay, a classifier sitting at chance after an overconfident start, and a
language model that ends worse than untrained. Truth is read in the loop with plain torch (the
gradients, weight norms and losses themselves), not from a gradwatch rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.diagnosis_userloops import VOCAB, lstm_lm, token_batches
from gradwatch.trainer.diagnose import RunData, diagnose
from gradwatch.trainer.runlog import RunReader

torch = pytest.importorskip("torch")
nn = torch.nn
ACTIVE = ("warning", "critical")


def active(flags, rule=None):
    return [f for f in flags if f.severity in ACTIVE and (rule is None or f.rule == rule)]


def read(path) -> RunData:
    with RunReader(path) as reader:
        return RunData.from_reader(reader)


def mlp(act=nn.ReLU, depth=3, width=32, dim=16, out=2, bias=True):
    layers, d = [], dim
    for _ in range(depth):
        layers += [nn.Linear(d, width, bias=bias), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, out, bias=bias))


def points(n, dim=16, classes=2, seed=0, random_labels=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    if random_labels:
        y = torch.randint(0, classes, (n,), generator=g)
    else:
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def test_clip_threshold_zero_is_all_zero_gradients_not_raise_the_lr(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = points(512)
    with Run(tmp_path, name="clip0", config={"clip_norm": 0.0, "num_classes": 2}) as run:
        run.watch(model, every=5)
        for step in range(120):
            i = (step * 64) % 512
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.0)
            assert all(float(p.grad.abs().max()) == 0 for p in model.parameters())  # truth, plain torch
            optimizer.step()
            optimizer.zero_grad()
            run.log(step, train_loss=float(loss))
            if (step + 1) % 20 == 0:
                run.log(step, val_loss=float(loss))
        path = run.path
    flags = diagnose(read(path))
    zero = active(flags, "zero_gradients")
    assert zero and zero[0].severity == "critical" and zero[0].first_step <= 5
    assert "clips the gradient norm at 0" in zero[0].explanation
    assert "clip_grad_norm_(model.parameters(), 1.0)" in zero[0].remedy_code[0]
    assert not [f for f in active(flags) if "higher-lr" in f.remedy_ids]
    assert [f.rule for f in active(flags)] == ["zero_gradients"]


def test_weight_decay_collapse_is_its_own_finding_not_vanishing(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    model = mlp(act=nn.Sigmoid, depth=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1.0)
    x, y = points(512)
    first = [float(m.weight.norm()) for m in model if isinstance(m, nn.Linear)]
    with Run(tmp_path, name="collapse", config={"num_classes": 2}) as run:
        run.watch(model, every=2)
        for step in range(80):
            i = (step * 64) % 512
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            run.log(step, train_loss=float(loss))
        path = run.path
    last = [float(m.weight.norm()) for m in model if isinstance(m, nn.Linear)]
    shrink = [b / a for a, b in zip(first, last)]
    assert shrink[0] < 0.01 and sum(r < 0.1 for r in shrink) >= 3  # truth: most layers shrank 10x, the first 100x
    flags = diagnose(read(path))
    collapse = active(flags, "weight_collapse")
    assert collapse and collapse[0].remedy_ids[0] == "less-regularisation"
    assert "weight_decay=0.01" in collapse[0].remedy_code[0] and "torch.optim.SGD" in collapse[0].remedy_code[0]
    assert not active(flags, "vanishing_gradient")
    assert not [f for f in active(flags) if {"relu", "batchnorm"} & set(f.remedy_ids)]


def test_sitting_at_chance_after_an_overconfident_start_is_underfitting(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    k = 10
    model = mlp(out=k)
    with torch.no_grad():
        model[-1].weight.mul_(30.0)  # overconfident start: the first loss is far above ln K
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = points(4096, classes=k, random_labels=True)
    xv, yv = points(1024, classes=k, seed=1, random_labels=True)
    losses = []
    with Run(tmp_path, name="chance", config={"num_classes": k}) as run:
        run.watch(model, every=10)
        for step in range(300):
            i = (step * 128) % 4096
            loss = nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
            run.log(step, train_loss=float(loss))
            if (step + 1) % 30 == 0:
                with torch.no_grad():
                    run.log(step, val_loss=float(nn.functional.cross_entropy(model(xv), yv)))
        path = run.path
    assert np.median(losses[:3]) > 1.3 * math.log(k)  # truth: started well above chance
    assert abs(np.mean(losses[-30:]) / math.log(k) - 1) < 0.05  # ... and ends at chance
    flags = diagnose(read(path))
    under = active(flags, "underfitting")
    assert under and under[0].severity == "critical" and under[0].evidence["at_chance"] == 1


@pytest.mark.slow
def test_lm_that_ends_worse_than_untrained_is_a_finding(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    model = lstm_lm()
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    # lr 20 for 60 steps (word_language_model's recipe, clip 0.25), then 10x: the loss climbs back.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if s < 60 else 10.0)
    batches = token_batches(0, 20, 120)
    losses = []
    with Run(tmp_path, name="worse", config={"vocab_size": VOCAB, "clip_norm": 0.25}) as run:
        run.watch(model, every=10)
        for step in range(120):
            x, y = batches[step % len(batches)]
            out = model(x)
            loss = nn.functional.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            losses.append(float(loss))
            run.log(step, train_loss=float(loss))
        path = run.path
    chance = math.log(VOCAB)
    assert min(losses[:60]) < 0.8 * chance and np.median(losses[-10:]) > chance  # truth
    flags = diagnose(read(path))
    divergence = active(flags, "loss_divergence")
    assert divergence and divergence[0].severity == "critical"
    assert divergence[0].evidence["worse_than_untrained"] == 1
    assert "worse than the untrained model" in divergence[0].explanation
    assert 55 <= divergence[0].first_step <= 75


def test_one_layer_moving_fast_is_judged_per_layer_not_hidden_by_the_median(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    model = mlp(depth=4)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    fast = linears[2]
    others = [p for m in linears if m is not fast for p in m.parameters()]
    optimizer = torch.optim.SGD([{"params": others, "lr": 0.01}, {"params": fast.parameters(), "lr": 60.0}])
    x, y = points(1024)
    moved = []
    with Run(tmp_path, name="one-layer", config={"num_classes": 2}) as run:
        run.watch(model, every=2)
        for step in range(80):
            i = (step * 64) % 1024
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            before = [m.weight.detach().clone() for m in linears]
            optimizer.step()
            optimizer.zero_grad()
            moved.append([float((m.weight - b).norm() / b.norm()) for m, b in zip(linears, before)])
            run.log(step, train_loss=float(loss))
        path = run.path
    moved = np.asarray(moved)
    # truth: the fast layer moves > 10% per step, the median layer < 1%
    assert np.median(moved[:40, 2]) > 0.1 and np.median(np.median(moved[:40], axis=1)) < 0.01
    data = read(path)
    flags = diagnose(data)
    lr = [f for f in flags if f.rule == "learning_rate" and f.evidence.get("direction") == 1]
    names = dict(zip(data.weighted_layers, range(5)))
    assert lr and [names[layer] for layer in lr[0].layers] == [2]


def _first_token_lstm(tmp_path, forget_bias: float):
    """An LSTM classifier whose label is the sequence's first token: it must carry it through 12 steps."""
    from gradwatch import Run
    from gradwatch.trainer.capture.recurrent_time import RecurrentTimeRecorder

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(50, 16), nn.LSTM(16, 32, batch_first=True), nn.Linear(32, 2)
            with torch.no_grad():
                for b in (self.rnn.bias_ih_l0, self.rnn.bias_hh_l0):
                    b[32:64].fill_(forget_bias / 2)

        def forward(self, x):
            return self.out(self.rnn(self.emb(x))[0][:, -1])

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    with Run(tmp_path, name=f"fb{forget_bias}", config={"num_classes": 2}) as run:
        run.watch(model, every=10)
        recorder = RecurrentTimeRecorder(model, run, every=10)
        for step in range(200):
            x = torch.randint(2, 50, (64, 12), generator=g)
            y = torch.randint(0, 2, (64,), generator=g)
            x[:, 0] = y
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            run.log(step, train_loss=float(loss))
            if (step + 1) % 20 == 0:
                run.log(step, val_loss=float(loss))
        recorder.close()
        path = run.path
    return read(path), losses


def test_lstm_with_gates_shut_by_their_bias_vanishes_through_time(tmp_path):
    data, losses = _first_token_lstm(tmp_path / "shut", forget_bias=-10.0)
    assert abs(np.mean(losses[-20:]) - math.log(2)) < 0.05  # truth: never learned the first token
    flags = diagnose(data)
    through = active(flags, "vanishing_through_time")
    assert through and through[0].layers == ["rnn"] and through[0].evidence["forget_gate_bias"] < -9
    assert through[0].remedy_ids[0] == "gate-bias" and "fill_(0.5)" in through[0].remedy_code[0]
    assert not [f for f in active(flags) if "higher-lr" in f.remedy_ids]
    assert not active(flags, "underfitting")  # told as the through-time finding's symptom


def test_lstm_that_carries_its_state_is_not_flagged(tmp_path):
    data, losses = _first_token_lstm(tmp_path / "open", forget_bias=2.0)
    assert np.mean(losses[-20:]) < 0.05  # truth: learned it
    assert not active(diagnose(data), "vanishing_through_time")

"""Run.watch on real model shapes: an LSTM classifier, and a model with frozen, shared, tied and
unused parameters, batch norm and an embedding. Names are module paths in forward order; every
parameter appears once; missing gradients are skipped without error."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwatch.trainer.capture import hooks as gw_hooks
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader


def read(run_path):
    with RunReader(run_path) as reader:
        tensors = reader.tensors()
        stats, _ = reader.layer_stats()
        steps, _ = reader.steps()
    return tensors, stats, steps


class LSTMClassifier(nn.Module):
    """Registered head-first on purpose: forward order (emb, lstm, head) differs from it."""

    def __init__(self, vocab=50, dim=8, hidden=12, classes=3):
        super().__init__()
        self.head = nn.Linear(hidden, classes)
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)

    def forward(self, tokens):
        out, (h, _) = self.lstm(self.emb(tokens))
        return self.head(h[-1])


def test_lstm_classifier_names_in_forward_order_and_grads_match(tmp_path):
    torch.manual_seed(0)
    model = LSTMClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lstm_out = {}
    model.lstm.register_forward_hook(lambda m, i, o: lstm_out.__setitem__("y", o[0].detach().clone()))
    seen = []
    with Run(tmp_path, name="lstm") as run:
        run.watch(model, every=1)
        for step in range(3):
            tokens = torch.randint(0, 50, (6, 7))
            labels = torch.randint(0, 3, (6,))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens), labels)
            loss.backward()
            train_out = lstm_out["y"]
            with torch.no_grad():  # a validation pass inside the step is not measured
                model(torch.randint(0, 50, (2, 3)))
            opt.step()
            seen.append(({n: p.grad.clone() for n, p in model.named_parameters()}, train_out))
            run.log(step, train_loss=loss)
    tensors, stats, steps = read(run.path)
    params = tensors[tensors["role"] == "param"]
    assert params["name"].tolist() == [
        "emb.weight",
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "head.weight", "head.bias",
    ]
    assert tensors["ord"].is_monotonic_increasing
    with RunReader(run.path) as reader:
        assert reader.layer_order() == ["emb", "lstm", "head"]
    assert steps["step"].tolist() == [0, 1, 2]
    grads = stats[stats["kind"] == "grad"]
    for step, (g, y) in enumerate(seen):
        for name, grad in g.items():
            row = grads[(grads["step"] == step) & (grads["name"] == name)]
            assert len(row) == 1, (step, name)
            assert row["norm"].item() == pytest.approx(torch.linalg.vector_norm(grad.double()).item(), rel=1e-5)
        act = stats[(stats["kind"] == "activation") & (stats["step"] == step)]
        assert act["name"].tolist() == ["lstm"]
        y = y.double()
        assert act["mean"].item() == pytest.approx(y.mean().item(), rel=1e-4, abs=1e-7)
        assert act["norm"].item() == pytest.approx(torch.linalg.vector_norm(y).item(), rel=1e-5)
        assert act["max"].item() == pytest.approx(y.max().item(), rel=1e-6)


class Mixed(nn.Module):
    """Embedding tied to a decoder, a frozen layer, a Linear used twice, batch norm, an unused
    branch; registration order deliberately differs from forward order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.emb = nn.Embedding(20, 8)
        self.frozen = nn.Linear(8, 8)
        self.shared = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.unused = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.decoder = nn.Linear(8, 20, bias=False)
        self.decoder.weight = self.emb.weight  # tied
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def forward(self, tokens):
        h = self.emb(tokens).mean(1)
        h = self.frozen(h)
        h = self.act(self.shared(h))
        h = self.bn(self.shared(h))
        return self.head(h), self.decoder(h)


def train_mixed(tmp_path, steps=2):
    torch.manual_seed(0)
    model = Mixed()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    seen = []
    with Run(tmp_path, name="mixed") as run:
        run.watch(model, every=1)
        for _ in range(steps):
            tokens = torch.randint(0, 20, (5, 4))
            opt.zero_grad()
            cls, lm = model(tokens)
            (cls.pow(2).mean() + lm.pow(2).mean()).backward()
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            opt.step()
            seen.append(({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                         before, {n: p.detach().clone() for n, p in model.named_parameters()}))
    return run.path, seen


def test_shared_tied_frozen_unused_params_named_once_in_forward_order(tmp_path):
    path, _ = train_mixed(tmp_path)
    tensors, _, _ = read(path)
    params = tensors[tensors["role"] == "param"]
    assert params["name"].tolist() == [
        "emb.weight", "frozen.weight", "frozen.bias", "shared.weight", "shared.bias",
        "bn.weight", "bn.bias", "head.weight", "head.bias", "unused.weight", "unused.bias",
    ]
    assert params["name"].is_unique
    assert "decoder.weight" not in set(tensors["name"])  # the tied weight is listed once, as emb's
    assert not any("running" in n for n in tensors["name"])  # buffers are not parameters
    trainable = dict(zip(params["name"], params["trainable"]))
    assert not trainable["frozen.weight"] and not trainable["frozen.bias"]
    assert trainable["shared.weight"]
    outputs = tensors[tensors["role"] == "output"]
    assert outputs["name"].tolist() == ["act"]
    # forward order: emb < frozen < shared < act < bn < head; the unused layer comes last
    order = dict(zip(tensors["layer"], tensors["ord"]))
    assert order["emb"] < order["frozen"] < order["shared"] < order["act"] < order["bn"] < order["head"] < order["unused"]


def test_frozen_and_unused_params_get_weight_records_but_no_grad_records(tmp_path):
    path, seen = train_mixed(tmp_path, steps=2)
    _, stats, steps = read(path)
    assert steps["step"].tolist() == [0, 1]
    for step, (grads, before, after) in enumerate(seen):
        at = stats[stats["step"] == step]
        grad_names = set(at[at["kind"] == "grad"]["name"])
        weight_names = set(at[at["kind"] == "weight"]["name"])
        assert grad_names == {"emb.weight", "shared.weight", "shared.bias", "bn.weight", "bn.bias",
                              "head.weight", "head.bias"}
        assert grad_names == set(grads) - {"decoder.weight"}
        assert {"frozen.weight", "frozen.bias", "unused.weight", "unused.bias"} <= weight_names
        assert len(at[at["kind"] == "weight"]) == 11
        w = at[at["kind"] == "weight"].set_index("name")
        # Frozen parameters have no update ratio; the unused trainable ones did not move.
        assert math.isnan(w.loc["frozen.weight", "update_ratio"])
        assert w.loc["unused.weight", "update_ratio"] == 0.0
        assert w.loc["frozen.weight", "norm"] == pytest.approx(torch.linalg.vector_norm(after["frozen.weight"]).item(),
                                                               rel=1e-6)
        g = at[at["kind"] == "grad"].set_index("name")
        # The tied weight's gradient sums both uses (embedding lookup and decoder).
        assert g.loc["emb.weight", "norm"] == pytest.approx(torch.linalg.vector_norm(grads["emb.weight"]).item(), rel=1e-5)
        assert g.loc["shared.weight", "norm"] == pytest.approx(
            torch.linalg.vector_norm(grads["shared.weight"]).item(), rel=1e-5)
        ratio = torch.linalg.vector_norm(after["shared.weight"] - before["shared.weight"]) / torch.linalg.vector_norm(
            after["shared.weight"])
        assert w.loc["shared.weight", "update_ratio"] == pytest.approx(ratio.item(), rel=1e-4)


def test_forward_hooks_exist_only_around_logged_steps_and_activations_still_recorded(tmp_path):
    """Between logged steps the model carries no gradwatch forward hooks (PyTorch's hook-free fast
    path); activations of logged steps, over every micro-batch, are still recorded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def hooked():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) + gw_hooks.attached(model)

    inputs = [torch.randn(3, 4) for _ in range(2)]
    hook_counts, reference = [], None
    with Run(tmp_path, name="hooks") as run:
        run.watch(model, every=3)
        for step in range(7):
            if step == 3:
                with torch.no_grad():
                    reference = torch.cat([torch.relu(model[0](x)) for x in inputs]).double()
            opt.zero_grad()
            for x in inputs:  # two micro-batches per optimizer step
                model(x).sum().backward()
                if x is inputs[0]:  # after a forward pass: only activation hooks can be left
                    hook_counts.append(hooked())
            opt.step()
        run.flush()
        assert run.probe.step == 7
    # Steps 0, 3, 6 are logged: activation hooks are on during them only.
    assert [c > 0 for c in hook_counts] == [True, False, False, True, False, False, True]
    assert hooked() == 0  # and everything is removed at the end
    with RunReader(run.path) as reader:
        df, _ = reader.layer_stats(kinds=("activation",))
    assert sorted(set(df["step"])) == [0, 3, 6]
    relu = df[(df["name"] == "1") & (df["step"] == 3)].iloc[0]
    assert relu["mean"] == pytest.approx(reference.mean().item(), rel=1e-5)
    assert relu["std"] == pytest.approx(reference.std().item(), rel=1e-4)
    assert relu["zero_frac"] == pytest.approx((reference == 0).double().mean().item())

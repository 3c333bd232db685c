"""Layer order follows the first forward call (never-called modules with their parent, root
parameters last), recurrent layers are split per stacked layer, and activation modules are found by
name (transformers, timm) and by behaviour, never by measuring every leaf output."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import NewGELUActivation

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader


def train(model, x, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()


def recorded(tmp_path, model, x, name):
    with Run(tmp_path, name=name) as run:
        run.watch(model, every=1)
        train(model, x)
    with RunReader(run.path) as reader:
        tensors = reader.tensors()
    params = tensors[tensors["role"] == "param"]
    outputs = tensors[tensors["role"] == "output"]
    return list(dict.fromkeys(params["layer"])), list(outputs["layer"])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        # Registered head-first: registration order is not forward order.
        self.head = nn.Linear(16, 4)
        self.positions = nn.Parameter(torch.randn(5, 16) * 0.1)  # a root-level parameter
        self.embed = nn.Linear(3, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        h = self.embed(x) + self.positions
        h, _ = self.attn(h, h, h)  # out_proj is used functionally, never called as a module
        return self.head(h)


def test_layer_order_is_first_forward_call_with_never_called_modules_after_their_parent(tmp_path):
    torch.manual_seed(0)
    layers, _ = recorded(tmp_path, Attention(), torch.randn(2, 5, 3), "attention")
    assert layers == ["embed", "attn", "attn.out_proj", "head", "Attention"]


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(8, 2)
        self.rnn = nn.LSTM(4, 8, num_layers=2, batch_first=True)
        self.inp = nn.Linear(3, 4)

    def forward(self, x):
        h, _ = self.rnn(torch.tanh(self.inp(x)))
        return self.out(h[:, -1])


def test_stacked_recurrent_layers_are_one_layer_each(tmp_path):
    torch.manual_seed(0)
    model = Recurrent()
    with Run(tmp_path, name="lstm") as run:
        run.watch(model, every=1)
        train(model, torch.randn(2, 5, 3))
    with RunReader(run.path) as reader:
        tensors = reader.tensors()
        grads, _ = reader.layer_stats(kinds=("grad",))
    params = tensors[tensors["role"] == "param"]
    assert list(dict.fromkeys(params["layer"])) == ["inp", "rnn.l0", "rnn.l1", "out"]
    assert set(params[params["layer"] == "rnn.l1"]["param"]) == {"weight_ih_l1", "weight_hh_l1", "bias_ih_l1",
                                                                 "bias_hh_l1"}
    l1 = grads[(grads["layer"] == "rnn.l1") & (grads["step"] == 0)]
    assert len(l1) == 4  # each stacked layer's gradients recorded under its own layer
    # The LSTM output is measured as an activation (its name is the module's).
    assert "rnn" in set(tensors[tensors["role"] == "output"]["layer"])


class Swish(nn.Module):  # a user's own activation: known by behaviour, not by name list
    def forward(self, x):
        return x * torch.sigmoid(x)


class Blocks(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.fc1 = nn.Linear(6, 32)
        self.act = act
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(32, 32)
        self.logits = nn.Linear(32, 50)

    def forward(self, x):
        return self.logits(self.fc2(self.drop(self.act(self.fc1(x)))))


def test_activation_modules_by_well_known_name_and_by_behaviour(tmp_path):
    x = torch.randn(4, 6)
    _, outputs = recorded(tmp_path / "gelu", Blocks(NewGELUActivation()), x, "new-gelu")
    assert outputs == ["act"]
    _, outputs = recorded(tmp_path / "swish", Blocks(Swish()), x, "swish")
    assert outputs == ["act"]


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.2)
        self.logits = nn.Linear(8, 10)

    def forward(self, ids):
        return self.logits(self.drop(torch.relu(self.fc(self.emb(ids)))))


def test_functional_activations_record_no_leaf_outputs(tmp_path):
    _, outputs = recorded(tmp_path, Functional(), torch.randint(0, 10, (4, 3)), "functional")
    assert outputs == []  # not the logits, the embedding or the dropout


def test_activation_checkpoint_wrappers_leave_the_users_names_and_order(tmp_path):
    """checkpoint_wrapper (used with FSDP) adds a '_checkpoint_wrapped_module' segment: the
    recorded layers are named and ordered as the user wrote them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, called last
            self.block = checkpoint_wrapper(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))

        def forward(self, x):
            return self.head(self.block(x))

    layers, outputs = recorded(tmp_path, Net(), torch.randn(6, 4), "ckpt")
    assert layers == ["block.0", "head"]
    assert outputs == ["block.1"]

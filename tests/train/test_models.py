"""The lesson's networks: output shapes, gradients reaching every parameter, activation modules,
initialisation schemes."""

import math

import pytest
import torch
from torch import nn

from gradwatch.trainer.models import (
    CNNClassifier,
    EmbeddingClassifier,
    LSTMClassifier,
    MLPClassifier,
    ModelError,
    build_model,
)
from gradwatch.trainer.options import validate


def _check_forward_backward(model: nn.Module, inputs: torch.Tensor, n_classes: int) -> None:
    logits = model(inputs)
    assert logits.shape == (inputs.shape[0], n_classes)
    nn.functional.cross_entropy(logits, torch.zeros(inputs.shape[0], dtype=torch.long)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("batchnorm,dropout", [(False, 0.0), (True, 0.3)])
def test_mlp_shapes_and_activation_modules(activation, batchnorm, dropout):
    torch.manual_seed(0)
    model = MLPClassifier(50, 3, depth=3, width=16, activation=activation, batchnorm=batchnorm, dropout=dropout)
    _check_forward_backward(model, torch.rand(8, 50), 3)
    names = [name for name, _ in model.named_children()]
    assert names[:2] == ["fc1", "bn1"] if batchnorm else names[:2] == ["fc1", "act1"]
    assert names[-1] == "out"
    act_type = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
    assert sum(isinstance(m, act_type) for m in model.modules()) == 3  # modules, visible to the probe
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == (3 if dropout else 0)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == (3 if batchnorm else 0)


def test_mlp_flattens_images_and_points():
    model = MLPClassifier(2, 2, depth=1, width=4)
    _check_forward_backward(model, torch.rand(5, 2), 2)
    model = MLPClassifier(16 * 16, 3, depth=2, width=8)
    _check_forward_backward(model, torch.rand(5, 1, 16, 16), 3)


def test_embedding_and_lstm_on_padded_token_ids():
    ids = torch.randint(2, 100, (6, 12))
    ids[:, :4] = 0  # front padding, as data.documents_to_sequences makes it
    ids[0] = 0  # an empty tweet
    model = EmbeddingClassifier(100, 3, embedding_dim=8, depth=1, width=16)
    _check_forward_backward(model, ids, 3)
    lstm = LSTMClassifier(100, 3, embedding_dim=8, depth=2, width=16, dropout=0.2)
    _check_forward_backward(lstm, ids, 3)
    assert isinstance(lstm.lstm, nn.LSTM) and lstm.lstm.num_layers == 2


def test_embedding_mean_pool_ignores_padding():
    model = EmbeddingClassifier(20, 2, embedding_dim=4, depth=1, width=4)
    ids = torch.tensor([[0, 0, 5, 7], [5, 7, 0, 0]])
    pooled = model.pool(model.embedding(ids), ids)
    assert torch.allclose(pooled[0], pooled[1])
    assert torch.allclose(pooled[0], model.embedding.weight[[5, 7]].mean(0))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_cnn_on_images(batchnorm):
    model = CNNClassifier((1, 16, 16), 3, depth=3, width=8, batchnorm=batchnorm, dropout=0.1)
    _check_forward_backward(model, torch.rand(4, 1, 16, 16), 3)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 3


def test_build_model_from_options_and_mismatch_errors():
    options = validate({"dataset": "images", "model": "cnn", "depth": 2, "width": 4})
    assert isinstance(build_model(options, (1, 16, 16), 3), CNNClassifier)
    options = validate({"model": "lstm", "width": 8, "embedding_dim": 4, "depth": 1})
    assert options["representation"] == "sequence"
    assert isinstance(build_model(options, (40,), 3, vocab_size=50), LSTMClassifier)
    with pytest.raises(ModelError, match="token sequences"):
        build_model(options, (40,), 3, vocab_size=None)
    with pytest.raises(ModelError, match="needs images"):
        build_model({**options, "model": "cnn"}, (40,), 3)


@pytest.mark.parametrize("init", ["xavier", "kaiming", "normal"])
def test_initialisation_schemes(init):
    torch.manual_seed(0)
    options = validate({"dataset": "circles", "depth": 2, "width": 400, "init": init, "init_std": 0.5,
                        "activation": "relu"})
    model = build_model(options, (400,), 2)
    weight = model.fc2.weight
    expected_std = {"xavier": math.sqrt(2.0) * math.sqrt(2.0 / 800), "kaiming": math.sqrt(2.0 / 400),
                    "normal": 0.5}[init]
    assert weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.count_nonzero(model.fc2.bias) == 0


def test_same_seed_same_weights():
    options = validate({"dataset": "circles", "depth": 2, "width": 8})
    torch.manual_seed(3)
    first = build_model(options, (2,), 2)
    torch.manual_seed(3)
    second = build_model(options, (2,), 2)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)

"""Networks and data the diagnosis evaluation needs beyond the lesson's own (trainer.models, data/).

A plain tanh RNN (the network the LSTM fixes), post-padded token sequences (the words end up far from
the read-out), weight tweaks that create a pathology in an otherwise standard network, and a
corrupted copy of a dataset.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from gradwatch.trainer.models import LastStep


class RNNClassifier(nn.Module):
    """Token ids -> embedding -> plain nn.RNN (tanh) -> output at the last position -> linear."""

    def __init__(self, vocab_size: int, n_classes: int, *, embedding_dim: int, width: int, depth: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = nn.RNN(embedding_dim, width, num_layers=depth, nonlinearity="tanh", batch_first=True)
        self.last = LastStep()
        self.out = nn.Linear(width, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(self.embedding(ids))
        return self.out(self.last(outputs))


def post_padded(dataset, length: int):
    """The same token sequences with the padding moved to the end and padded to `length`: a model
    that reads the last position must carry each tweet across dozens of pad steps."""

    def move(X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), length), dtype=X.dtype)
        for row, ids in enumerate(X):
            tokens = ids[ids != 0][:length]
            out[row, : len(tokens)] = tokens
        return out

    return dataclasses.replace(
        dataset, X_train=move(dataset.X_train), X_val=move(dataset.X_val), X_test=move(dataset.X_test),
        preparation={**dataset.preparation, "padding": "post", "max_len": length},
    )


def with_corrupt_example(dataset, index: int = 0):
    """A copy whose training example `index` holds one NaN feature (a corrupt image or record)."""
    X_train = dataset.X_train.copy()
    X_train[index].reshape(-1)[0] = np.nan
    return dataclasses.replace(dataset, X_train=X_train)


def negative_bias(model: nn.Module, bias: float) -> nn.Module:
    """Set the bias of every hidden Linear/Conv layer (all but the last) to `bias`: with a strongly
    negative bias most ReLU units never fire, and a unit that never fires gets no gradient."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    with torch.no_grad():
        for layer in layers[:-1]:
            layer.bias.fill_(bias)
    return model


def scaled_recurrence(model: nn.Module, scale: float) -> nn.Module:
    """Multiply the recurrent (hidden-to-hidden) weights of every RNN/LSTM by `scale`."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
                for name, param in module.named_parameters():
                    if name.startswith("weight_hh"):
                        param.mul_(scale)
    return model


def forget_gate_bias(model: nn.Module, value: float) -> nn.Module:
    """LSTM forget-gate bias (the second quarter of bias_ih + bias_hh) set to `value` in total, the
    usual initialisation that lets an LSTM carry its state over long gaps (Jozefowicz et al. 2015)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LSTM):
                for name, param in module.named_parameters():
                    if name.startswith("bias"):
                        quarter = param.shape[0] // 4
                        param[quarter: 2 * quarter] = value / 2
    return model


class PlainCNN(nn.Sequential):
    """A stack of 3x3 convolutions + ReLU at full resolution (no pooling, no normalisation), then a
    linear layer on the flattened map: nothing between the layers limits how activations grow."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, *, depth: int, width: int):
        channels, height, width_px = in_shape
        layers: list[tuple[str, nn.Module]] = []
        for i in range(1, depth + 1):
            layers += [(f"conv{i}", nn.Conv2d(channels, width, 3, padding=1)), (f"act{i}", nn.ReLU())]
            channels = width
        layers += [("flatten", nn.Flatten()), ("out", nn.Linear(width * height * width_px, n_classes))]
        super().__init__(OrderedDict(layers))

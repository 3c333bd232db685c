"""The lesson's networks, built from validated options: MLP, embedding + pooling, LSTM and a small CNN.

Activations are nn.Module instances (nn.ReLU, nn.Sigmoid, nn.Tanh), never functional calls, and every
layer has a short flat name (fc1, bn1, act1, drop1, ..., out), so the capture probe sees each
activation's output (saturation, dead units) and the dashboard lists layers in forward order.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
MODELS = ("mlp", "embedding", "lstm", "cnn")


class ModelError(ValueError):
    """Options that cannot build a network for the given data (e.g. a CNN on text)."""


def hidden_block(prefix_index: int, n_in: int, n_out: int, activation: str, *, batchnorm: bool,
                 dropout: float) -> list[tuple[str, nn.Module]]:
    """Linear -> (BatchNorm) -> activation -> (Dropout), named fc{i}, bn{i}, act{i}, drop{i}."""
    i = prefix_index
    layers: list[tuple[str, nn.Module]] = [(f"fc{i}", nn.Linear(n_in, n_out, bias=not batchnorm))]
    if batchnorm:
        layers.append((f"bn{i}", nn.BatchNorm1d(n_out)))
    layers.append((f"act{i}", ACTIVATIONS[activation]()))
    if dropout > 0:
        layers.append((f"drop{i}", nn.Dropout(dropout)))
    return layers


def mlp_layers(n_in: int, n_classes: int, *, depth: int, width: int, activation: str, batchnorm: bool,
               dropout: float, first_index: int = 1) -> OrderedDict:
    """`depth` hidden blocks of `width` units, then the output layer `out` (logits)."""
    layers: list[tuple[str, nn.Module]] = []
    size = n_in
    for i in range(first_index, first_index + depth):
        layers += hidden_block(i, size, width, activation, batchnorm=batchnorm, dropout=dropout)
        size = width
    layers.append(("out", nn.Linear(size, n_classes)))
    return OrderedDict(layers)


class MLPClassifier(nn.Sequential):
    """Feed-forward classifier on fixed-size features (bag of words / TF-IDF, 2-D points, flattened
    images)."""

    def __init__(self, n_in: int, n_classes: int, *, depth: int, width: int, activation: str = "relu",
                 batchnorm: bool = False, dropout: float = 0.0):
        super().__init__(mlp_layers(n_in, n_classes, depth=depth, width=width, activation=activation,
                                    batchnorm=batchnorm, dropout=dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class MeanPool(nn.Module):
    """Mean of the token embeddings of each sequence, ignoring padding (id 0)."""

    def forward(self, embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).to(embedded.dtype)
        return (embedded * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class EmbeddingClassifier(nn.Module):
    """Token ids -> embedding -> mean pooling over the tweet -> MLP head."""

    def __init__(self, vocab_size: int, n_classes: int, *, embedding_dim: int, depth: int, width: int,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.pool = MeanPool()
        self.head = nn.Sequential(mlp_layers(embedding_dim, n_classes, depth=depth, width=width,
                                             activation=activation, batchnorm=batchnorm, dropout=dropout))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.embedding(ids), ids))


class LastStep(nn.Module):
    """The LSTM's output at the last position (sequences are padded at the front, so the last
    position is the tweet's last real token)."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, -1]


class LSTMClassifier(nn.Module):
    """Token ids -> embedding -> LSTM (`depth` layers of `width` units) -> last step -> linear.

    The LSTM's gates let gradients reach early tokens, the lesson's remedy for vanishing gradients
    in recurrent networks.
    """

    def __init__(self, vocab_size: int, n_classes: int, *, embedding_dim: int, depth: int, width: int,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, width, num_layers=depth, batch_first=True,
                            dropout=dropout if depth > 1 else 0.0)
        self.last = LastStep()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(width, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embedding(ids))
        return self.out(self.drop(self.last(outputs)))


class CNNClassifier(nn.Module):
    """Small CNN for the synthetic images: `depth` blocks of 3x3 conv (`width` channels) ->
    (BatchNorm) -> activation, each followed by 2x2 max pooling while the image is larger than 2x2;
    then global average pooling, (dropout) and a linear output layer."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, *, depth: int, width: int,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0):
        super().__init__()
        channels, height, _ = in_shape
        layers: list[tuple[str, nn.Module]] = []
        size = height
        for i in range(1, depth + 1):
            layers.append((f"conv{i}", nn.Conv2d(channels, width, 3, padding=1, bias=not batchnorm)))
            if batchnorm:
                layers.append((f"bn{i}", nn.BatchNorm2d(width)))
            layers.append((f"act{i}", ACTIVATIONS[activation]()))
            if size > 2:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
                size //= 2
            channels = width
        layers.append(("gap", nn.AdaptiveAvgPool2d(1)))
        layers.append(("flatten", nn.Flatten()))
        if dropout > 0:
            layers.append(("drop", nn.Dropout(dropout)))
        layers.append(("out", nn.Linear(width, n_classes)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def build_model(options: dict, input_shape: tuple[int, ...], n_classes: int, vocab_size: int | None = None
                ) -> nn.Module:
    """The network `options['model']` names, for examples of `input_shape`, initialised per
    options['init'] (call after seeding for reproducible weights)."""
    kind = options["model"]
    common = dict(depth=options["depth"], width=options["width"])
    if kind == "mlp":
        model = MLPClassifier(math.prod(input_shape), n_classes, activation=options["activation"],
                              batchnorm=options["batchnorm"], dropout=options["dropout"], **common)
    elif kind in ("embedding", "lstm"):
        if vocab_size is None or len(input_shape) != 1:
            raise ModelError(f"model {kind} needs token sequences (dataset tweets, representation sequence)")
        if kind == "embedding":
            model = EmbeddingClassifier(vocab_size, n_classes, embedding_dim=options["embedding_dim"],
                                        activation=options["activation"], batchnorm=options["batchnorm"],
                                        dropout=options["dropout"], **common)
        else:
            model = LSTMClassifier(vocab_size, n_classes, embedding_dim=options["embedding_dim"],
                                   dropout=options["dropout"], **common)
    elif kind == "cnn":
        if len(input_shape) != 3:
            raise ModelError(f"model cnn needs images (dataset images), got examples of shape {input_shape}")
        model = CNNClassifier(input_shape, n_classes, activation=options["activation"],
                              batchnorm=options["batchnorm"], dropout=options["dropout"], **common)
    else:
        raise ModelError(f"unknown model {kind!r}; valid models: {', '.join(MODELS)}")
    initialise(model, options["init"], activation=options["activation"], std=options["init_std"])
    return model


def initialise(model: nn.Module, scheme: str, *, activation: str = "relu", std: float = 1.0) -> None:
    """Re-initialise the weights of Linear, Conv and LSTM layers; biases to zero.

    default: PyTorch's own (Kaiming-uniform with a=sqrt(5)); xavier: Glorot-uniform with the
    activation's gain; kaiming: He-normal (fan_in) with the activation's gain;
    normal: N(0, std^2) - with a large std the lesson's exploding-gradient setup.
    Embeddings and normalisation layers keep PyTorch's initialisation.
    """
    if scheme == "default":
        return
    nonlinearity = activation if activation in ("relu", "tanh", "sigmoid") else "linear"
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                weights = [module.weight]
                biases = [module.bias] if module.bias is not None else []
            elif isinstance(module, nn.LSTM):
                weights = [p for n, p in module.named_parameters() if n.startswith("weight")]
                biases = [p for n, p in module.named_parameters() if n.startswith("bias")]
            else:
                continue
            for weight in weights:
                if scheme == "xavier":
                    nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain(nonlinearity))
                elif scheme == "kaiming":
                    nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
                elif scheme == "normal":
                    nn.init.normal_(weight, 0.0, std)
                else:
                    raise ModelError(f"unknown init {scheme!r}; valid: default, xavier, kaiming, normal")
            for bias in biases:
                nn.init.zeros_(bias)


def describe(model: nn.Module) -> str:
    """'MLPClassifier, 2,565,123 parameters' for progress lines."""
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__}, {n:,} parameters"

"""An estimate of the memory a model of trainer.models needs to train, from the options alone
(torch-free: the dashboard checks it before launching anything).

Parameters are counted exactly for the layers trainer.models builds (input sizes use each option's
upper bound: the vocabulary size for text, 3x32x32 for images); training holds each parameter four
times with Adam (weights, gradients, two moment buffers) or three with SGD (weights, gradients,
momentum), plus the activations of one batch (kept for the backward pass, with their gradients).
An estimate to refuse absurd requests (width 8192 x depth 64 is ~69 GB), not an allocator.
"""

from __future__ import annotations

import math

FLOAT_BYTES = 4
N_CLASSES = 3
IMAGE_SHAPE = (3, 32, 32)  # an upper bound for the synthetic image dataset
CIRCLES_FEATURES = 2


def _mlp_params(n_in: int, depth: int, width: int, batchnorm: bool) -> int:
    hidden = n_in * width + (depth - 1) * width * width
    bias_or_bn = depth * width * (2 if batchnorm else 1)
    return hidden + bias_or_bn + width * N_CLASSES + N_CLASSES


def _input_features(options: dict) -> int:
    dataset = options.get("dataset", "tweets")
    if dataset == "circles":
        return CIRCLES_FEATURES
    if dataset == "images":
        return math.prod(IMAGE_SHAPE)
    return int(options.get("max_vocab") or 5000)


def parameter_count(options: dict) -> int:
    """Trainable parameters of the network `options` describes."""
    model = options.get("model", "mlp")
    depth, width = int(options.get("depth") or 1), int(options.get("width") or 1)
    batchnorm = bool(options.get("batchnorm"))
    vocab = int(options.get("max_vocab") or 5000)
    embed = int(options.get("embedding_dim") or 64)
    if model == "embedding":
        return vocab * embed + _mlp_params(embed, depth, width, batchnorm)
    if model == "lstm":
        first = 4 * width * (embed + width + 2)
        rest = (depth - 1) * 4 * width * (2 * width + 2)
        return vocab * embed + first + rest + width * N_CLASSES + N_CLASSES
    if model == "cnn":
        channels = IMAGE_SHAPE[0]
        convs = channels * width * 9 + (depth - 1) * width * width * 9 + depth * width * (2 if batchnorm else 1)
        return convs + width * N_CLASSES + N_CLASSES
    return _mlp_params(_input_features(options), depth, width, batchnorm)


def activation_count(options: dict) -> int:
    """Activations of one batch that the backward pass keeps."""
    model = options.get("model", "mlp")
    depth, width = int(options.get("depth") or 1), int(options.get("width") or 1)
    batch = int(options.get("batch_size") or 64)
    if model == "lstm":
        return batch * int(options.get("max_len") or 40) * depth * width * 6  # 4 gates, cell, hidden
    if model == "cnn":
        return batch * depth * width * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    per_layer = 3 if options.get("batchnorm") else 2  # linear output, activation (and normalised)
    return batch * depth * width * per_layer


def estimate_training_bytes(options: dict) -> int:
    copies = 4 if options.get("optimizer", "adam") == "adam" else 3
    return FLOAT_BYTES * (copies * parameter_count(options) + 2 * activation_count(options))


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"

"""Which modules make up the layers of a model, in which order, and which outputs are activations.

- Layer order is the order of first forward call. A module that is never called as a module
  (MultiheadAttention's out_proj, used through F.multi_head_attention_forward) sits right after its
  parent; parameters held by the root module itself (learned positions, a scale) are not a layer
  of the forward order and go last rather than becoming "the first layer".
- A recurrent module with several layers (nn.LSTM(num_layers=2)) is one layer per stacked layer:
  'rnn.l0', 'rnn.l1' (its parameters are named weight_ih_l0, ..., bias_hh_l1_reverse).
- Activation modules are recognised by well-known names (torch, transformers' NewGELUActivation
  and friends, timm's GELUTanh, Swish, HardMish, ...) and, for any other parameter-free leaf
  module, by behaviour at the first forward pass: a tensor in, a float tensor of the same shape
  out (a user's own `class Swish(nn.Module)`). Dropout, identity, pooling, normalisation,
  reshaping and softmax modules are never activations. A model without any activation module
  records no activation statistics rather than measuring every leaf output (logits, embeddings).
"""

from __future__ import annotations

import re

import torch
from torch import nn

# torch.nn activations and recurrent modules (whose outputs are measured like activations).
TORCH_ACTIVATIONS = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
     "Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "Softplus", "Softsign", "LogSigmoid",
     "Threshold", "Tanhshrink", "Softshrink", "Hardshrink", "GLU", "LSTM", "GRU", "RNN"}
)
# Names of activation modules in other libraries: transformers.activations (NewGELUActivation,
# GELUActivation, FastGELUActivation, QuickGELUActivation, SiLUActivation, MishActivation,
# PytorchGELUTanh, ReLUSquaredActivation, ...), timm.layers.activations (GELUTanh, Swish, SwishMe,
# HardSwish, HardMish, MishMe, QuickGELU, ...) and common spellings in user code.
ACTIVATION_NAME = re.compile(
    r"(ReLU|GELU|SiLU|Swish|Mish|Sigmoid|Tanh|Softplus|ELU|GLU|Activation)(Me|Jit|Auto)?\d*$", re.IGNORECASE
)
# Parameter-free leaf modules that keep the shape of their input but are not activations.
NOT_ACTIVATION = re.compile(
    r"Dropout|Identity|Flatten|Pool|Norm|Softmax|Softmin|Pad|Upsample|Shuffle|Fold|Embedding|Noise|Shift|Cast",
    re.IGNORECASE,
)
_RECURRENT_PARAM = re.compile(r"_l(\d+)(_reverse)?$")


def is_named_activation(module: nn.Module) -> bool:
    kind = type(module).__name__
    if kind in TORCH_ACTIVATIONS:
        return True
    return bool(ACTIVATION_NAME.search(kind)) and not NOT_ACTIVATION.search(kind) and not _has_state(module)


def activation_candidate(module: nn.Module) -> bool:
    """A module whose first call decides whether it is an activation (see `acts_like_activation`)."""
    is_leaf = next(module.children(), None) is None
    return is_leaf and not _has_state(module) and not NOT_ACTIVATION.search(type(module).__name__)


def acts_like_activation(inputs, output) -> bool:
    """A tensor in, a different float tensor of the same shape out."""
    x = inputs[0] if isinstance(inputs, tuple) and inputs else None
    return (isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and output is not x
            and output.is_floating_point() and output.shape == x.shape and output.numel() > 0)


def _has_state(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None or next(module.buffers(recurse=False), None) is not None


def is_channels_first_producer(module: nn.Module) -> bool:
    """Convolutions write (N, C, ...) maps; an activation after one measures units on dim 1."""
    return isinstance(module, nn.modules.conv._ConvNd)


# Wrapper modules whose name segment is no part of the user's module path (FSDP1 wraps units in
# FullyShardedDataParallel, activation checkpointing in CheckpointWrapper).
_WRAPPER_SEGMENT = re.compile(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module)(?=\.|$)")


def module_path(name: str) -> str:
    """A module's name as the user wrote the model: 'encoder._fsdp_wrapped_module.fc1' -> 'encoder.fc1'."""
    return _WRAPPER_SEGMENT.sub("", name).lstrip(".")


def param_layer(module_name: str, module: nn.Module, param_name: str) -> str:
    """The layer a parameter belongs to: its module, or one stacked layer of a recurrent module."""
    if isinstance(module, nn.RNNBase) and getattr(module, "num_layers", 1) > 1:
        found = _RECURRENT_PARAM.search(param_name)
        if found:
            return f"{module_name}.l{found.group(1)}"
    return module_name


def forward_rank(layer: str, order: dict[str, int], late: int) -> int:
    """Sort key of a layer: 2 * its first-call index; 2 * the nearest called parent's + 1 for a
    module never called and for the stacked layers of a recurrent module ('rnn.l1' after 'rnn');
    `late` for root parameters and anything unplaced."""
    name = layer
    if name in order:
        return 2 * order[name]
    while "." in name:
        name = name.rsplit(".", 1)[0]
        if name in order:
            return 2 * order[name] + 1
    return late

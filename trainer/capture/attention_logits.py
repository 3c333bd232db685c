"""Large-model signals measured in the forward pass: the largest attention logit per attention layer and
the output logits' log-partition.

- `attn_logit_max/<layer>`: max |q.k| x scale over batch, heads and positions of each
  `torch.nn.functional.scaled_dot_product_attention` call made inside an attention module (Megatron
  logs the same "max attention logit"; Wortsman et al. 2023 show it growing without bound before the
  attention-entropy collapse at high learning rates, and QK layer norm keeping it bounded).
- `output_log_z`: mean over tokens of logsumexp of the model's final logits (the output head: the
  last Linear module, or the one named), the quantity PaLM's z-loss pulls towards 0; Wortsman et al.'s
  "output logit divergence" is its drift.

Both are taken on recorded forward passes only (every `every`-th training forward), under no_grad:
one extra q.k^T per attention call on those passes. `scaled_dot_product_attention` is wrapped once,
process-wide, and dispatches to the recorders only while one is active (a thread-local flag), so
unwatched models pay one attribute check.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

ATTN_SCALAR = "attn_logit_max/{layer}"
OUTPUT_LOG_Z = "output_log_z"

_state = threading.local()
_original_sdpa = None


def _current() -> tuple | None:
    return getattr(_state, "current", None)


def _wrapped_sdpa(query, key, value, *args, **kwargs):
    current = _current()
    if current is not None:
        recorder, layer = current
        recorder._observe(layer, query, key, kwargs.get("scale"))
    return _original_sdpa(query, key, value, *args, **kwargs)


def _install() -> None:
    global _original_sdpa
    if _original_sdpa is None:
        _original_sdpa = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = _wrapped_sdpa


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose class name says attention (GPT2Attention, BertSelfAttention, a user's
    CausalSelfAttention, nn.MultiheadAttention), outermost only."""
    found = []
    for name, module in model.named_modules():
        if "attention" in type(module).__name__.lower() and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, module))
    return found


class AttentionLogitRecorder:
    """Records the two signals for `model` into `run` every `every` training forwards.

    recorder = AttentionLogitRecorder(model, run, every=10)   # after run.watch(model)
    ...
    recorder.close()
    """

    def __init__(self, model: nn.Module, run, every: int = 10, output: str | None = None):
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        _install()
        self.run, self.every = run, int(every)
        self._forwards = 0
        self._recording = False
        self._values: dict[str, float] = {}
        self._handles = []
        self._handles.append(model.register_forward_pre_hook(self._before_model))
        self._handles.append(model.register_forward_hook(self._after_model))
        for name, module in attention_modules(model):
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave))
        head = None
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if output is not None:
            head = dict(model.named_modules()).get(output)
            if head is None:
                raise ValueError(f"no module named {output!r} in the model")
        elif linears:
            head = linears[-1][1]
        if head is not None:
            self._handles.append(head.register_forward_hook(self._output))

    # ---- hooks --------------------------------------------------------------------------------
    def _before_model(self, module, args):
        self._recording = module.training and torch.is_grad_enabled() and self._forwards % self.every == 0
        if module.training and torch.is_grad_enabled():
            self._forwards += 1

    def _after_model(self, module, args, output):
        if self._recording and self._values:
            step = self._step()
            self.run.log(step, **self._values)
        self._values = {}
        self._recording = False

    def _enter(self, name):
        def hook(module, args):
            if self._recording:
                _state.current = (self, name)
        return hook

    def _leave(self, module, args, output):
        if _current() is not None and _current()[0] is self:
            _state.current = None

    def _output(self, module, args, output):
        if self._recording and isinstance(output, torch.Tensor) and output.dim() >= 2:
            with torch.no_grad():
                self._values[OUTPUT_LOG_Z] = float(torch.logsumexp(output.detach().float(), dim=-1).mean())

    def _observe(self, layer: str, query: torch.Tensor, key: torch.Tensor, scale) -> None:
        with torch.no_grad():
            q, k = query.detach().float(), key.detach().float()
            if k.shape[-3] != q.shape[-3] and q.dim() >= 3:  # grouped-query attention: repeat k heads
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
            value = float((q @ k.transpose(-2, -1)).abs().amax()) * s
        name = ATTN_SCALAR.format(layer=layer)
        self._values[name] = max(value, self._values.get(name, 0.0))

    def _step(self) -> int:
        probe = getattr(self.run, "probe", None)
        step = getattr(probe, "step", None)
        return int(step) if step is not None else self._forwards - 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

"""Gradient through time inside recurrent layers: how much of the loss's gradient reaches a recurrent
layer's early time steps compared with its late ones.

A layer-vs-layer comparison cannot see vanishing *inside* an LSTM/GRU/RNN: the layer's weights get
gradient from its last positions however little reaches the first. On recorded steps (every
`every`-th training forward) a hook on each recurrent module's input tensor reads dL/dx per time
position and writes `rnn_time_grad_ratio/<layer>`: the mean gradient norm over the first quarter of
the positions divided by that over the last quarter. Near 1 or above while the signal carries through
time (and always for a language model, whose loss touches every position); orders of magnitude below
1 when it vanishes on the way back (saturated gates, a plain RNN's tanh chain).
"""

from __future__ import annotations

import torch
from torch import nn

RATIO_SCALAR = "rnn_time_grad_ratio/{layer}"
FORGET_BIAS_SCALAR = "rnn_forget_bias/{layer}"
RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)


class RecurrentTimeRecorder:
    """recorder = RecurrentTimeRecorder(model, run, every=10); ... recorder.close()."""

    def __init__(self, model: nn.Module, run, every: int = 10):
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.run, self.every = run, int(every)
        self._forwards = 0
        self._handles = [model.register_forward_pre_hook(self._count)]
        for name, module in model.named_modules():
            if isinstance(module, RECURRENT):
                self._handles.append(module.register_forward_pre_hook(self._watch(name, module)))

    def _count(self, module, args):
        if module.training and torch.is_grad_enabled():
            self._forwards += 1

    def _watch(self, name: str, module):
        def hook(mod, args):
            if not (mod.training and torch.is_grad_enabled()) or (self._forwards - 1) % self.every:
                return
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.requires_grad or x.dim() != 3:
                return  # packed sequences and inputs that need no gradient are left out
            time_dim = 1 if getattr(mod, "batch_first", False) else 0
            step = self._step()
            if isinstance(mod, nn.LSTM):
                # The forget gate's total bias (bias_ih + bias_hh, second quarter of the gates), mean
                # over units and layers: strongly negative biases saturate the gate shut.
                with torch.no_grad():
                    h = mod.hidden_size
                    biases = [getattr(mod, f"bias_ih_l{k}")[h:2 * h] + getattr(mod, f"bias_hh_l{k}")[h:2 * h]
                              for k in range(mod.num_layers) if getattr(mod, "bias", True)]
                    if biases:
                        value = float(torch.stack([b.float().mean() for b in biases]).mean())
                        self.run.log(step, **{FORGET_BIAS_SCALAR.format(layer=name): value})

            def on_grad(grad):
                with torch.no_grad():
                    per_t = grad.detach().float().norm(dim=-1).mean(dim=1 - time_dim)  # [T]
                    quarter = max(1, per_t.shape[0] // 4)
                    early, late = float(per_t[:quarter].mean()), float(per_t[-quarter:].mean())
                if late > 0:
                    self.run.log(step, **{RATIO_SCALAR.format(layer=name): early / late})

            x.register_hook(on_grad)
        return hook

    def _step(self) -> int:
        step = getattr(getattr(self.run, "probe", None), "step", None)
        return int(step) if step is not None else self._forwards - 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

"""Plain-torch measurements of a training run, taken in the training process beside gradwatch.

The held-out evaluation's truth must not come from gradwatch (neither its capture nor its rules),
so this probe measures for itself, with nothing but torch:

- every optimizer step (a global optimizer post-step hook: the gradients the optimizer has just
  used, under any stack - a plain loop, `step(closure)`, Lightning, the HF Trainer), each layer's
  gradient norm (layer = the module owning the parameter, gradwatch's unit too) and the number of
  non-finite gradient values;
- the training loss of every step (the case's loop hands it over, or a forward hook on the model
  reads it), the first one taken before any update: the untrained level;
- the dead fraction of every ReLU site at every step: the share of units (channels of a
  convolution, features of a Linear) whose ReLU output is zero for the whole batch; a site is an
  `nn.ReLU` module or, for a functional `F.relu`, the layer whose output it reads;
- the validation losses the case computes.

`record()` returns plain lists and dicts; bench/thirdparty_heldout/oracle.py turns them into the truth.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

WEIGHTED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell,
                  nn.RNNCell)


class TruthProbe:
    """Measures one model's training, step by step, without gradwatch.

    `relu_sites`: module path -> "output" (an `nn.ReLU`: its output is the activation) or "relu"
    (a layer whose output goes through a functional ReLU: the activation is relu(output)).
    `layer_of_site`: the weighted layer each site's units belong to (for naming affected layers).
    """

    def __init__(self, model: nn.Module, *, relu_sites: dict[str, str] | None = None,
                 layer_of_site: dict[str, str] | None = None):
        self.model = model
        self.step = 0  # optimizer steps completed
        self.losses: dict[int, list[float]] = defaultdict(list)
        self.val: list[tuple[int, float]] = []
        self.grad_norms: list[dict[str, float]] = []  # index = step
        self.nonfinite_grads: list[int] = []
        self.dead: dict[str, dict[int, float]] = defaultdict(dict)
        self.relu_sites = dict(relu_sites or {})
        self.layer_of_site = dict(layer_of_site or {})
        self._owner = self._parameter_owners(model)
        self._params = {id(p) for p in model.parameters()}
        self._handles = []

    # ---- wiring ----------------------------------------------------------------------------------
    def attach(self) -> TruthProbe:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handles.append(register_optimizer_step_post_hook(self._after_step))
        modules = dict(self.model.named_modules())
        for name, how in self.relu_sites.items():
            self._handles.append(modules[name].register_forward_hook(self._dead_hook(name, how)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> TruthProbe:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def loss_from_output(self, model: nn.Module | None = None) -> None:
        """Read the training loss from the model's output (`output.loss` or `output["loss"]`, as
        transformers' models return it) with a forward hook: for stacks whose loop is not ours."""

        def hook(module, args, output):
            loss = getattr(output, "loss", None)
            if loss is None and isinstance(output, dict):
                loss = output.get("loss")
            if module.training and loss is not None:
                self.record_loss(loss)

        self._handles.append((model or self.model).register_forward_hook(hook))

    # ---- measurements ----------------------------------------------------------------------------
    def record_loss(self, loss) -> None:
        """The training loss of the step in progress (micro-batches of one step are averaged)."""
        self.losses[self.step].append(float(loss.detach()) if torch.is_tensor(loss) else float(loss))

    def record_val(self, value: float) -> None:
        """A validation loss, dated to the last completed optimizer step."""
        self.val.append((max(self.step - 1, 0), float(value)))

    def _after_step(self, optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if id(p) in self._params]
        if not params:
            return  # another model's optimizer
        squares: dict[str, float] = defaultdict(float)
        nonfinite = 0
        for p in params:
            if p.grad is None:
                continue
            g = p.grad.detach().double()
            finite = torch.isfinite(g)
            nonfinite += int((~finite).sum())
            value = float(g.pow(2).sum()) if bool(finite.all()) else math.nan
            squares[self._owner[id(p)]] += value
        self.grad_norms.append({layer: math.sqrt(v) if math.isfinite(v) else math.nan for layer, v in squares.items()})
        self.nonfinite_grads.append(nonfinite)
        self.step += 1

    def _dead_hook(self, name: str, how: str):
        def hook(module, args, output):
            if not module.training or not torch.is_grad_enabled():
                return
            out = output[0] if isinstance(output, tuple) else output
            act = torch.relu(out.detach()) if how == "relu" else out.detach()
            if act.dim() == 4:  # (N, C, H, W): a unit is a channel
                alive = (act > 0).any(dim=3).any(dim=2).any(dim=0)
            else:  # (N, F) or (N, T, F): a unit is a feature
                alive = (act.reshape(-1, act.shape[-1]) > 0).any(dim=0)
            self.dead[name][self.step] = float(1.0 - alive.double().mean())

        return hook

    # ---- results ---------------------------------------------------------------------------------
    def depth_layers(self) -> list[str]:
        """Weighted layers (Linear, Conv, recurrent) in registration order, embeddings left out: the
        path a gradient travels from the loss back to the input."""
        names = []
        for name, module in self.model.named_modules():
            if isinstance(module, WEIGHTED_TYPES) and any(p.requires_grad for p in module.parameters(recurse=False)):
                names.append(name)
        return names

    def record(self) -> dict:
        steps = sorted(self.losses)
        return {
            "steps": self.step,
            "loss": {s: sum(v) / len(v) for s, v in ((s, self.losses[s]) for s in steps)},
            "val": list(self.val),
            "grad_norms": list(self.grad_norms),
            "nonfinite_grads": list(self.nonfinite_grads),
            "dead": {name: dict(values) for name, values in self.dead.items()},
            "depth_layers": self.depth_layers(),
            "layer_of_site": dict(self.layer_of_site),
        }

    @staticmethod
    def _parameter_owners(model: nn.Module) -> dict[int, str]:
        owners = {}
        for name, module in model.named_modules():
            for p in module.parameters(recurse=False):
                owners.setdefault(id(p), name)  # a tied weight belongs to its first owner
        return owners

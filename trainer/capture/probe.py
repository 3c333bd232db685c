"""Hooks a model and records per-layer statistics at every `every`-th optimizer step.

A step is one `optimizer.step()` of the first torch optimizer seen stepping the watched
parameters (global optimizer hooks: no change to the user's loop). On a logged step:
- forward hooks accumulate activation statistics (grad-enabled passes only, so validation under
  `torch.no_grad()` is not mixed in; small CPU outputs are measured in stacks at the step);
- the optimizer pre-step hook measures gradients as the optimizer sees them (after AMP
  unscaling and after any clipping the user did), bins their histograms and snapshots the
  weights' samples;
- once every optimizer has stepped (at the next forward pass, step or flush) the new weights,
  update-to-weight ratios and weight histograms are measured and one packed tensor goes to the
  writer, copied to the host once.
On other steps only the optimizer hooks run (they count); forward hooks are attached from the
step before a logged step until it ends. The writer thread unpacks records, never the training thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from ..runlog import schema
from ..runlog.writer import LayerRecord, RunWriter, StatBlock
from . import tensor_stats
from .activation_stats import (
    ACTIVATION_TYPES,
    SATURATION_BOUNDS,
    ActivationAccumulator,
    DeferredOutputs,
    deferrable,
    finish_activations,
    first_tensor,
)
from .cadence import make_cadence
from .multi_tensor import Measurer
from .sentinels import Sentinels


@dataclass
class WatchedParam:
    name: str  # 'encoder.fc1.weight'
    layer: str  # 'encoder.fc1'
    param: str  # 'weight'
    module_type: str
    tensor: nn.Parameter


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / torch.compile wrappers, so names carry no
    'module.' or '_orig_mod.' prefix and match across wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = inner
            continue
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        return model


def collect_params(model: nn.Module) -> list[WatchedParam]:
    """Every parameter once (shared ones under their first module path), registration order."""
    seen: set[int] = set()
    found = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False, remove_duplicate=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            layer = module_name or type(module).__name__
            found.append(WatchedParam(f"{layer}.{param_name}", layer, param_name, type(module).__name__, param))
    return found


def ordered_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that define layer order: leaves, and any module holding parameters directly."""
    chosen = []
    for name, module in model.named_modules():
        is_leaf = next(module.children(), None) is None
        has_own = next(module.parameters(recurse=False), None) is not None
        if is_leaf or has_own:
            chosen.append((name or type(module).__name__, module))
    return chosen


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """Modules whose outputs are measured, with whether their outputs are channels-first.

    Activation and recurrent modules; if the model has none (functional activations), every
    leaf module, so some output statistics always exist. An activation registered after a
    convolution (the usual Sequential layout) is taken to see channels-first maps.
    """
    chosen, fallback = [], []
    previous_param_type = ""
    for name, module in ordered_modules(model):
        kind = type(module).__name__
        channels_first = previous_param_type.startswith("Conv")
        if kind in ACTIVATION_TYPES:
            chosen.append((name, module, channels_first))
        fallback.append((name, module, channels_first))
        if next(module.parameters(recurse=False), None) is not None:
            previous_param_type = kind
    return chosen or fallback


class Probe:
    """Statistics capture for one model; create through `Run.watch`."""

    def __init__(
        self,
        model: nn.Module,
        writer: RunWriter,
        *,
        every: int | str = 10,
        budget: float | None = None,
        histograms: bool = True,
        activations: bool = True,
        update_ratio: bool = True,
        sample_size: int = schema.HIST_SAMPLE_SIZE,
    ):
        self.model = unwrap_model(model)
        self.writer = writer
        self._cadence = make_cadence(every, budget)
        self.histograms = histograms
        self.activations = activations
        self.update_ratio = update_ratio
        self.params = collect_params(self.model)
        if not self.params:
            raise ValueError(f"{type(self.model).__name__} has no parameters to watch")
        self._param_ids = {id(p.tensor) for p in self.params}
        self._measurer = Measurer(sample_size, histograms=histograms, update_ratio=update_ratio)
        self._sentinels = Sentinels(writer)
        self.step = 0  # optimizer steps completed
        self._optimizer_ref = None  # the optimizer whose steps are counted
        self._order: dict[str, int] = {}
        self._acts: dict[str, ActivationAccumulator] = {}
        self._tensor_ids: dict[str, int] = {}
        self._pending = None  # multi-tensor work of the step in progress (gradients copied)
        self._last_record_clock: float | None = None
        self._last_record_step = 0
        # A logged step's measurements wait here until every optimizer has stepped: the record
        # is finished at the next forward pass (or step, or close), so a second optimizer
        # stepping other parameters after the first is seen in the weights and update ratios.
        self._unfinished = None
        self._handles = [
            optim_hooks.register_optimizer_step_pre_hook(self._before_step),
            optim_hooks.register_optimizer_step_post_hook(self._after_step),
        ]
        # Forward hooks exist only while they have work: activation hooks from the step before a
        # logged step until it ends, the start-of-forward hook while a record waits to be
        # finished. A module with any hook leaves PyTorch's hook-free fast call path, so
        # permanent hooks would tax every step, logged or not.
        self._act_specs = activation_modules(self.model) if activations else []
        self._act_handles: list = []
        self._finish_handle = None
        self._deferred = DeferredOutputs()
        # Order hooks learn the forward order during the first forward pass, then remove
        # themselves.
        self._order_handles = [
            module.register_forward_pre_hook(self._order_hook(name)) for name, module in ordered_modules(self.model)
        ]
        self._order_handles.append(self.model.register_forward_hook(self._order_done))
        self._sync_activation_hooks()

    # ---- state ----------------------------------------------------------------------------
    @property
    def logging_now(self) -> bool:
        """Whether the optimizer step in progress (index self.step) is recorded."""
        return self._cadence.logged(self.step)

    @property
    def every(self) -> int:
        """The statistics cadence now (chosen by the time budget under every="auto")."""
        return self._cadence.every

    def close(self) -> None:
        """Finish a pending record and remove every hook; idempotent."""
        self.finish_pending()
        self._sentinels.close()
        for handle in self._handles + self._order_handles + self._act_handles:
            handle.remove()
        self._handles = self._order_handles = self._act_handles = []
        self._act_specs = []
        self._deferred.clear()

    def _sync_activation_hooks(self) -> None:
        """Activation hooks on exactly while the step in progress is a logged one."""
        want = bool(self._act_specs) and self.logging_now
        if want and not self._act_handles:
            self._act_handles = [
                module.register_forward_hook(self._forward_hook(name, type(module).__name__, channels_first))
                for name, module, channels_first in self._act_specs
            ]
        elif not want and self._act_handles:
            for handle in self._act_handles:
                handle.remove()
            self._act_handles = []

    def _counts(self, optimizer) -> bool:
        """Only the first optimizer that steps our parameters advances the step count."""
        if self._optimizer_ref is None:
            if not any(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]):
                return False
            self._optimizer_ref = optimizer
        return optimizer is self._optimizer_ref

    # ---- hooks ----------------------------------------------------------------------------
    def _order_hook(self, name: str):
        def hook(module, inputs):
            if name not in self._order:
                self._order[name] = len(self._order)

        return hook

    def _order_done(self, module, inputs, output) -> None:
        for handle in self._order_handles:
            handle.remove()
        self._order_handles = []

    def _forward_hook(self, name: str, module_type: str, channels_first: bool):
        def hook(module, inputs, output):
            if self.activations and self.logging_now and torch.is_grad_enabled():
                acc = self._acts.get(name)
                if acc is None:
                    acc = self._acts[name] = ActivationAccumulator(module_type, channels_first)
                y = first_tensor(output)
                if deferrable(acc, y):
                    self._deferred.add(acc, y)
                else:
                    acc.add(output)

        return hook

    def _start_of_forward(self, module, inputs) -> None:
        if self._unfinished is not None:
            self.finish_pending()

    @torch.no_grad()
    def finish_pending(self) -> None:
        """Measure the weights of the last logged step and hand its record to the writer."""
        if self._unfinished is None:
            return
        state, self._unfinished = self._unfinished, None
        if self._finish_handle is not None:
            self._finish_handle.remove()
            self._finish_handle = None
        self._record(*state)

    @torch.no_grad()
    def _before_step(self, optimizer, args, kwargs) -> None:
        if not self._counts(optimizer):
            return
        if self._unfinished is not None:  # two steps without a forward pass in between
            self.finish_pending()
        present = [(i, _dense(p.tensor.grad)) for i, p in enumerate(self.params) if p.tensor.grad is not None]
        self._sentinels.observe(self.step, [g for _, g in present])
        if not self.logging_now:
            return
        # Every forward pass of this step is done: the held activation outputs join the copy.
        names = {id(acc): name for name, acc in self._acts.items()}
        held = []
        for acc, y in self._deferred.take():
            if acc.has_data:  # part of this module's outputs was already measured (memory budget)
                acc.add(y)
            else:
                held.append((names[id(acc)], acc.module_type, acc.channels_first, y))
        # Gradients are copied now, not read at the record: a gradient zeroed in place (zero_grad
        # with set_to_none=False) before the record is finished would read as all zeros. The
        # weights are sampled now too, for the update-to-weight ratio.
        groups = self._measurer.begin(present, held, [p.tensor.detach() for p in self.params])
        self._pending = (present, groups, {name: module_type for name, module_type, _, _ in held})

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        if not self._counts(optimizer):
            return
        if self.logging_now and self._pending is not None:
            self._unfinished = (self.step, self._pending, self._acts)
            if self._finish_handle is None:
                self._finish_handle = self.model.register_forward_pre_hook(self._start_of_forward)
        changed = self._cadence.observe(self.step, time.perf_counter())
        if changed is not None or (self.step == 0 and self._cadence.auto):
            # The series for the record, the latest value in the metadata for the dashboard.
            self.writer.add_scalars(self.step, {schema.CAPTURE_EVERY: float(self.every)}, time.time())
            self.writer.set_meta(capture_every=self.every)
        self.step += 1
        self._acts = {}
        self._pending = None
        self._sync_activation_hooks()

    # ---- recording ----------------------------------------------------------------------------
    def _register_tensors(self, act_types: dict[str, str]) -> None:
        """Send tensor descriptions for names not seen before, ordered by first forward call."""
        late = len(self._order) + 1000
        new = []
        for p in self.params:
            if p.name not in self._tensor_ids:
                new.append(dict(
                    name=p.name, layer=p.layer, param=p.param, role="param", module_type=p.module_type,
                    shape=list(p.tensor.shape), numel=p.tensor.numel(),
                    ord=self._order.get(p.layer, late), trainable=p.tensor.requires_grad,
                ))
        for name, module_type in act_types.items():
            if name not in self._tensor_ids:
                new.append(dict(
                    name=name, layer=name, param="", role="output", module_type=module_type,
                    shape=[], numel=0, ord=self._order.get(name, late), trainable=False,
                ))
        if not new:
            return
        for t in new:
            t["id"] = len(self._tensor_ids) + 1
            self._tensor_ids[t["name"]] = t["id"]
        self.writer.add_tensors(new)

    def _record(self, step: int, pending, acts) -> None:
        present, groups, held_types = pending
        groups = self._measurer.finish(groups)
        measured = [name for name, acc in acts.items() if acc.has_data]  # outputs measured per call
        act_types = dict(held_types)
        act_types.update({name: acts[name].module_type for name in measured})
        self._register_tensors(act_types)
        # One host copy per logged step: CPU groups are host arrays already; accelerator groups
        # (and per-call activation rows) are packed on the device and copied once, non-blocking
        # into pinned memory, read back by the writer thread after a CUDA event.
        host_parts = [g.host for g in groups if g.host is not None]
        device_parts = [g.packed for g in groups if g.packed is not None]
        sizes = [len(g.host) if g.host is not None else g.packed.numel() for g in groups]
        if measured:
            rows = finish_activations([acts[n] for n in measured]).double().flatten()
            (device_parts if rows.device.type != "cpu" else host_parts).append(rows if rows.device.type != "cpu"
                                                                               else rows.numpy())
        event, device_host = None, None
        if device_parts:
            device = device_parts[0].device
            packed = device_parts[0] if len(device_parts) == 1 else torch.cat([x.to(device) for x in device_parts])
            device_host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=packed.device.type == "cuda")
            device_host.copy_(packed, non_blocking=True)
            if packed.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
        on_host = [g.host is not None for g in groups]
        for g in groups:
            g.packed = g.host = None  # results live in the parts above from here on

        grad_ids = [(i, self._tensor_ids[self.params[i].name]) for i, _ in present]
        weight_ids = [self._tensor_ids[p.name] for p in self.params]
        trainable = [p.tensor.requires_grad for p in self.params]
        held_ids = [(name, self._tensor_ids[name]) for name in held_types]
        measured_ids = [self._tensor_ids[name] for name in measured]
        measurer = self._measurer

        def resolve():
            if event is not None:
                event.synchronize()
            host_iter, device_flat, device_pos = iter(host_parts), None, 0
            if device_host is not None:
                device_flat = device_host.numpy()
            stats = {}
            for g, size, cpu in zip(groups, sizes, on_host):
                if cpu:
                    values = next(host_iter)
                else:
                    values = device_flat[device_pos: device_pos + size]
                    device_pos += size
                stats.update(measurer.decode(g, values))
            blocks = [
                _stat_block(schema.KIND_GRAD, [tid for _, tid in grad_ids],
                            [stats.get(("grad", i)) for i, _ in grad_ids], measurer.histograms),
                _stat_block(schema.KIND_WEIGHT, weight_ids,
                            [stats.get(("weight", i)) for i in range(len(weight_ids))], measurer.histograms,
                            trainable=trainable),
                _stat_block(schema.KIND_ACTIVATION, [tid for _, tid in held_ids],
                            [stats.get(("act", name)) for name, _ in held_ids], False, act_types=act_types,
                            act_names=[name for name, _ in held_ids]),
            ]
            if measured_ids:
                rows = next(host_iter, None)
                if rows is None:
                    rows = device_flat[device_pos:]
                rows = np.asarray(rows).reshape(len(measured_ids), tensor_stats.N_FIELDS)
                blocks.append(StatBlock(np.asarray(measured_ids), np.full(len(measured_ids), schema.KIND_ACTIVATION),
                                        rows.astype(np.float64)))
            return StatBlock.concat(blocks)

        now = time.perf_counter()
        step_time = None
        if self._last_record_clock is not None and step > self._last_record_step:
            step_time = (now - self._last_record_clock) / (step - self._last_record_step)
        self._last_record_clock, self._last_record_step = now, step
        self.writer.add_layer_record(LayerRecord(step, time.time(), step_time, resolve=resolve))


def _stat_block(kind: int, ids: list[int], measured: list, histograms: bool, *, trainable=None,
                act_types=None, act_names=None) -> StatBlock:
    """Rows in STAT_FIELDS order from Measurer.decode results (None: an empty tensor)."""
    n = len(ids)
    out = np.full((n, tensor_stats.N_FIELDS), np.nan)
    hists = np.zeros((n, schema.HIST_LEN))
    has = np.zeros(n, bool)
    for r, m in enumerate(measured):
        if m is None:  # an empty tensor: nothing to measure
            out[r, [tensor_stats.F_NORM, tensor_stats.F_MEAN, tensor_stats.F_STD]] = 0.0
            out[r, [tensor_stats.F_NAN, tensor_stats.F_INF]] = 0.0
            continue
        out[r, :tensor_stats.F_ZERO + 1] = (m["norm"], m["mean"], m["std"], m["min"], m["max"], m["nan"], m["inf"],
                                            m["zero_frac"])
        if kind == schema.KIND_ACTIVATION:
            # Activations report NaN and Inf together (docs/log-format.md).
            out[r, tensor_stats.F_NAN], out[r, tensor_stats.F_INF] = m["nan"] + m["inf"], 0.0
            if act_types[act_names[r]] in SATURATION_BOUNDS:
                out[r, tensor_stats.F_EXTRA] = m["saturated"]
            out[r, tensor_stats.F_DEAD] = m["dead"]
        elif kind == schema.KIND_WEIGHT and trainable[r]:
            out[r, tensor_stats.F_EXTRA] = m["ratio"]
        if histograms and m["hist"] is not None:
            hists[r], has[r] = m["hist"], True
    if kind != schema.KIND_ACTIVATION and not histograms:
        out[:, tensor_stats.F_ZERO] = np.nan
    return StatBlock(np.asarray(ids, dtype=np.int64), np.full(n, kind), out, hists if has.any() else None,
                     has if has.any() else None)


def _dense(grad: torch.Tensor) -> torch.Tensor:
    """Sparse gradients (sparse embeddings) are measured on their stored values."""
    return grad.coalesce().values() if grad.is_sparse else grad

"""Hooks a model and records per-layer statistics at every `every`-th optimizer step.

A step is one `optimizer.step()` of the first torch optimizer seen stepping the watched
parameters (global optimizer hooks: no change to the user's loop), or one `mark_step()` (`run.step()`)
in a loop that updates the weights by hand. On a logged step:
- forward hooks accumulate activation statistics (grad-enabled passes only, so validation under
  `torch.no_grad()` is not mixed in; small CPU outputs are measured in stacks at the step);
- gradients are measured once, as the optimizer sees them (after AMP unscaling and after any
  clipping the user did), with their histograms, and the weights' samples are snapshot: in the
  optimizer pre-step hook, or, for `step(closure)` (Lightning, LBFGS), right after the closure's
  first call (the forward and backward happen inside the step), or earlier when an integration
  calls `gradients_ready()`;
- once every optimizer has stepped (at the next step, the next forward pass if that step is
  logged too, or a flush) the new weights, update-to-weight ratios and weight histograms are
  measured and one packed tensor goes to the writer, copied to the host once.
The measuring is a part the probe composes, the same three calls either way (snapshot the
weights, measure the gradients, record): whole_capture.WholeCapture for whole tensors,
sharded_capture.ShardedCapture for local shards (FSDP1, FSDP2, tensor parallelism); the state
between measurement and record is a typed record (pending.py).
On other steps only the optimizer hooks run (they count); forward hooks exist only during a
logged step, which runs eagerly under torch.compile (eager_steps.py). The writer thread unpacks
records, never the training thread. Forward hooks live outside the model (hooks.py: it pickles and
loads with weights_only=True as unwatched); layer order and activation modules are decided in
layers.py.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from ..runlog import schema
from ..runlog.step_norms import meta_items as step_norm_meta
from ..runlog.writer import LayerRecord, RunWriter
from . import eager_steps, hooks, sharded
from .activation_stats import (
    ActivationAccumulator,
    DeferredOutputs,
    deferrable,
    first_tensor,
)
from .cadence import make_cadence
from .grad_norms import GradNormRecorder
from .layers import (
    activation_candidate,
    acts_like_activation,
    forward_rank,
    is_channels_first_producer,
    is_named_activation,
    module_path,
    param_layer,
)
from .lr_record import LearningRateRecorder
from .multi_tensor import Measurer
from .optimizers import Ownership
from .pending import UnfinishedRecord
from .sharded_capture import ShardedCapture
from .whole_capture import WholeCapture


class StepNotSeenWarning(UserWarning):
    """Forward passes keep coming but no optimizer step (or run.step()) is ever seen."""



@dataclass
class WatchedParam:
    name: str  # 'encoder.fc1.weight'
    layer: str  # 'encoder.fc1'
    param: str  # 'weight'
    module_type: str
    tensor: nn.Parameter  # FSDP1 without use_orig_params: the flat parameter holding it
    full_shape: tuple | None = None  # the whole tensor's shape where `tensor` is not it (FSDP1)

    @property
    def shape(self) -> tuple:
        return tuple(self.tensor.shape) if self.full_shape is None else self.full_shape

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def trainable(self) -> bool:
        return self.tensor.requires_grad


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / FSDP1 / torch.compile wrappers, so names
    carry no 'module.', '_fsdp_wrapped_module.' or '_orig_mod.' prefix and match across wrappers."""
    while True:
        inner = getattr(model, "_fsdp_wrapped_module", None)
        if isinstance(inner, nn.Module) and type(model).__name__ == "FullyShardedDataParallel":
            model = inner
            continue
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
            path = module_path(module_name)  # without wrapper segments (activation checkpointing)
            layer = param_layer(path, module, param_name) if path else type(module).__name__
            found.append(WatchedParam(f"{layer}.{param_name}", layer, param_name, type(module).__name__, param))
    return found


def ordered_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that define layer order: leaves, and any module holding parameters directly."""
    chosen = []
    for name, module in model.named_modules():
        name = module_path(name)
        is_leaf = next(module.children(), None) is None
        has_own = next(module.parameters(recurse=False), None) is not None
        if is_leaf or has_own:
            chosen.append((name or type(module).__name__, module))
    return chosen


def activation_modules(model: nn.Module) -> tuple[list, list]:
    """(activation modules known by name, parameter-free leaves whose first call decides), each as
    (name, module, channels_first). An activation registered after a convolution (the usual
    Sequential layout) is taken to see channels-first maps."""
    named, candidates = [], []
    after_conv = False
    for name, module in ordered_modules(model):
        if is_named_activation(module):
            named.append((name, module, after_conv))
        elif activation_candidate(module):
            candidates.append((name, module, after_conv))
        if next(module.parameters(recurse=False), None) is not None:
            after_conv = is_channels_first_producer(module)
    return named, candidates


class Probe:
    """Statistics capture for one model; create through `Run.watch`."""

    # Grad-enabled forward passes without any step before the one-time StepNotSeenWarning.
    STEPLESS_FORWARDS = 64

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
        step_offset: int = 0,
    ):
        self.model = unwrap_model(model)
        # Sharded parameters (FSDP2 DTensors, FSDP1 flat parameters): each rank measures its
        # pieces, rank 0 records the combined whole (sharded.py); None for whole tensors.
        self._layout = sharded.layout_of(model, self.model, WatchedParam, collect_params)
        self.writer = writer
        self._cadence = make_cadence(every, budget)
        self.histograms = histograms
        self.activations = activations
        self.update_ratio = update_ratio
        self.params = self._layout.params if self._layout is not None else collect_params(self.model)
        self.params = _measurable(self.params)
        if not self.params:
            raise ValueError(f"{type(self.model).__name__} has no parameters to watch")
        self._param_ids = {id(p.tensor) for p in self.params}
        # Several optimizers with their own backward passes: each one's parameters are measured
        # at its own step (optimizers.py); not for sharded parameters, measured all at once.
        self._ownership = Ownership([id(p.tensor) for p in self.params], [p.trainable for p in self.params])
        self._measurer = Measurer(sample_size, histograms=histograms, update_ratio=update_ratio)
        # Every step's per-parameter gradient norms (grad_norms.py): taken in backward, except under
        # DDP, whose all-reduce after backward moves no version counter, and for sharded layouts,
        # whose local pieces are measured at the step and combined by one all-reduce.
        tensors = [p.tensor for p in self.params]
        rank, world_size = _rank_and_world_size()
        if self._layout is None:
            on_cpu = all(t.device.type == "cpu" for t in tensors)
            self._grad_norms = GradNormRecorder(tensors, writer, in_backward=on_cpu and world_size == 1)
        else:
            layout, params = self._layout, self.params
            combine = None if layout.replicated else sharded.norms_across_shards(layout.group)
            self._grad_norms = GradNormRecorder(tensors, writer, in_backward=False, combine=combine,
                                                grad_of=lambda i: layout.grad(params[i]),
                                                records=rank == 0)
        if rank == 0:
            writer.set_meta(**step_norm_meta([p.name for p in self.params], [p.layer for p in self.params]))
        self._capture_seconds = 0.0  # every-step capture time already counted by the cadence
        # The part that measures and records: whole tensors or local shards, the same calls.
        self._capture = (WholeCapture(self) if self._layout is None
                         else ShardedCapture(self, self._layout, sample_size))
        self._old_samples = None  # weight samples before a hand-written update (first forward pass)
        self._sentinel_seen = False  # the sentinels of the step in progress are taken
        self.step = 0  # optimizer steps completed
        # Recorded step = step + step_offset (HF Trainer numbers its first optimizer step 1).
        self.step_offset = step_offset
        self._optimizer_ref = None  # the optimizer whose steps are counted
        self._measured = False  # the gradients of the step in progress are taken
        self._manual = False  # steps are marked by mark_step() (hand-written updates)
        self._dormant = False  # no step ever seen: activation hooks detached until one is
        self._stepless_forwards = 0
        self._warned: set[str] = set()
        self._order: dict[str, int] = {}
        self._acts: dict[str, ActivationAccumulator] = {}
        self._tensor_ids: dict[str, int] = {}
        self._pending = None  # WholeGradients / ShardedGradients of the logged step in progress
        self._last_record_clock: float | None = None
        self._last_record_step = 0
        # A logged step's measurements wait here until every optimizer has stepped: the record
        # is finished at the next step (or logged forward pass, or close), so a second optimizer
        # stepping other parameters after the first is seen in the weights and update ratios.
        self._unfinished = None
        self._lr = LearningRateRecorder(writer)
        self._handles = [
            optim_hooks.register_optimizer_step_pre_hook(self._before_step),
            optim_hooks.register_optimizer_step_post_hook(self._after_step),
        ]
        # Forward hooks exist only while they have work: activation hooks from the step before a
        # logged step until it ends, the start-of-forward hook while a record waits to be
        # finished. A module with any hook leaves PyTorch's hook-free fast call path, so
        # permanent hooks would tax every step, logged or not.
        named, candidates = activation_modules(self.model) if activations else ([], [])
        self._act_specs = named
        self._act_handles: list = []
        self._acts_on = False
        self._finish_handle = None
        self._deferred = DeferredOutputs()
        self._host_path: bool | None = None  # None: by device; False: the accelerator path forced
        # Order hooks learn the forward order during the first forward pass (and which
        # parameter-free leaves act like activations), then remove themselves. The root is no
        # layer of that order: its own parameters are placed last (layers.py).
        self._order_handles = [
            hooks.forward_pre_hook(module, self._order_hook(name))
            for name, module in ordered_modules(self.model) if module is not self.model
        ]
        self._order_handles += [
            hooks.forward_hook(module, self._discover_hook(name, channels_first))
            for name, module, channels_first in candidates
        ]
        self._order_handles.append(hooks.forward_hook(self.model, self._order_done))
        # Until the first step: counts forward passes (warns when no step ever comes) and, in a
        # hand-written loop, snapshots the weights before the update of a logged step.
        self._watchdog = hooks.forward_pre_hook(self.model, self._forward_seen)
        self._sync_activation_hooks()

    def use_accelerator_path(self) -> None:
        """Measure CPU tensors as an accelerator does (flat device buffer, tensor-valued
        per-call activations, NaN/Inf counted on the device, every-step norms fused at the step):
        tests and benchmarks value-check and count on a CPU the path a GPU runs."""
        self._host_path = False
        self._measurer.host_checks = False
        self._grad_norms.measure_at_step()

    # ---- state ----------------------------------------------------------------------------
    @property
    def logging_now(self) -> bool:
        """Whether the optimizer step in progress (index self.step) is recorded: under a fixed
        cadence the first step and every `every`-th step as the run numbers them (step +
        step_offset); under every="auto" the steps the time budget chose."""
        if self._cadence.auto:
            return self._cadence.logged(self.step)
        return self.step == 0 or self._cadence.logged(self.step + self.step_offset)

    @property
    def every(self) -> int:
        """The statistics cadence now (chosen by the time budget under every="auto")."""
        return self._cadence.every

    def close(self) -> None:
        """Finish a pending record and remove every hook; idempotent."""
        self.finish_pending()
        if self._grad_norms is not None:
            self._grad_norms.close()
        extra = [h for h in (self._watchdog, self._finish_handle) if h is not None]
        for handle in self._handles + self._order_handles + self._act_handles + extra:
            handle.remove()
        self._handles = self._order_handles = self._act_handles = []
        self._watchdog = self._finish_handle = None
        self._acts_on = False
        self._act_specs = []
        self._deferred.clear()
        eager_steps.set_eager(self, False)

    def _sync_activation_hooks(self) -> None:
        """Activation hooks on exactly while the step in progress is a logged one, and that step
        run eagerly under torch.compile (eager_steps.py)."""
        logged = self.logging_now and not self._dormant
        eager_steps.set_eager(self, logged)
        # Outside logged steps no gradwatch hook exists (a compiled graph keeps its guards), so
        # a hand-written loop's weight snapshot hook is attached for logged steps only.
        if self._manual and logged and self._watchdog is None:
            self._watchdog = hooks.forward_pre_hook(self.model, self._forward_seen)
        elif self._manual and not logged:
            self._remove_watchdog()
        want = bool(self._act_specs) and self.activations and logged
        if want and not self._acts_on:
            self._act_handles = [self._attach_activation(*spec) for spec in self._act_specs]
            self._acts_on = True
        elif not want and self._acts_on:
            for handle in self._act_handles:
                handle.remove()
            self._act_handles = []
            self._acts_on = False

    def _attach_activation(self, name: str, module: nn.Module, channels_first: bool):
        return hooks.forward_hook(module, self._forward_hook(name, type(module).__name__, channels_first))

    def _counts(self, optimizer) -> bool:
        """Only the first optimizer that steps our parameters advances the step count (none once
        steps are marked by hand)."""
        if self._manual:
            return False
        if self._optimizer_ref is None:
            if not any(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]):
                return False
            self._optimizer_ref = optimizer
            self._ownership.counting(optimizer)
            self._remove_watchdog()
        return optimizer is self._optimizer_ref

    def _remove_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.remove()
            self._watchdog = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, StepNotSeenWarning, stacklevel=3)

    # ---- explicit steps (hand-written updates, integrations) -----------------------------
    def mark_step(self) -> None:
        """One optimizer step of a hand-written update (`p.data.add_(p.grad, alpha=-lr)`): call it
        after the update, before the gradients are zeroed."""
        if self._optimizer_ref is not None:
            self._warn_once("mark", f"run.step() ignored: steps are already counted from "
                                    f"{type(self._optimizer_ref).__name__}.step()")
            return
        self._manual = True
        self.finish_pending()
        self._observe_sentinels()
        if self.logging_now and not self._measured:
            self._measure_gradients()
        self._complete_step()
        self.finish_pending()  # the weights are already updated: nothing to wait for

    def gradients_ready(self) -> None:
        """Measure the step's gradients now (an integration's "before optimizer step" callback:
        after unscaling, before the framework clips); later measurement points of the step skip."""
        if self.logging_now and not self._measured:
            if self._unfinished is not None and not self._ownership.waiting:
                self.finish_pending()  # the last record's buffers are about to be reused
            self._measure_gradients()

    def set_step(self, step: int) -> None:
        """Follow a framework's own step counter (resumed training, several optimizers)."""
        if step != self.step:
            self.step = step
            self._sync_activation_hooks()

    # ---- hooks ----------------------------------------------------------------------------
    def _order_hook(self, name: str):
        def hook(module, inputs):
            if name not in self._order:
                self._order[name] = len(self._order)

        return hook

    def _discover_hook(self, name: str, channels_first: bool):
        def hook(module, inputs, output):
            if not acts_like_activation(inputs, output):
                return
            spec = (name, module, channels_first)
            self._act_specs.append(spec)
            if self._acts_on:  # activations of this step are being taken: this call counts too
                handle = self._attach_activation(*spec)
                self._act_handles.append(handle)
                self._forward_hook(name, type(module).__name__, channels_first)(module, inputs, output)

        return hook

    def _forward_seen(self, module, inputs) -> None:
        if not torch.is_grad_enabled():
            return
        # Whether updates are hand-written is known only at the first run.step(): snapshot
        # the weights before the first step's update too (an optimizer step replaces it).
        if self.logging_now and self.update_ratio and self._old_samples is None:
            self._old_samples = self._snapshot_weights()
        if self._manual:
            return
        self._stepless_forwards += 1
        if self._stepless_forwards >= self.STEPLESS_FORWARDS:
            self._warn_once("stepless", (
                f"gradwatch: {self._stepless_forwards} forward passes of {type(self.model).__name__} and no "
                "optimizer step: nothing is recorded. If you update the weights by hand, call run.step() after "
                "each update; activation hooks are detached until a step is seen."))
            self._dormant = True
            self._acts, self._deferred = {}, DeferredOutputs()
            self._sync_activation_hooks()
            self._remove_watchdog()

    def _order_done(self, module, inputs, output) -> None:
        for handle in self._order_handles:
            handle.remove()
        self._order_handles = []

    def _forward_hook(self, name: str, module_type: str, channels_first: bool):
        def hook(module, inputs, output):
            # Not after the step's gradients are taken: LBFGS calls its closure again.
            if self.activations and self.logging_now and not self._measured and torch.is_grad_enabled():
                acc = self._acts.get(name)
                if acc is None:
                    acc = self._acts[name] = ActivationAccumulator(module_type, channels_first, self._host_path)
                y = first_tensor(output)
                if deferrable(acc, y):
                    self._deferred.add(acc, y)
                else:
                    acc.add(output)

        return hook

    def _start_of_forward(self, module, inputs) -> None:
        # Not while another optimizer may still step parameters of this step (a GAN's generator
        # after its discriminator): the record waits for it, or for the next step.
        if self._unfinished is not None and not self._ownership.waiting:
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
        self._record(state)

    @torch.no_grad()
    def _before_step(self, optimizer, args, kwargs):
        if not self._counts(optimizer):
            self._other_optimizer_step(optimizer)
            return None
        if self._unfinished is not None:  # two steps without a forward pass in between
            self.finish_pending()
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if callable(closure):  # the step's gradients exist only once the closure has run
            return self._measuring_closure(args, kwargs, closure)
        self._observe_sentinels()
        if self.logging_now and not self._measured:
            self._measure_gradients()
        return None

    def _other_optimizer_step(self, optimizer) -> None:
        """An optimizer other than the counting one steps watched parameters: their gradients, as
        it steps with them, join the record of the step just completed (whole tensors only:
        sharded parameters are measured all at once)."""
        if self._optimizer_ref is None or self._manual or not isinstance(self._capture, WholeCapture):
            return
        owned = self._ownership.other_steps(optimizer)
        if owned is None or self._unfinished is None:
            return
        self._capture.other_optimizer_step(owned, self._unfinished.gradients)

    def _measuring_closure(self, args, kwargs, closure):
        """step(closure) runs forward and backward inside the step: take the sentinels and measure
        after the closure's first call (LBFGS calls it again after moving the weights), before the
        update."""

        def closure_then_measure(*a, **k):
            loss = closure(*a, **k)
            self._observe_sentinels()
            if self.logging_now and not self._measured:
                self._measure_gradients()
            return loss

        if len(args) > 1:
            return (args[0], closure_then_measure, *args[2:]), kwargs
        return args, {**kwargs, "closure": closure_then_measure}

    def _observe_sentinels(self) -> None:
        """Every step, logged or not: each parameter's gradient norm (grad_norms.py)."""
        if self._grad_norms is None or self._sentinel_seen:
            return
        self._sentinel_seen = True
        self._grad_norms.observe(self.step + self.step_offset, self.every, self._optimizer_ref)

    def _snapshot_weights(self):
        """The weights' samples before a hand-written update (the update ratio's "before")."""
        return self._capture.snapshot_weights()

    @torch.no_grad()
    def _measure_gradients(self) -> None:
        self._measured = True
        self._pending = self._capture.measure_gradients()

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._counts(optimizer):
            self._complete_step()

    def _complete_step(self) -> None:
        self._ownership.step_done()
        if self._order_handles:  # the root module itself is never called (a LightningModule's
            self._order_done(None, None, None)  # training_step calling self.net): order is known
        if self.logging_now and self._pending is not None:
            self._unfinished = UnfinishedRecord(self.step, self._pending, self._acts)
        if self._optimizer_ref is not None:  # a manual update (run.step()) has no optimizer lr
            self._lr.after_step(self._optimizer_ref, self.step + self.step_offset, self.logging_now)
        if self._grad_norms is not None and self.logging_now:
            self._grad_norms.drain()  # the live view gets the steps up to this logged one
        spent = 0.0
        if self._grad_norms is not None:
            spent, self._capture_seconds = self._grad_norms.seconds - self._capture_seconds, self._grad_norms.seconds
        changed = self._cadence.observe(self.step, time.perf_counter(), spent)
        if changed is not None or (self.step == 0 and self._cadence.auto):
            # The series for the record, the latest value in the metadata for the dashboard.
            self.writer.add_scalars(self.step + self.step_offset, {schema.CAPTURE_EVERY: float(self.every)},
                                    time.time())
            self.writer.set_meta(capture_every=self.every)
        self.step += 1
        self._acts = {}
        self._pending = None
        self._old_samples = None
        self._measured = False
        self._sentinel_seen = False
        self._dormant = False
        self._stepless_forwards = 0
        self._sync_activation_hooks()
        # The record is finished at the next forward pass when that pass is a logged step's
        # (eager under torch.compile); otherwise at the next step (or flush, or close).
        if self._unfinished is not None and self.logging_now and self._finish_handle is None:
            self._finish_handle = hooks.forward_pre_hook(self.model, self._start_of_forward)

    # ---- recording ----------------------------------------------------------------------------
    def _register_tensors(self, act_types: dict[str, str]) -> None:
        """Send tensor descriptions for names not seen before, ordered by first forward call."""
        late = 2 * len(self._order) + 2
        new = []
        for p in self.params:
            if p.name not in self._tensor_ids:
                new.append(dict(
                    name=p.name, layer=p.layer, param=p.param, role="param", module_type=p.module_type,
                    shape=list(p.shape), numel=p.numel,
                    ord=forward_rank(p.layer, self._order, late), trainable=p.trainable,
                ))
        for name, module_type in act_types.items():
            if name not in self._tensor_ids:
                new.append(dict(
                    name=name, layer=name, param="", role="output", module_type=module_type,
                    shape=[], numel=0, ord=forward_rank(name, self._order, late), trainable=False,
                ))
        if not new:
            return
        for t in new:
            t["id"] = len(self._tensor_ids) + 1
            self._tensor_ids[t["name"]] = t["id"]
        self.writer.add_tensors(new)

    def _record(self, record: UnfinishedRecord) -> None:
        self._capture.record(record)

    def _submit_record(self, step: int, resolve) -> None:
        """Queue a logged step's record (its rows resolved on the writer thread), with the mean
        step time since the previous record."""
        now = time.perf_counter()
        step_time = None
        if self._last_record_clock is not None and step > self._last_record_step:
            step_time = (now - self._last_record_clock) / (step - self._last_record_step)
        self._last_record_clock, self._last_record_step = now, step
        self.writer.add_layer_record(LayerRecord(step + self.step_offset, time.time(), step_time, resolve=resolve))


def _measurable(params: list[WatchedParam]) -> list[WatchedParam]:
    """The parameters capture can measure: floating point, with storage. A complex or meta-device
    parameter is refused in one line (its statistics would be wrong or absent, silently); an integer
    or bool one (a lookup table registered as a parameter) takes no gradient and is left out."""
    kept = []
    for p in params:
        t = p.tensor
        if t.is_meta:
            raise ValueError(f"gradwatch: parameter {p.name!r} is on the meta device; materialise the model "
                             "(model.to_empty(device=...) and initialise it) before run.watch()")
        if t.is_complex():
            raise ValueError(f"gradwatch: parameter {p.name!r} is complex ({t.dtype}); gradwatch measures "
                             "float16, bfloat16, float32 and float64 parameters: watch a model without it")
        if not t.is_floating_point():
            warnings.warn(f"gradwatch: parameter {p.name!r} is {t.dtype} (no gradient): not watched", stacklevel=4)
            continue
        kept.append(p)
    return kept


def _rank_and_world_size() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


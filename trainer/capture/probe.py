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
- once every optimizer has stepped (at the next forward pass, step or flush) the new weights,
  update-to-weight ratios and weight histograms are measured and one packed tensor goes to the
  writer, copied to the host once.
On other steps only the optimizer hooks run (they count); forward hooks are attached from the
step before a logged step until it ends. The writer thread unpacks records, never the training thread.
Forward hooks live outside the model (hooks.py: it pickles and loads with weights_only=True as unwatched); layer order and activation modules are decided in layers.py.
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
from ..runlog.writer import LayerRecord, RunWriter, StatBlock
from . import hooks, sharded, tensor_stats
from .activation_stats import (
    SATURATION_BOUNDS,
    ActivationAccumulator,
    DeferredOutputs,
    deferrable,
    finish_activations,
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


class StepNotSeenWarning(UserWarning):
    """Forward passes keep coming but no optimizer step (or run.step()) is ever seen."""


F_SATURATED, F_DEAD = schema.STAT_INDEX["saturated_frac"], schema.STAT_INDEX["dead_frac"]

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
        if self._layout is None:
            on_cpu = all(t.device.type == "cpu" for t in tensors)
            self._grad_norms = GradNormRecorder(tensors, writer,
                                                in_backward=on_cpu and not _replicated_across_processes())
        else:
            layout, params = self._layout, self.params
            combine = None if layout.replicated else sharded.norms_across_shards(layout.group)
            self._grad_norms = GradNormRecorder(tensors, writer, in_backward=False, combine=combine,
                                                grad_of=lambda i: layout.grad(params[i]),
                                                records=_process_rank() == 0)
        if _process_rank() == 0:
            writer.set_meta(**step_norm_meta([p.name for p in self.params], [p.layer for p in self.params]))
        self._capture_seconds = 0.0  # every-step capture time already counted by the cadence
        self._shards = sharded.ShardCombiner(self._layout.replicated, self._layout.group) if self._layout is not None else None
        self._moment_stats = sharded.local_moments if self._shards else tensor_stats.moment_stats
        self._sampler = tensor_stats.SampleIndex(sample_size)
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
        self._pending = None  # multi-tensor work of the step in progress (gradients copied)
        self._last_record_clock: float | None = None
        self._last_record_step = 0
        # A logged step's measurements wait here until every optimizer has stepped: the record
        # is finished at the next forward pass (or step, or close), so a second optimizer
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
        self._hist = tensor_stats.HistogramBatcher()
        self._grad_hist = tensor_stats.HistogramBatcher()
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

    def _sync_activation_hooks(self) -> None:
        """Activation hooks on exactly while the step in progress is a logged one."""
        want = bool(self._act_specs) and self.logging_now and not self._dormant
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
        if not self._manual:
            self._manual = True
            if self._watchdog is None:
                self._watchdog = hooks.forward_pre_hook(self.model, self._forward_seen)
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
                    acc = self._acts[name] = ActivationAccumulator(module_type, channels_first)
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
        self._record(*state)

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
        it steps with them, join the record of the step just completed."""
        if self._optimizer_ref is None or self._manual or self._shards is not None:
            return
        owned = self._ownership.other_steps(optimizer)
        if owned is None or self._unfinished is None:
            return
        step, (present, groups, held), acts = self._unfinished
        grads = [(i, _dense(self.params[i].tensor.grad)) for i in sorted(owned)
                 if self.params[i].tensor.grad is not None]
        # Decoded after the counting step's groups, so these values replace any taken there.
        extra = self._measurer.begin(grads, [], []) if grads else []
        present = [(i, g) for i, g in present if i not in owned] + grads
        self._unfinished = (step, (present, groups + extra, held), acts)

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
        if self._shards is not None:
            return self._weight_samples()
        return self._measurer.weight_samples([p.tensor.detach() for p in self.params])

    @torch.no_grad()
    def _measure_gradients(self) -> None:
        self._measured = True
        if self._shards is not None:
            self._measure_gradients_sharded()
            return
        # Every forward pass of this step is done: the held activation outputs join the copy.
        names = {id(acc): name for name, acc in self._acts.items()}
        held = []
        for acc, y in self._deferred.take():
            if acc.has_data:  # part of this module's outputs was already measured (memory budget)
                acc.add(y)
            else:
                held.append((names[id(acc)], acc.module_type, acc.channels_first, y))
        present = [(i, _dense(p.tensor.grad)) for i, p in enumerate(self.params)
                   if p.tensor.grad is not None and i not in self._ownership.by_others]
        # Gradients are taken now (copied on the flat path, measured in place on the CPU's host
        # path), not read at the record: a gradient zeroed in place (zero_grad with
        # set_to_none=False) before the record is finished would read as all zeros. The
        # weights are sampled now too, for the update-to-weight ratio; a hand-written update has
        # happened by now, so its "before" is the snapshot of the step's first forward pass.
        before = None
        if self._manual:
            before = self._old_samples if self._old_samples is not None else [None] * len(self.params)
        groups = self._measurer.begin(present, held, [p.tensor.detach() for p in self.params], before=before)
        self._pending = (present, groups, {name: module_type for name, module_type, _, _ in held})

    # ---- FSDP2 / FSDP1: per-tensor statistics of local shards, combined on rank 0 (sharded.py) ----
    def _weight_samples(self) -> list[torch.Tensor]:
        pieces = [self._layout.weight(p) for p in self.params if p.trainable]
        return [_owned(self._sampler.sample(w.reshape(-1)), w) for w in pieces]

    def _measure_gradients_sharded(self) -> None:
        self._deferred.flush()  # every forward pass of this step is done: measure its activations
        pieces = [(p, self._layout.grad(p)) for p in self.params]
        present = [p for p, g in pieces if g is not None]
        grads = [g for _, g in pieces if g is not None]
        if self.update_ratio and not self._manual:
            # The update-to-weight ratio needs the weights before the step: only the histogram
            # sample of each tensor is kept. (A hand-written update has happened by now: its
            # snapshot is taken at the first forward pass of the step.)
            self._old_samples = self._weight_samples()
        if grads:
            moments = self._moment_stats(grads)
            nonfinite = tensor_stats.nonfinite_counts(grads, moments[:, 0])
            hist, sampled = None, []
            if self.histograms:
                # Binned now, not at the record: a gradient zeroed in place (zero_grad with
                # set_to_none=False) before the record is finished would read as all zeros.
                samples = [self._sampler.sample(g.reshape(-1)) for g in grads]
                hist, sampled = self._grad_hist.counts(samples), [x.numel() for x in samples]
            self._pending = (present, moments, nonfinite, hist, sampled, self._old_samples)
        else:
            self._pending = ([], None, None, None, [], self._old_samples)

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._counts(optimizer):
            self._complete_step()

    def _complete_step(self) -> None:
        self._ownership.step_done()
        if self._order_handles:  # the root module itself is never called (a LightningModule's
            self._order_done(None, None, None)  # training_step calling self.net): order is known
        if self.logging_now and self._pending is not None:
            self._unfinished = (self.step, self._pending, self._acts)
            if self._finish_handle is None:
                self._finish_handle = hooks.forward_pre_hook(self.model, self._start_of_forward)
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

    def _record(self, step: int, pending, acts) -> None:
        if self._shards is not None:
            self._record_sharded(step, pending, acts)
            return
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

        self._submit_record(step, resolve)


    def _submit_record(self, step: int, resolve) -> None:
        """Queue a logged step's record (its rows resolved on the writer thread), with the mean
        step time since the previous record."""
        now = time.perf_counter()
        step_time = None
        if self._last_record_clock is not None and step > self._last_record_step:
            step_time = (now - self._last_record_clock) / (step - self._last_record_step)
        self._last_record_clock, self._last_record_step = now, step
        self.writer.add_layer_record(LayerRecord(step + self.step_offset, time.time(), step_time, resolve=resolve))

    def _ratio_layout(self, weights, w_samples, device):
        """Which weights get an update ratio, and the sample-to-tensor scale of each; built once
        (a host-to-device copy per step would synchronise an accelerator)."""
        key = tuple(p.trainable for p in self.params)
        cached = getattr(self, "_ratio_cache", None)
        if cached is None or cached[0] != key:
            idx = [i for i, p in enumerate(self.params) if p.trainable]
            scale = torch.tensor([(weights[i].numel() / max(w_samples[i].numel(), 1)) ** 0.5 for i in idx],
                                 device=device)
            cached = self._ratio_cache = (key, idx, scale, torch.tensor(idx, device=device, dtype=torch.long))
        return cached[1], cached[2], cached[3]

    def _record_sharded(self, step: int, pending, acts) -> None:
        present, grad_moments, grad_nonfinite, grad_hist, sampled_g, old_samples = pending
        weights = [self._layout.weight(p) for p in self.params]
        device = weights[0].device
        w_samples = [self._sampler.sample(w.reshape(-1)) for w in weights]
        w_moments = self._moment_stats(weights)
        w_nonfinite = tensor_stats.nonfinite_counts(weights, w_moments[:, 0])
        ratios = torch.full((len(weights),), float("nan"), device=device)
        index, update_norms = None, None
        if self.update_ratio and old_samples is not None:
            trainable_idx, scale, index = self._ratio_layout(weights, w_samples, device)
            if trainable_idx and len(trainable_idx) == len(old_samples):
                new = [w_samples[i] for i in trainable_idx]
                deltas = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old_samples))).float()
                # Scale the sample's norm to the whole tensor: exact when the sample is the whole
                # tensor, otherwise an unbiased estimate of |dw|^2 (error ~1/sqrt(2 * sample)).
                update_norms = deltas.to(device) * scale
        hist = None
        if self.histograms:
            w_hist = self._hist.counts(w_samples)
            hist = w_hist if grad_hist is None else torch.cat([grad_hist.to(device), w_hist])
        sampled_w = [s.numel() for s in w_samples] if self.histograms else []
        if self._shards is not None:
            combined = self._shards.combine(grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms,
                                            hist, sampled_g, sampled_w)
            if combined is None:  # not rank 0: its part is sent
                return
            grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms, hist, sampled_g, sampled_w = combined
        if update_norms is not None:
            ratios[index] = update_norms / w_moments[index, 0].clamp(min=1e-30)
        act_names = [name for name, acc in acts.items() if acc.has_data]
        act_rows = finish_activations([acts[n] for n in act_names]).to(device) if act_names else None
        self._register_tensors({name: acts[name].module_type for name in act_names})

        n_grad, n_weight = len(present), len(weights)
        parts = []
        if n_grad:
            parts += [grad_moments.to(device).flatten(), grad_nonfinite.to(device).flatten()]
        parts += [w_moments.flatten(), w_nonfinite.flatten(), ratios]
        if hist is not None:
            parts.append(hist.flatten())
        if act_rows is not None:
            parts.append(act_rows.float().flatten())
        packed = torch.cat(parts)
        event = None
        if packed.device.type == "cuda":
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = packed if packed.device.type == "cpu" else packed.cpu()

        grad_ids = [self._tensor_ids[p.name] for p in present]
        weight_ids = [self._tensor_ids[p.name] for p in self.params]
        act_ids = [self._tensor_ids[name] for name in act_names]
        has_hist = hist is not None

        def resolve():
            if event is not None:
                event.synchronize()
            flat = host.numpy()
            pos = 0

            def take(n, width):
                nonlocal pos
                block = flat[pos: pos + n * width].reshape(n, width)
                pos += n * width
                return block

            g_mom = take(n_grad, tensor_stats.N_MOMENTS) if n_grad else None
            g_nf = take(n_grad, 2) if n_grad else None
            w_mom, w_nf = take(n_weight, tensor_stats.N_MOMENTS), take(n_weight, 2)
            w_ratio = take(n_weight, 1)[:, 0]
            counts = take(n_grad + n_weight, schema.HIST_LEN) if has_hist else None
            acts = take(len(act_ids), tensor_stats.N_FIELDS) if act_ids else None
            blocks = []
            if n_grad:
                g_hist = counts[:n_grad] if has_hist else None
                blocks.append(StatBlock(
                    np.asarray(grad_ids), np.full(n_grad, schema.KIND_GRAD),
                    tensor_stats.finish_stats(g_mom, g_nf, g_hist, sampled_g),
                    g_hist, np.full(n_grad, has_hist),
                ))
            w_hist = counts[n_grad:] if has_hist else None
            blocks.append(StatBlock(
                np.asarray(weight_ids), np.full(n_weight, schema.KIND_WEIGHT),
                tensor_stats.finish_stats(w_mom, w_nf, w_hist, sampled_w, update_ratio=w_ratio),
                w_hist, np.full(n_weight, has_hist),
            ))
            if acts is not None:
                blocks.append(StatBlock(
                    np.asarray(act_ids), np.full(len(act_ids), schema.KIND_ACTIVATION), acts.astype(np.float64),
                ))
            return StatBlock.concat(blocks)

        self._submit_record(step, resolve)


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
                out[r, F_SATURATED] = m["saturated"]
            out[r, F_DEAD] = m["dead"]
        elif kind == schema.KIND_WEIGHT and trainable[r]:
            out[r, tensor_stats.F_UPDATE_RATIO] = m["ratio"]
        if histograms and m["hist"] is not None:
            hists[r], has[r] = m["hist"], True
    if kind != schema.KIND_ACTIVATION and not histograms:
        out[:, tensor_stats.F_ZERO] = np.nan
    return StatBlock(np.asarray(ids, dtype=np.int64), np.full(n, kind), out, hists if has.any() else None,
                     has if has.any() else None)


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


def _process_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _replicated_across_processes() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _owned(sample: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The sample itself when it is already a copy; a copy when it is the source's own memory
    (small tensors are "sampled" whole), which the optimizer step is about to change."""
    return sample.clone() if sample.data_ptr() == source.data_ptr() else sample


def _dense(grad: torch.Tensor) -> torch.Tensor:
    """Sparse gradients (sparse embeddings) are measured on their stored values."""
    return grad.coalesce().values() if grad.is_sparse else sharded.local(grad.detach())

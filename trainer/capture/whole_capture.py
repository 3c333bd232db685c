"""The capture part for whole tensors (one process, DDP, FSDP1 NO_SHARD aside): a logged step's
gradients, held activation outputs and weights measured by the multi-tensor Measurer (the flat
device buffer an accelerator runs, or the CPU's host path), finished into rows on the writer
thread. Composed into `Probe` beside `sharded_capture.ShardedCapture`, the same three calls."""

from __future__ import annotations

import numpy as np
import torch

from ..runlog import schema
from ..runlog.writer import StatBlock
from . import sharded
from .activation_stats import SATURATION_BOUNDS, activation_block, finish_activations
from .pending import UnfinishedRecord, WholeGradients
from .stat_rows import MomentBlock, finish_rows


class WholeCapture:
    """Measures whole tensors for `probe` (its parameters, activations, measurer and writer)."""

    def __init__(self, probe):
        self.probe = probe

    def snapshot_weights(self) -> list:
        """The weights' samples before a hand-written update (the update ratio's "before")."""
        return self.probe._measurer.weight_samples([p.tensor.detach() for p in self.probe.params])

    @torch.no_grad()
    def measure_gradients(self) -> WholeGradients:
        """The logged step's gradients (and held activation outputs), taken before the update."""
        # Every forward pass of this step is done: the held activation outputs join the copy.
        names = {id(acc): name for name, acc in self.probe._acts.items()}
        held = []
        for acc, y in self.probe._deferred.take():
            if acc.has_data:  # part of this module's outputs was already measured (memory budget)
                acc.add(y)
            else:
                held.append((names[id(acc)], acc.module_type, acc.channels_first, y))
        present = [(i, sharded.dense_grad(p.tensor.grad)) for i, p in enumerate(self.probe.params)
                   if p.tensor.grad is not None and i not in self.probe._ownership.by_others]
        # Gradients are taken now (copied on the flat path, measured in place on the CPU's host
        # path), not read at the record: a gradient zeroed in place (zero_grad with
        # set_to_none=False) before the record is finished would read as all zeros. The
        # weights are sampled now too, for the update-to-weight ratio; a hand-written update has
        # happened by now, so its "before" is the snapshot of the step's first forward pass.
        before = None
        if self.probe._manual:
            before = self.probe._old_samples if self.probe._old_samples is not None else [None] * len(self.probe.params)
        groups = self.probe._measurer.begin(present, held, [p.tensor.detach() for p in self.probe.params], before=before)
        return WholeGradients(present, groups, {name: module_type for name, module_type, _, _ in held})

    def other_optimizer_step(self, owned: set[int], pending: WholeGradients) -> None:
        """An optimizer other than the counting one stepped the parameters `owned`: their
        gradients, as it steps with them, join the record of the step just completed."""
        grads = [(i, sharded.dense_grad(self.probe.params[i].tensor.grad)) for i in sorted(owned)
                 if self.probe.params[i].tensor.grad is not None]
        # Decoded after the counting step's groups, so these values replace any taken there.
        extra = self.probe._measurer.begin(grads, [], []) if grads else []
        pending.present = [(i, g) for i, g in pending.present if i not in owned] + grads
        pending.groups = pending.groups + extra

    def record(self, record: UnfinishedRecord) -> None:
        """Measure the weights after the step, finish the record's rows and queue it."""
        step, acts = record.step, record.acts
        present, held_types = record.gradients.present, record.gradients.held_types
        groups = self.probe._measurer.finish(record.gradients.groups)
        measured = [name for name, acc in acts.items() if acc.has_data]  # outputs measured per call
        act_types = dict(held_types)
        act_types.update({name: acts[name].module_type for name in measured})
        self.probe._register_tensors(act_types)
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

        grad_ids = [(i, self.probe._tensor_ids[self.probe.params[i].name]) for i, _ in present]
        weight_ids = [self.probe._tensor_ids[p.name] for p in self.probe.params]
        trainable = [p.tensor.requires_grad for p in self.probe.params]
        held_ids = [(name, self.probe._tensor_ids[name]) for name in held_types]
        measured_ids = [self.probe._tensor_ids[name] for name in measured]
        measurer = self.probe._measurer

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
                rows = finish_rows(activation_block(rows))
                blocks.append(StatBlock(np.asarray(measured_ids), np.full(len(measured_ids), schema.KIND_ACTIVATION),
                                        rows))
            return StatBlock.concat(blocks)

        self.probe._submit_record(step, resolve)




def _stat_block(kind: int, ids: list[int], measured: list, histograms: bool, *, trainable=None,
                act_types=None, act_names=None) -> StatBlock:
    """Rows from Measurer.decode results (None: an empty tensor) through the one finishing step."""
    n = len(ids)
    block = MomentBlock.empty(n)
    block.count[:], block.total[:], block.m2[:], block.sumsq[:] = 0.0, 0.0, 0.0, 0.0  # empty tensors
    block.nan[:], block.inf[:] = 0.0, 0.0
    hists = np.zeros((n, schema.HIST_LEN))
    has = np.zeros(n, bool)
    for r, m in enumerate(measured):
        if m is None:  # an empty tensor: nothing to measure
            continue
        block.count[r], block.total[r], block.m2[r], block.sumsq[r] = m["count"], m["total"], m["m2"], m["sumsq"]
        block.lo[r], block.hi[r], block.nan[r], block.inf[r] = m["min"], m["max"], m["nan"], m["inf"]
        block.zero_frac[r] = m["zero_frac"]
        if kind == schema.KIND_ACTIVATION:
            # Activations report NaN and Inf together (docs/log-format.md).
            block.nan[r], block.inf[r] = m["nan"] + m["inf"], 0.0
            if act_types[act_names[r]] in SATURATION_BOUNDS:
                block.saturated_frac[r] = m["saturated"]
            block.dead_frac[r] = m["dead"]
        elif kind == schema.KIND_WEIGHT and trainable[r]:
            block.update_ratio[r] = m["ratio"]
        if histograms and m["hist"] is not None:
            hists[r], has[r] = m["hist"], True
    if kind != schema.KIND_ACTIVATION and not histograms:
        block.zero_frac[:] = np.nan
    return StatBlock(np.asarray(ids, dtype=np.int64), np.full(n, kind), finish_rows(block),
                     hists if has.any() else None, has if has.any() else None)

"""The capture part for sharded parameters (FSDP2, FSDP1, tensor parallelism, 2-D meshes): every
rank measures its local pieces (sharded.DTensorLayout / fsdp1.FlatLayout), and one gather per
logged step brings the partial results to rank 0, which combines and records them
(sharded.ShardCombiner). Composed into `Probe` beside `whole_capture.WholeCapture`, the same
three calls."""

from __future__ import annotations

import numpy as np
import torch

from ..runlog import schema
from ..runlog.writer import StatBlock
from . import sharded, tensor_stats
from .activation_stats import ACT_WIDTH, activation_block, finish_activations
from .multi_tensor import sample_view
from .pending import ShardedGradients, UnfinishedRecord
from .stat_rows import finish_rows


class ShardedCapture:
    """Measures the local pieces of `probe`'s parameters as `layout` splits them over ranks."""

    def __init__(self, probe, layout, sample_size: int):
        self.probe = probe
        self._layout = layout
        self._shards = sharded.ShardCombiner(layout.replicated, layout.group)
        self._sample_size = sample_size
        self._hist = tensor_stats.HistogramBatcher()
        self._grad_hist = tensor_stats.HistogramBatcher()
        self._ratio_cache = None

    def snapshot_weights(self) -> list[torch.Tensor]:
        """The trainable weights' local samples (the update ratio's \"before\")."""
        pieces = [self._layout.weight(p) for p in self.probe.params if p.trainable]
        return [sharded.owned_copy(self._sample(w), w) for w in pieces]

    def _sample(self, t: torch.Tensor) -> torch.Tensor:
        """The fixed histogram sample of a local piece: the sampler every path uses
        (multi_tensor.sample_view: evenly spaced 16-element blocks), as a view."""
        return sample_view(t.reshape(-1).contiguous(), self._sample_size)

    @torch.no_grad()
    def measure_gradients(self) -> ShardedGradients:
        """The logged step's local gradient pieces, measured before the update."""
        self.probe._deferred.flush()  # every forward pass of this step is done: measure its activations
        pieces = [(p, self._layout.grad(p)) for p in self.probe.params]
        present = [p for p, g in pieces if g is not None]
        grads = [g for _, g in pieces if g is not None]
        if self.probe.update_ratio and not self.probe._manual:
            # The update-to-weight ratio needs the weights before the step: only the histogram
            # sample of each tensor is kept. (A hand-written update has happened by now: its
            # snapshot is taken at the first forward pass of the step.)
            self.probe._old_samples = self.snapshot_weights()
        if grads:
            moments = sharded.local_moments(grads)
            nonfinite = tensor_stats.nonfinite_counts(grads, moments[:, 0])
            hist, sampled = None, []
            if self.probe.histograms:
                # Binned now, not at the record: a gradient zeroed in place (zero_grad with
                # set_to_none=False) before the record is finished would read as all zeros.
                samples = [self._sample(g) for g in grads]
                hist, sampled = self._grad_hist.counts(samples), [x.numel() for x in samples]
            return ShardedGradients(present, moments, nonfinite, hist, sampled, self.probe._old_samples)
        return ShardedGradients([], None, None, None, [], self.probe._old_samples)

    def _ratio_layout(self, weights, w_samples, device):
        """Which weights get an update ratio, and the sample-to-tensor scale of each; built once
        (a host-to-device copy per step would synchronise an accelerator)."""
        key = tuple(p.trainable for p in self.probe.params)
        cached = self._ratio_cache
        if cached is None or cached[0] != key:
            idx = [i for i, p in enumerate(self.probe.params) if p.trainable]
            scale = torch.tensor([(weights[i].numel() / max(w_samples[i].numel(), 1)) ** 0.5 for i in idx],
                                 device=device)
            cached = self._ratio_cache = (key, idx, scale, torch.tensor(idx, device=device, dtype=torch.long))
        return cached[1], cached[2], cached[3]

    def record(self, record: UnfinishedRecord) -> None:
        """Measure the local weights, combine every rank's pieces on rank 0 and queue the record."""
        step, pending, acts = record.step, record.gradients, record.acts
        present, grad_moments, grad_nonfinite = pending.present, pending.moments, pending.nonfinite
        grad_hist, sampled_g, old_samples = pending.hist, pending.sampled, pending.old_samples
        weights = [self._layout.weight(p) for p in self.probe.params]
        device = weights[0].device
        w_samples = [self._sample(w) for w in weights]
        w_moments = sharded.local_moments(weights)
        w_nonfinite = tensor_stats.nonfinite_counts(weights, w_moments[:, 0])
        ratios = torch.full((len(weights),), float("nan"), device=device)
        index, update_norms = None, None
        if self.probe.update_ratio and old_samples is not None:
            trainable_idx, scale, index = self._ratio_layout(weights, w_samples, device)
            if trainable_idx and len(trainable_idx) == len(old_samples):
                new = [w_samples[i] for i in trainable_idx]
                deltas = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old_samples))).float()
                # Scale the sample's norm to the whole tensor: exact when the sample is the whole
                # tensor, otherwise an unbiased estimate of |dw|^2 (error ~1/sqrt(2 * sample)).
                update_norms = deltas.to(device) * scale
        hist = None
        if self.probe.histograms:
            w_hist = self._hist.counts(w_samples)
            hist = w_hist if grad_hist is None else torch.cat([grad_hist.to(device), w_hist])
        sampled_w = [s.numel() for s in w_samples] if self.probe.histograms else []
        combined = self._shards.combine(grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms,
                                        hist, sampled_g, sampled_w)
        if combined is None:  # not rank 0: its part is sent
            return
        grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms, hist, sampled_g, sampled_w = combined
        if update_norms is not None:
            ratios[index] = update_norms / w_moments[index, 0].clamp(min=1e-30)
        act_names = [name for name, acc in acts.items() if acc.has_data]
        act_rows = finish_activations([acts[n] for n in act_names]).to(device) if act_names else None
        self.probe._register_tensors({name: acts[name].module_type for name in act_names})

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

        grad_ids = [self.probe._tensor_ids[p.name] for p in present]
        weight_ids = [self.probe._tensor_ids[p.name] for p in self.probe.params]
        act_ids = [self.probe._tensor_ids[name] for name in act_names]
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
            acts = take(len(act_ids), ACT_WIDTH) if act_ids else None
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
                    np.asarray(act_ids), np.full(len(act_ids), schema.KIND_ACTIVATION), finish_rows(activation_block(acts)),
                ))
            return StatBlock.concat(blocks)

        self.probe._submit_record(step, resolve)

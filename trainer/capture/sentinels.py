"""Every-step sentinels: total gradient norm and non-finite count of each optimizer step.

Cheap enough for every step whatever the logging cadence: one `_foreach_norm` over the gradients
and one `stack` into a device buffer row (two kernels, no host synchronisation). At a drain (each
logged step, a full buffer, a flush) the buffered rows are reduced together - the total norm and
the number of gradient tensors whose norm is not finite (a NaN or Inf gradient makes its norm
NaN/Inf) - and copied to the host once; on CUDA the copy is asynchronous and the values are
written at the next drain, by which time it has long finished.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..runlog import schema

CAPACITY = 256  # steps buffered before a drain is forced


class Sentinels:
    def __init__(self, writer, rank: int = 0):
        self.writer = writer
        self.rank = rank
        self._buffers: dict[str, torch.Tensor] = {}  # device -> [CAPACITY, width] float32
        self._steps: list[tuple[int, float]] = []  # (step, wall time) of the buffered rows
        self._in_flight: list = []  # (steps, host array or tensor, event) copies not yet written
        self._host_out = torch.empty(CAPACITY, 2)
        self._host_view = self._host_out.numpy()

    def observe(self, step: int, grads: list[torch.Tensor]) -> None:
        """Buffer this step's per-tensor gradient norms (called from the optimizer pre-step hook)."""
        if not grads:
            return
        if len(self._steps) >= CAPACITY:
            self.drain()
        by_device: dict[str, list[torch.Tensor]] = {}
        for g in grads:
            by_device.setdefault(str(g.device), []).append(g)
        row = len(self._steps)
        for device, tensors in by_device.items():
            buf = self._buffers.get(device)
            if buf is None or buf.shape[1] < len(tensors):
                buf = self._buffers[device] = torch.zeros(CAPACITY, len(tensors), device=device)
            norms = torch._foreach_norm(tensors, dtype=torch.float32)
            torch.stack(norms, out=buf[row, : len(tensors)])
        self._steps.append((step, time.time()))

    @torch.no_grad()
    def drain(self) -> None:
        """Reduce the buffered steps and hand them to the writer (asynchronously on CUDA)."""
        self._write_finished()
        if not self._steps:
            return
        n = len(self._steps)
        totals = []
        for device, buf in self._buffers.items():
            rows = buf[:n]
            columns = [rows.square().sum(1), (~torch.isfinite(rows)).sum(1, dtype=torch.float32)]
            if device == "cpu" and len(self._buffers) == 1:
                # Into a persistent tensor with a numpy view made once: a numpy copy reads it
                # without the conversion ops a fresh tensor's .numpy() dispatches.
                torch.stack(columns, 1, out=self._host_out[:n])
                totals.append(None)
            else:
                totals.append(torch.stack(columns, 1))
            buf.zero_()  # rows of fewer gradients than the buffer width must add nothing
        event = None
        if totals[0] is None:
            host = self._host_view[:n].copy()
        else:
            packed = sum(t.to(totals[0].device) for t in totals)
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=packed.device.type == "cuda")
            host.copy_(packed, non_blocking=True)
            if packed.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
        self._in_flight.append((self._steps, host, event))
        self._steps = []
        if event is None:
            self._write_finished()

    def _write_finished(self, wait: bool = False) -> None:
        keep = []
        for steps, host, event in self._in_flight:
            if event is not None and not wait and not event.query():
                keep.append((steps, host, event))
                continue
            if event is not None:
                event.synchronize()
            values = host if isinstance(host, np.ndarray) else host.numpy()
            norms, nonfinite = np.sqrt(values[:, 0]), values[:, 1]
            for (step, wall), norm, bad in zip(steps, norms.tolist(), nonfinite.tolist()):
                self.writer.add_scalars(step, {schema.SENTINEL_GRAD_NORM: norm, schema.SENTINEL_NONFINITE: bad},
                                        wall, self.rank)
        self._in_flight = keep

    def close(self) -> None:
        self.drain()
        self._write_finished(wait=True)

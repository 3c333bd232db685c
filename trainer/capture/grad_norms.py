"""Every parameter's gradient norm on every optimizer step, logged or not, at almost no cost.

Each trainable parameter gets a post-accumulate-grad hook: when backward has just written the
gradient (it is in cache), the hook takes its L2 norm - one kernel, no host synchronisation - and
notes the gradient's identity and version counter. At the optimizer step (or `run.step()`) each
parameter's norm is used if its gradient is still that tensor at that version; anything that
changed the gradient since - AMP unscaling, clipping, an in-place all-reduce, a user's edit -
moved the version counter, so that gradient is measured again, as the optimizer sees it. The
step's norms are stacked into one device row; rows are copied to the host once per drain (each
logged step, a full buffer, a flush) and the writer thread stores them (runlog/step_norms.py: an
envelope for the whole run, the recent steps, windows around anomalies) along with each step's
total norm and non-finite count (the `sentinel_*` scalars).

One in-place change moves no version counter: GradScaler's unscaling (a fused foreach op). So
`GradScaler.unscale_` is wrapped to note the optimizer whose gradients it unscaled, and that
optimizer's next step measures every gradient again.

Where that is not the cheaper way, every norm is taken at the step instead, by one fused
`_foreach_norm` per (device, dtype) group: on an accelerator (a launch per parameter costs more
there than one pass over gradient memory; the CPU is the other way round), under DDP with several
processes (the hooks would see each rank's gradient before the all-reduce, which moves no version
counter either), and for sharded layouts (local pieces, combined across ranks).
"""

from __future__ import annotations

import functools
import time
import weakref

import numpy as np
import torch

from ..runlog.step_norms import NO_GRADIENT, StepNormBatch

CAPACITY = 256  # steps buffered on the device before a drain is forced
LIVE_DRAIN_S = 1.0  # and at least this often, so a live dashboard sees every step within ~2 s
_HALF = (torch.float16, torch.bfloat16)


_unscaled: weakref.WeakSet = weakref.WeakSet()  # optimizers whose gradients GradScaler unscaled


def _note_unscaling() -> None:
    """Wrap GradScaler.unscale_ (once per process) to record which optimizer it unscaled."""
    scaler_class = torch.amp.GradScaler
    if getattr(scaler_class.unscale_, "_gradwatch_notes", False):
        return
    original = scaler_class.unscale_

    @functools.wraps(original)
    def unscale_(self, optimizer):
        result = original(self, optimizer)
        _unscaled.add(optimizer)
        return result

    unscale_._gradwatch_notes = True
    scaler_class.unscale_ = unscale_


def grad_norm(g: torch.Tensor) -> torch.Tensor:
    """The L2 norm of a gradient, accumulated at least in float32 (a float64 gradient in float64)."""
    if g.is_sparse:
        g = g.coalesce().values()
    return torch.linalg.vector_norm(g, dtype=torch.float32) if g.dtype in _HALF else torch.linalg.vector_norm(g)


def _fused_norms(grads: list) -> list:
    """The norms of the gradients (None stays None), one `_foreach_norm` per (device, dtype) group;
    half precision accumulated in float32."""
    groups: dict[tuple, list[int]] = {}
    for i, g in enumerate(grads):
        if g is not None:
            groups.setdefault((g.device, g.dtype, g.is_sparse), []).append(i)
    out = list(grads)
    for (_, dtype, sparse), index in groups.items():
        tensors = [grads[i].coalesce().values() if sparse else grads[i].detach() for i in index]
        norms = torch._foreach_norm(tensors, dtype=torch.float32) if dtype in _HALF else torch._foreach_norm(tensors)
        for i, norm in zip(index, norms):
            out[i] = norm
    return out


class GradNormRecorder:
    """Per-parameter gradient norms of every step, handed to the writer in batches."""

    def __init__(self, tensors: list[torch.Tensor], writer, *, rank: int = 0, in_backward: bool = True,
                 grad_of=None, combine=None, records: bool = True):
        self.writer = writer
        self.rank = rank
        # Sharded layouts: `grad_of` gives a rank's local piece, `combine` turns the local norms into
        # the whole tensors' (one collective per step, every rank); only `records` ranks keep rows.
        self._combine = combine
        self._records = records
        self._tensors = tensors
        # How a parameter's gradient is found (the sharded layouts read a local piece).
        self._grad_of = grad_of or (lambda i: tensors[i].grad)
        self._taken: list = [None] * len(tensors)  # (weakref to the gradient, its version, norm tensor)
        self._handles = []
        if in_backward:
            _note_unscaling()
            self._handles = [t.register_post_accumulate_grad_hook(self._hook_for(i))
                             for i, t in enumerate(tensors) if t.requires_grad]
        # [CAPACITY, T] float64 rows on the device; on the CPU with a numpy view made once, so a
        # drain is a numpy copy and dispatches no op (counts stay the same whenever drains happen).
        self._buffer: torch.Tensor | None = None
        self._buffer_view: np.ndarray | None = None
        self._steps: list[int] = []
        self._walls: list[float] = []
        self._in_flight: list = []  # (steps, walls, host tensor, CUDA event or None)
        self._missing: dict[torch.device, torch.Tensor] = {}
        self._span = 1
        self._last_drain = time.perf_counter()
        self.seconds = 0.0  # time spent here, for auto's budget (cadence.py)

    def _hook_for(self, i: int):
        taken = self._taken

        def hook(param):
            g = param.grad
            if g is not None:
                start = time.perf_counter()
                taken[i] = (weakref.ref(g), g._version, grad_norm(g.detach()))
                self.seconds += time.perf_counter() - start

        return hook

    @torch.no_grad()
    def observe(self, step: int, span: int, optimizer=None) -> None:
        """The optimizer step `step` is about to use the gradients: take their norms (re-measured
        where something changed them since backward) into this step's row."""
        start = time.perf_counter()
        if optimizer is not None and optimizer in _unscaled:
            _unscaled.discard(optimizer)
            self._taken = [None] * len(self._tensors)
        values, device = [], None
        if self._combine is not None:  # every rank joins the collective, whatever it holds
            device = self._tensors[0].device if self._tensors else torch.device("cpu")
        for i in range(len(self._tensors)):
            g = self._grad_of(i)
            if g is None:
                values.append(None)
                continue
            taken = self._taken[i]
            if taken is not None and taken[0]() is g and taken[1] == g._version:
                norm = taken[2]
            elif self._handles:
                norm = grad_norm(g.detach())
            else:
                norm = g  # measured below, all at once
            self._taken[i] = None
            device = device or norm.device
            values.append(norm)
        if not self._handles:
            values = _fused_norms(values)
        if device is None and self._combine is None:  # no gradient at all this step
            self.seconds += time.perf_counter() - start
            return
        missing = self._missing.get(device)
        if missing is None:
            missing = self._missing[device] = torch.tensor(NO_GRADIENT, dtype=torch.float64, device=device)
        values = [missing if v is None else v if v.device == device else v.to(device) for v in values]
        if self._combine is not None:
            row = self._combine(torch.stack(values).double())
            if not self._records:
                self.seconds += time.perf_counter() - start
                return
            self._row_buffer(device)[len(self._steps)].copy_(row)
        else:  # one stack per step, straight into the buffer row (promoting float32 norms to float64)
            torch.stack(values, out=self._row_buffer(device)[len(self._steps)])
        self._steps.append(step)
        self._walls.append(time.time())
        self._span = span
        if len(self._steps) >= CAPACITY or start - self._last_drain > LIVE_DRAIN_S:
            self.drain()
        self.seconds += time.perf_counter() - start

    def measure_at_step(self) -> None:
        """Take every norm at the step with fused kernels (the path an accelerator runs), not in backward."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._taken = [None] * len(self._tensors)

    @torch.no_grad()
    def drain(self) -> None:
        """Hand the buffered steps to the writer (asynchronously on CUDA: written at a later drain)."""
        self._write_finished()
        self._last_drain = time.perf_counter()
        n = len(self._steps)
        if not n:
            return
        event = None
        if self._buffer_view is not None:
            host = self._buffer_view[:n].copy()
        else:
            rows = self._buffer[:n]
            host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=rows.device.type == "cuda")
            host.copy_(rows, non_blocking=True)
            if rows.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
        self._in_flight.append((self._steps, self._walls, self._span, host, event))
        self._steps, self._walls = [], []
        self._write_finished()

    def _row_buffer(self, device: torch.device) -> torch.Tensor:
        if self._buffer is None or self._buffer.device != device:
            self._flush_rows_before_moving()
            self._buffer = torch.empty(CAPACITY, len(self._tensors), dtype=torch.float64, device=device)
            self._buffer_view = self._buffer.numpy() if device.type == "cpu" else None
        return self._buffer

    def _flush_rows_before_moving(self) -> None:
        if self._buffer is not None and self._steps:
            self.drain()

    def _write_finished(self, wait: bool = False) -> None:
        keep = []
        for steps, walls, span, host, event in self._in_flight:
            if event is not None and not wait and not event.query():
                keep.append((steps, walls, span, host, event))
                continue
            if event is not None:
                event.synchronize()
            values = host if isinstance(host, np.ndarray) else host.numpy()
            self.writer.add_step_norms(StepNormBatch(
                np.asarray(steps, dtype=np.int64), np.asarray(walls, dtype=np.float64), values, span, self.rank))
        self._in_flight = keep

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.drain()
        self._write_finished(wait=True)

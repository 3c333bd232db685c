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

Under DDP (more than one process) the hooks would see each rank's local gradient before the
all-reduce, which does not move the version counter, so there every norm is taken at the step.
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
        self._rows: list[torch.Tensor] = []  # one float64 row per buffered step, on the device
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
            else:
                norm = grad_norm(g.detach())
            self._taken[i] = None
            device = device or norm.device
            values.append(norm)
        if device is None and self._combine is None:  # no gradient at all this step
            self.seconds += time.perf_counter() - start
            return
        missing = self._missing.get(device)
        if missing is None:
            missing = self._missing[device] = torch.tensor(NO_GRADIENT, dtype=torch.float64, device=device)
        # One stack per step (it promotes float32 norms to the row's float64).
        row = torch.stack([missing if v is None else v if v.device == device else v.to(device) for v in values])
        if self._combine is not None:
            row = self._combine(row)
        if not self._records:
            self.seconds += time.perf_counter() - start
            return
        self._rows.append(row)
        self._steps.append(step)
        self._walls.append(time.time())
        self._span = span
        if len(self._rows) >= CAPACITY or start - self._last_drain > LIVE_DRAIN_S:
            self.drain()
        self.seconds += time.perf_counter() - start

    @torch.no_grad()
    def drain(self) -> None:
        """Hand the buffered steps to the writer (asynchronously on CUDA: written at a later drain)."""
        self._write_finished()
        self._last_drain = time.perf_counter()
        if not self._rows:
            return
        packed = torch.stack(self._rows)
        event = None
        if packed.device.type == "cuda":
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = packed.cpu()
        self._in_flight.append((self._steps, self._walls, self._span, host, event))
        self._rows, self._steps, self._walls = [], [], []
        self._write_finished()

    def _write_finished(self, wait: bool = False) -> None:
        keep = []
        for steps, walls, span, host, event in self._in_flight:
            if event is not None and not wait and not event.query():
                keep.append((steps, walls, span, host, event))
                continue
            if event is not None:
                event.synchronize()
            self.writer.add_step_norms(StepNormBatch(
                np.asarray(steps, dtype=np.int64), np.asarray(walls, dtype=np.float64), host.numpy(), span, self.rank))
        self._in_flight = keep

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.drain()
        self._write_finished(wait=True)

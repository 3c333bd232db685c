"""Statistics of one module's output (forward hooks), accumulated over the micro-batches of a step.

Saturation and dead-unit tests depend on the module type: only outputs of modules with rails
(sigmoid, tanh, ...) can saturate, and only ReLU-like outputs can be dead.
"""

from __future__ import annotations

import math

import torch

# Output ranges that count as "at the rails" (within 1% of the output range of the unit).
# AUTOTRAINER (Zhang et al., ICSE 2021) flags sigmoid outputs < 0.01 or > 0.99 as saturated.
SATURATION_BOUNDS = {
    "Sigmoid": (0.01, 0.99),
    "Hardsigmoid": (0.01, 0.99),
    "Tanh": (-0.99, 0.99),
    "Hardtanh": (-0.99, 0.99),
    "Softsign": (-0.99, 0.99),
}
DEAD_UNIT_TYPES = frozenset({"ReLU", "ReLU6", "RReLU", "Threshold"})
# Outputs that are never negative: their count of non-zeros is the sum of their signs.
NONNEGATIVE_TYPES = frozenset({"ReLU", "ReLU6", "Sigmoid", "Hardsigmoid", "Softplus"})


def first_tensor(output):
    """The tensor a module produced: LSTM returns (output, (h, c)); take the first tensor found."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def unit_dim(y: torch.Tensor, channels_first: bool = False) -> int:
    """The dimension that indexes units: channels (dim 1) for 4-D/5-D conv maps and for 3-D
    outputs that follow a Conv1d (N, C, L); otherwise the last one ((N, F) or (N, T, F))."""
    if y.dim() >= 4 or (y.dim() == 3 and channels_first):
        return 1
    return y.dim() - 1


# Module types whose outputs are activations worth measuring. When a model has none (it calls
# torch.nn.functional in forward), every leaf module's output is measured instead.
ACTIVATION_TYPES = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
     "Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "Softplus", "Softsign", "LogSigmoid",
     "Threshold", "LSTM", "GRU", "RNN"}
)


class ActivationAccumulator:
    """Running sums for one module's outputs within one optimizer step."""

    __slots__ = ("module_type", "channels_first", "on_host", "sums", "alive", "count")

    def __init__(self, module_type: str, channels_first: bool = False, on_host: bool | None = None):
        self.module_type = module_type
        self.channels_first = channels_first
        # Host path (values read on the host between passes) for CPU outputs, the tensor-valued
        # accelerator path otherwise; False forces the accelerator path on the CPU (tests).
        self.on_host = on_host
        # tensor [8]: sum, M2 (sum of squared deviations from the mean), zeros, saturated,
        # numel, min, max, non-finite count. M2 rather than the sum of squares: the std of
        # outputs far from zero (sigmoid near 0.5) would cancel away in float32.
        self.sums = None
        self.alive = None
        self.count = 0

    def add(self, output) -> None:
        y = first_tensor(output)
        if y is None or not y.is_floating_point() or y.numel() == 0:
            return
        y = y.detach()
        unit_max = None
        if self.module_type in DEAD_UNIT_TYPES and y.dim() >= 1:
            dim = unit_dim(y, self.channels_first)
            # A unit is alive if it is positive for some example: its max over the batch > 0.
            unit_max = y.movedim(dim, -1).reshape(-1, y.shape[dim]).amax(dim=0)
            alive = unit_max > 0
            same = self.alive is not None and self.alive.shape == alive.shape
            self.alive = (self.alive | alive) if same else alive
        vec = self._measure_cpu(y, unit_max) if self.reads_on_host(y) else self._measure_device(y)
        self._accumulate(vec, None)

    def _accumulate(self, vec: torch.Tensor, unit_max: torch.Tensor | None) -> None:
        """Merge one micro-batch's measurement (and, from the stacked path, its unit maxima)."""
        if unit_max is not None:
            alive = unit_max > 0
            same = self.alive is not None and self.alive.shape == alive.shape
            self.alive = (self.alive | alive) if same else alive
        if self.sums is None:
            self.sums = vec
        else:
            self.sums = _merge(self.sums, vec)
        self.count += 1

    def _measure_cpu(self, y: torch.Tensor, unit_max: torch.Tensor | None) -> torch.Tensor:
        """Few passes, host arithmetic in between (reading a CPU scalar costs no sync)."""
        n = float(y.numel())
        total = float(y.sum())
        flat = y.reshape(-1)
        if flat.dtype in (torch.float32, torch.float64):
            sumsq = float(torch.dot(flat, flat))  # BLAS: ~2x faster than vector_norm on CPU
        else:
            sumsq = float(torch.linalg.vector_norm(flat.float())) ** 2
        nonfinite = 0.0
        if not math.isfinite(sumsq):
            nonfinite = float((~torch.isfinite(y)).sum())
        m2 = sumsq - total * total / n
        if not m2 > 1e-2 * sumsq:  # the mean dominates: measure the spread around it directly
            m2 = float(torch.linalg.vector_norm(y - total / n)) ** 2
        if self.module_type in NONNEGATIVE_TYPES:
            nonzero = float(y.sign().sum())
        else:
            nonzero = float(y.sign().abs_().sum())
        if self.module_type in ("ReLU", "ReLU6") and nonzero < n and unit_max is not None:
            lo, hi = 0.0, float(unit_max.max())  # a ReLU output with a zero has minimum 0
        else:
            lo_t, hi_t = torch.aminmax(y)
            lo, hi = float(lo_t), float(hi_t)
        saturated = 0.0
        bounds = SATURATION_BOUNDS.get(self.module_type)
        if bounds is not None:
            centre, half = (bounds[0] + bounds[1]) / 2, (bounds[1] - bounds[0]) / 2
            saturated = float((y - centre).abs_().sub_(half).relu_().sign_().sum())
        return torch.tensor([total, m2, n - nonzero, saturated, n, lo, hi, nonfinite], dtype=torch.float64)

    def _measure_device(self, y: torch.Tensor) -> torch.Tensor:
        """Tensor-valued throughout, so an accelerator never waits for the host."""
        n = float(y.numel())
        std, mean = torch.std_mean(y, correction=0)  # one Welford kernel
        nonzero = y.sign().abs_().sum()
        bounds = SATURATION_BOUNDS.get(self.module_type)
        if bounds is not None:
            centre, half = (bounds[0] + bounds[1]) / 2, (bounds[1] - bounds[0]) / 2
            saturated = (y - centre).abs_().sub_(half).relu_().sign_().sum()
        else:
            saturated = nonzero * 0
        lo, hi = torch.aminmax(y)
        nonfinite = (~torch.isfinite(y)).sum()
        return torch.stack(
            [mean * n, std * std * n, n - nonzero, saturated, torch.full_like(mean, n), lo, hi, nonfinite]
        ).double()

    def reads_on_host(self, y: torch.Tensor) -> bool:
        return y.device.type == "cpu" if self.on_host is None else self.on_host

    @property
    def has_data(self) -> bool:
        return self.sums is not None


def _merge(prev: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """Combine two micro-batches' sums; M2 with Chan et al.'s pairwise update."""
    n_a, n_b = prev[4], vec[4]
    delta = vec[0] / n_b - prev[0] / n_a
    m2 = prev[1] + vec[1] + delta * delta * n_a * n_b / (n_a + n_b)
    return torch.cat(
        [prev[0:1] + vec[0:1], m2.reshape(1), prev[2:5] + vec[2:5], torch.minimum(prev[5:6], vec[5:6]),
         torch.maximum(prev[6:7], vec[6:7]), prev[7:] + vec[7:]]
    )


# Outputs up to this many elements are kept until the optimizer step and measured in stacks.
DEFER_NUMEL = 1 << 16
# At most this many elements are held at once (gradient accumulation with many micro-batches).
DEFER_BUDGET = 1 << 22
# Modules whose backward saves their output: an in-place change to the output before backward
# makes autograd fail, so a reference held until the step still reads what the forward produced
# (the version counter is checked as well).
OUTPUT_SAVING_TYPES = frozenset({"ReLU", "Sigmoid", "Tanh"})


def deferrable(acc: ActivationAccumulator, y) -> bool:
    return (isinstance(y, torch.Tensor) and y.requires_grad
            and acc.module_type in OUTPUT_SAVING_TYPES and y.dtype in (torch.float32, torch.float64)
            and 0 < y.numel() <= DEFER_NUMEL)


class DeferredOutputs:
    """One logged step's small CPU activation outputs, referenced (not copied) during the forward
    passes and measured at the optimizer step in stacked batches: a handful of reductions per
    group of equal-shape outputs instead of a dozen small ops per module call, which on CPU cost
    more in dispatch than in arithmetic."""

    def __init__(self):
        self._entries: list = []
        self._numel = 0

    def add(self, acc: ActivationAccumulator, y: torch.Tensor) -> None:
        y = y.detach()  # shares storage and version counter with the output
        self._entries.append((acc, y, y._version))
        self._numel += y.numel()
        if self._numel > DEFER_BUDGET:
            self.flush()

    def clear(self) -> None:
        self._entries, self._numel = [], 0

    def take(self) -> list:
        """(accumulator, output) of the held outputs still as the forward produced them, for the
        probe's multi-tensor measurement; the rest are dropped. Clears the list."""
        entries = [(acc, y) for acc, y, version in self._entries if y._version == version]
        self.clear()
        return entries

    @torch.no_grad()
    def flush(self) -> None:
        entries = [(acc, y) for acc, y, version in self._entries if y._version == version]
        self.clear()
        groups: dict[tuple, list] = {}
        for acc, y in entries:
            groups.setdefault((acc.module_type, acc.channels_first, tuple(y.shape), y.dtype), []).append((acc, y))
        for (module_type, channels_first, _, _), members in groups.items():
            if not members[0][0].reads_on_host(members[0][1]):  # the stacked path reads values on the host
                for acc, y in members:
                    acc.add(y)
                continue
            vecs, unit_maxes = measure_stacked(module_type, channels_first, [y for _, y in members])
            for i, (acc, _) in enumerate(members):
                acc._accumulate(vecs[i], None if unit_maxes is None else unit_maxes[i])


def measure_stacked(module_type: str, channels_first: bool, ys: list[torch.Tensor]):
    """The [len(ys), 8] float64 rows ActivationAccumulator sums (sum, M2, zeros, saturated, numel,
    min, max, non-finite) of equal-shape CPU outputs, and their per-unit maxima (dead-unit types)."""
    k = len(ys)
    stacked = torch.stack(ys)
    flat = stacked.reshape(k, -1)
    n = float(flat.shape[1])
    total = flat.sum(dim=1).double()
    sumsq = torch.linalg.vector_norm(flat, dim=1).double().square()
    m2 = sumsq - total * total / n
    nonfinite = torch.zeros(k, dtype=torch.float64)
    for i in torch.nonzero(~torch.isfinite(sumsq)).flatten().tolist():
        nonfinite[i] = float((~torch.isfinite(flat[i])).sum())
    for i in torch.nonzero(~(m2 > 1e-2 * sumsq)).flatten().tolist():  # the mean dominates: centred pass
        m2[i] = float(torch.linalg.vector_norm(flat[i] - float(total[i]) / n)) ** 2
    signs = flat.sign()
    nonzero = (signs.sum(dim=1) if module_type in NONNEGATIVE_TYPES else signs.abs_().sum(dim=1)).double()
    unit_max = None
    if module_type in DEAD_UNIT_TYPES and ys[0].dim() >= 1:
        dim = unit_dim(ys[0], channels_first) + 1
        unit_max = stacked.movedim(dim, -1).reshape(k, -1, stacked.shape[dim]).amax(dim=1)
    if unit_max is not None and module_type in ("ReLU", "ReLU6") and bool((nonzero < n).all()):
        lo, hi = torch.zeros(k, dtype=torch.float64), unit_max.amax(dim=1).double()  # a zero is the minimum
    else:
        lo, hi = flat.amin(dim=1).double(), flat.amax(dim=1).double()
    saturated = torch.zeros(k, dtype=torch.float64)
    bounds = SATURATION_BOUNDS.get(module_type)
    if bounds is not None:
        centre, half = (bounds[0] + bounds[1]) / 2, (bounds[1] - bounds[0]) / 2
        saturated = (flat - centre).abs_().sub_(half).relu_().sign_().sum(dim=1).double()
    vecs = torch.stack([total, m2, n - nonzero, saturated, torch.full_like(total, n), lo, hi, nonfinite], dim=1)
    return vecs, unit_max


# Columns of finish_activations' table: the moments stat_rows.finish_rows needs.
ACT_COUNT, ACT_TOTAL, ACT_M2, ACT_MIN, ACT_MAX, ACT_NONFINITE, ACT_ZERO, ACT_SATURATED, ACT_DEAD = range(9)
ACT_WIDTH = 9


def finish_activations(accumulators: list[ActivationAccumulator]) -> torch.Tensor:
    """[len(accumulators), ACT_WIDTH] float64 partial moments of the modules that saw data this
    step (count, sum, M2, min, max, non-finite, zero, saturated and dead fractions - the last two
    NaN where the module type has none), in one batch of tensor ops on their device; the writer
    thread finishes them into rows (`activation_block`, stat_rows.finish_rows).

    NaN/Inf are reported together in nan_count (inf_count 0): activations only need to say
    "non-finite here", and one count saves a pass per module.
    """
    sums = torch.stack([acc.sums for acc in accumulators]).double()
    n = sums[:, 4].clamp(min=1)
    nan = float("nan")
    # Built from device values and Python floats only: a host-to-device copy would make an
    # accelerator synchronise.
    saturated = torch.stack(
        [sums[i, 3] / n[i] if acc.module_type in SATURATION_BOUNDS else n[i] * nan for i, acc in enumerate(accumulators)]
    )
    dead = torch.stack(
        [(1.0 - acc.alive.double().mean()) if acc.alive is not None else n[i] * nan for i, acc in enumerate(accumulators)]
    ).to(sums.device)
    return torch.stack([sums[:, 4], sums[:, 0], sums[:, 1], sums[:, 5], sums[:, 6], sums[:, 7], sums[:, 2] / n,
                        saturated, dead], dim=1)


def activation_block(table):
    """finish_activations' table (host array) as a stat_rows.MomentBlock."""
    import numpy as np

    from .stat_rows import MomentBlock

    t = np.asarray(table, dtype=np.float64).reshape(-1, ACT_WIDTH)
    count, total, m2 = t[:, ACT_COUNT], t[:, ACT_TOTAL], t[:, ACT_M2]
    with np.errstate(invalid="ignore", divide="ignore"):
        sumsq = m2 + total * total / np.maximum(count, 1.0)
    return MomentBlock(count=count, total=total, m2=m2, sumsq=sumsq, lo=t[:, ACT_MIN], hi=t[:, ACT_MAX],
                       nan=t[:, ACT_NONFINITE], inf=np.zeros(len(t)), zero_frac=t[:, ACT_ZERO],
                       update_ratio=np.full(len(t), np.nan), saturated_frac=t[:, ACT_SATURATED],
                       dead_frac=t[:, ACT_DEAD])

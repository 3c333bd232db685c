"""One logged step's statistics of every watched tensor in a fixed handful of multi-tensor kernels.

Gradients (before the optimizer step), activation outputs held from the forward passes and the
new weights (after the step) are copied with one `_foreach_copy_` each into one flat buffer per
(device, dtype) group, laid out in rows of CHUNK elements (each tensor starts on a row, its last
row padded). Every statistic then comes from a few whole-buffer reductions whatever the number of
tensors: a fixed sample gathered with one `index_select`, row sums around a per-tensor shift,
row minima/maxima, and `segment_reduce` from rows to tensors. The histograms of every sample are
counted with one `bincount`; the results go to the host as one packed tensor. The kernel count of
a logged step grows with the number of groups, not of tensors (tests/capture/test_dispatch_count.py).
That is the path an accelerator runs, where each kernel is a launch.

On the CPU a dispatched op costs microseconds and a pass over model-sized memory milliseconds, so
the host path (`_host_moments`, `Measurer._reduce_host`) reads each tensor where it is with a sum,
a BLAS dot and an aminmax and copies nothing; only the fixed samples are gathered, and everything
after them (update ratios, saturation, histograms) is shared with the flat path.

Exactness: the shift is the tensor's sample mean rounded to the buffer dtype (always between the
tensor's minimum and maximum), so pads filled with it change neither minimum nor maximum and add
exactly zero to the shifted sums; the variance from shifted sums does not cancel for tensors far
from zero mean (batch-norm weights near 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..runlog import schema
from . import tensor_stats
from .activation_stats import DEAD_UNIT_TYPES, SATURATION_BOUNDS, unit_dim

CHUNK = 1024  # row length: long enough for vectorised row reductions, short enough to pad cheaply
SAMPLE_BLOCK = 16  # samples are blocks of consecutive elements: one 64-byte cache line of float32
# Raw per-segment columns packed for the host: shift, shifted sum, shifted sum of squares, min,
# max, NaN count, Inf count.
R_SHIFT, R_DSUM, R_DSQ, R_MIN, R_MAX, R_NAN, R_INF = range(7)


def sample_plan(numel: int, size: int) -> tuple[int, int, int] | None:
    """(blocks, block length, stride) of the fixed sample of a tensor; None: the whole tensor.

    Evenly spaced blocks with an odd stride: the starts fall on many different columns of a
    matrix whose row length is a power of two (a stride that divides the row length would see
    the same columns in every block)."""
    if numel <= size:
        return None
    block = min(SAMPLE_BLOCK, size)
    blocks = size // block
    if blocks == 1:
        return 1, block, 0
    stride = (numel - block) // (blocks - 1)
    if stride % 2 == 0 and stride - 1 >= block:
        stride -= 1
    return blocks, block, stride


def sample_positions(numel: int, size: int) -> np.ndarray:
    plan = sample_plan(numel, size)
    if plan is None:
        return np.arange(numel, dtype=np.int64)
    blocks, block, stride = plan
    return (np.arange(blocks, dtype=np.int64)[:, None] * stride + np.arange(block, dtype=np.int64)).reshape(-1)


def sample_view(flat: torch.Tensor, size: int) -> torch.Tensor:
    """The fixed sample of a contiguous flat tensor as a view (no copy, no kernel)."""
    plan = sample_plan(flat.numel(), size)
    if plan is None:
        return flat
    blocks, block, stride = plan
    return flat.as_strided((blocks, block), (stride, 1), flat.storage_offset()).reshape(-1)


@dataclass
class Segment:
    """One measured tensor (or one module's outputs over several forward passes)."""

    key: tuple  # ("grad", i), ("weight", i) or ("act", name)
    numels: list[int]  # one per buffer entry (several for an activation of a repeated module)
    module_type: str = ""
    channels_first: bool = False

    @property
    def numel(self) -> int:
        return sum(self.numels)


@dataclass
class Layout:
    """Where each segment of one group lives in the buffer, and the index tensors that gather
    and reduce it; built once per set of shapes and cached. The buffer itself exists only for the
    flat (accelerator) path: the host path reads the tensors where they are."""

    segments: list[Segment]
    device: torch.device
    dtype: torch.dtype
    sample_size: int

    def __post_init__(self):
        starts, rows_per_segment, pad_pos, pad_owner, sample_idx, sample_len = [], [], [], [], [], []
        row = 0
        for s, seg in enumerate(self.segments):
            seg_rows, seg_samples = 0, 0
            for numel in seg.numels:
                start = row * CHUNK
                starts.append((start, numel))
                n_rows = -(-numel // CHUNK)
                pad = n_rows * CHUNK - numel
                if pad:
                    pad_pos.append(np.arange(start + numel, start + n_rows * CHUNK))
                    pad_owner.append(np.full(pad, s))
                positions = sample_positions(numel, self.sample_size)
                sample_idx.append(positions + start)
                seg_samples += len(positions)
                row += n_rows
                seg_rows += n_rows
            rows_per_segment.append(seg_rows)
            sample_len.append(seg_samples)
        dev = self.device
        self.n_rows = row
        self._starts = starts
        self._buffer: torch.Tensor | None = None  # allocated by the flat path's first use only
        self.row_lengths = torch.tensor(rows_per_segment, device=dev)
        self.row_segment = torch.repeat_interleave(torch.arange(len(self.segments), device=dev), self.row_lengths)
        self.pad_pos = torch.from_numpy(np.concatenate(pad_pos)).to(dev) if pad_pos else None
        self.pad_owner = torch.from_numpy(np.concatenate(pad_owner)).to(dev) if pad_owner else None
        self.sample_index = torch.from_numpy(np.concatenate(sample_idx)).to(dev)
        self.sample_len = np.asarray(sample_len, dtype=np.int64)
        self.sample_lengths = torch.from_numpy(self.sample_len).to(dev)
        width = schema.HIST_LEN + 1
        # Each sample's bins offset into its own block of one bincount; NaN goes to a last slot.
        self.hist_offsets = torch.repeat_interleave(torch.arange(len(self.segments), device=dev) * width,
                                                    self.sample_lengths).float().add_(schema.HIST_ZERO_INDEX)
        self.hist_nan_slot = len(self.segments) * width
        self.packed: torch.Tensor | None = None
        self.packed_host: np.ndarray | None = None
        self.numel = np.asarray([seg.numel for seg in self.segments], dtype=np.float64)
        self.sample_start = np.concatenate([[0], np.cumsum(self.sample_len)])
        kinds = [seg.key[0] for seg in self.segments]
        self.weight_slice = _run_of(kinds, "weight")
        self.act_slice = _run_of(kinds, "act")
        self.saturation = self._saturation_bounds()

    @property
    def buffer(self) -> torch.Tensor:
        if self._buffer is None:
            self._buffer = torch.empty(self.n_rows * CHUNK, dtype=self.dtype, device=self.device)
            self._rows = self._buffer.view(self.n_rows, CHUNK)
            self._entry_views = [self._buffer[a: a + n] for a, n in self._starts]
        return self._buffer

    @property
    def rows(self) -> torch.Tensor:
        self.buffer  # noqa: B018 - allocates on first use
        return self._rows

    @property
    def entry_views(self) -> list[torch.Tensor]:
        self.buffer  # noqa: B018 - allocates on first use
        return self._entry_views

    def _saturation_bounds(self):
        """Per-sample-element (centre, half-width) of the activation samples, or None."""
        if self.act_slice is None:
            return None
        a, b = self.act_slice
        if not any(self.segments[i].module_type in SATURATION_BOUNDS for i in range(a, b)):
            return None
        centre, half = [], []
        for i in range(a, b):
            lo, hi = SATURATION_BOUNDS.get(self.segments[i].module_type, (0.0, math.inf))
            centre.append(np.full(self.sample_len[i], (lo + hi) / 2 if math.isfinite(hi) else 0.0))
            half.append(np.full(self.sample_len[i], (hi - lo) / 2))
        to = dict(device=self.device, dtype=self.dtype)
        return torch.from_numpy(np.concatenate(centre)).to(**to), torch.from_numpy(np.concatenate(half)).to(**to)

    @property
    def key(self) -> tuple:
        return tuple((seg.key, tuple(seg.numels)) for seg in self.segments), str(self.device), self.dtype


def _run_of(kinds: list[str], kind: str) -> tuple[int, int] | None:
    idx = [i for i, k in enumerate(kinds) if k == kind]
    if not idx:
        return None
    assert idx == list(range(idx[0], idx[-1] + 1)), "segments of one kind must be adjacent"
    return idx[0], idx[-1] + 1


@dataclass
class GroupStep:
    """One group's work in flight between the optimizer pre-step hook and the record."""

    layout: Layout
    weights: list[torch.Tensor]
    old_samples: torch.Tensor | None
    dead: list[tuple[list[int], torch.Tensor]]  # (segment indices, dead-unit fraction per segment)
    packed: torch.Tensor | None = None  # on an accelerator: the results, still on the device
    host: np.ndarray | None = None  # on the CPU: the results, already a host array
    host_nonfinite: dict = field(default_factory=dict)  # CPU: segment -> (nan, inf), only where non-finite
    # Host path: per-entry (sum, sum of squares, min, max) and samples of the gradients and held
    # outputs, taken before the step (a gradient zeroed in place later would read as zeros).
    early: tuple | None = None


class Measurer:
    """Multi-tensor statistics for a probe: layouts cached by shape, two calls per logged step."""

    MAX_LAYOUTS = 16  # models whose gradient set or micro-batch count changes keep memory bounded

    def __init__(self, sample_size: int = schema.HIST_SAMPLE_SIZE, *, histograms: bool = True,
                 update_ratio: bool = True, host_checks: bool | None = None):
        self.sample_size = sample_size
        self.histograms = histograms
        self.update_ratio = update_ratio
        # On the CPU a statistic can be read without a device synchronisation, so NaN/Inf are
        # counted only for tensors whose extremes are not finite; accelerators count always.
        # None: decide by device; False forces the accelerator path (the dispatch test uses it).
        self.host_checks = host_checks
        self._layouts: dict = {}

    def _layout(self, segments: list[Segment], device, dtype) -> Layout:
        key = (tuple((s.key, tuple(s.numels)) for s in segments), str(device), dtype)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= self.MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[key] = Layout(segments, torch.device(device), dtype, self.sample_size)
        return layout

    @torch.no_grad()
    def begin(self, grads: list[tuple[int, torch.Tensor]], acts: list[tuple[str, str, bool, torch.Tensor]],
              weights: list[torch.Tensor], before: list | None = None) -> list[GroupStep]:
        """Before the optimizer step: copy gradients and held activation outputs, sample the old
        weights (update ratios) and take dead-unit maxima. Entries are grouped by (device, dtype).
        `before`: the weights' samples taken earlier (weight_samples(), for a hand-written update
        that has already changed the weights); a None entry means no "before" (no ratio)."""
        groups: dict[tuple, dict] = {}

        def group(t):
            return groups.setdefault((str(t.device), t.dtype), {"grads": [], "acts": {}, "weights": []})

        for i, g in grads:
            if g.numel():
                group(g)["grads"].append((i, g.reshape(-1)))
        for name, module_type, channels_first, y in acts:
            group(y)["acts"].setdefault(name, (module_type, channels_first, []))[2].append(y)
        for i, w in enumerate(weights):
            if w.numel():
                group(w)["weights"].append((i, w.reshape(-1)))
        steps = []
        for (device, dtype), parts in groups.items():
            segments = [Segment(("grad", i), [g.numel()]) for i, g in parts["grads"]]
            segments += [Segment(("act", name), [y.numel() for y in ys], module_type, channels_first)
                         for name, (module_type, channels_first, ys) in parts["acts"].items()]
            segments += [Segment(("weight", i), [w.numel()]) for i, w in parts["weights"]]
            layout = self._layout(segments, device, dtype)
            sources = [g for _, g in parts["grads"]] + [y.reshape(-1) for _, _, ys in parts["acts"].values() for y in ys]
            early = None
            if self._host_checks(layout):
                early = _host_moments(sources, self.sample_size)
            elif sources:
                torch._foreach_copy_(layout.entry_views[: len(sources)], sources)
            old = None
            if self.update_ratio and parts["weights"]:
                if before is None:
                    old = torch.cat([sample_view(w, self.sample_size) for _, w in parts["weights"]])
                elif all(before[i] is not None for i, _ in parts["weights"]):
                    old = torch.cat([before[i] for i, _ in parts["weights"]])
            steps.append(GroupStep(layout, [w for _, w in parts["weights"]], old, _dead_units(layout, parts["acts"]),
                                   early=early))
        return steps

    @torch.no_grad()
    def weight_samples(self, weights: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Copies of each weight's fixed sample, the update ratio's "before" for begin(before=)."""
        return [sample_view(w.reshape(-1), self.sample_size).clone() if w.numel() else None for w in weights]

    @torch.no_grad()
    def finish(self, steps: list[GroupStep]) -> list[GroupStep]:
        """After the optimizer step: copy the new weights and reduce each group's buffer to one
        packed tensor: `packed` on an accelerator, `host` (a numpy copy) on the CPU."""
        for step in steps:
            layout = step.layout
            if step.early is not None:
                parts = self._reduce_host(step)
            else:
                if step.weights:
                    torch._foreach_copy_(layout.entry_views[-len(step.weights):], step.weights)
                parts = self._reduce(step)
            if layout.device.type != "cpu":
                step.packed = torch.cat(parts)
                continue
            # Packed into a persistent tensor with a numpy view made once: the host copy is then
            # a numpy copy, without the conversion ops a fresh tensor's .numpy() dispatches.
            size = sum(p.numel() for p in parts)
            if layout.packed is None or layout.packed.numel() != size:
                layout.packed = torch.empty(size, dtype=torch.float64)
                layout.packed_host = layout.packed.numpy()
            torch.cat(parts, out=layout.packed)
            step.host = layout.packed_host.copy()
            if self._host_checks(layout) and step.early is None:
                step.host_nonfinite = _host_nonfinite(layout, step.host)
        return steps

    def _host_checks(self, layout: Layout) -> bool:
        return layout.device.type == "cpu" if self.host_checks is None else self.host_checks

    def _reduce(self, step: GroupStep) -> torch.Tensor:
        layout = step.layout
        flat, rows = layout.buffer, layout.rows
        samples = flat.index_select(0, layout.sample_index)
        shift = torch.segment_reduce(samples.double(), "mean", lengths=layout.sample_lengths)
        shift = shift.nan_to_num_(0.0, 0.0, 0.0).to(flat.dtype)  # an Inf or NaN sample: shift by 0
        if layout.pad_pos is not None:
            flat.index_put_((layout.pad_pos,), shift.index_select(0, layout.pad_owner))
        host_checks = self._host_checks(layout)
        columns = [rows.amin(1), rows.amax(1)]
        if not host_checks:
            columns += [torch.isnan(rows).sum(1, dtype=flat.dtype), torch.isinf(rows).sum(1, dtype=flat.dtype)]
        if flat.dtype in (torch.float16, torch.bfloat16):
            # Shifted and summed in float32 (one copy per group, not per tensor): rounding each
            # shifted value to a half type's 8-11 bits would cost ~1e-4 of the norm's accuracy.
            rows = rows.float()
            shift = shift.float()
        rows.sub_(shift.index_select(0, layout.row_segment)[:, None])
        columns += [rows.sum(1), torch.linalg.vector_norm(rows, dim=1)]
        per_row = torch.stack(columns, 1).double()
        n = per_row.shape[1]
        per_row[:, n - 1].square_()  # row sums of squares, from row norms (faster than a dot on CPU)
        sums = torch.segment_reduce(per_row, "sum", lengths=layout.row_lengths, axis=0)
        mins = torch.segment_reduce(per_row[:, 0], "min", lengths=layout.row_lengths)
        maxs = torch.segment_reduce(per_row[:, 1], "max", lengths=layout.row_lengths)
        parts = [shift, sums[:, 2:].flatten(), mins, maxs]  # torch.cat promotes to float64
        return parts + self._sample_parts(step, samples)

    def _reduce_host(self, step: GroupStep) -> list[torch.Tensor]:
        """CPU: the moments of every tensor read in place - a sum, a BLAS dot and an aminmax per
        tensor, three passes and no copy (on a CPU a dispatched op costs microseconds while every
        pass over a model-sized buffer costs milliseconds; the flat path makes about eight).
        Packed like _reduce with host checks: the segment mean as the shift, so the shifted sum
        is zero and the shifted sum of squares the centred one."""
        layout = step.layout
        moments, samples, nonfinite = step.early
        weights = step.weights
        if weights:
            w_moments, w_samples, w_nonfinite = _host_moments(weights, self.sample_size)
            base = len(layout._starts) - len(weights)
            nonfinite = {**nonfinite, **{base + e: v for e, v in w_nonfinite.items()}}
            moments = w_moments if moments is None else np.concatenate([moments, w_moments])
            samples = w_samples if samples is None else torch.cat([samples, w_samples])
        k = len(layout.segments)
        entry_segment = np.repeat(np.arange(k), [len(seg.numels) for seg in layout.segments])
        numels = np.asarray([n for _, n in layout._starts], dtype=np.float64)
        total = np.bincount(entry_segment, moments[:, 0], k)
        mean = total / np.maximum(layout.numel, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            # Entries combined around the segment mean (several outputs of one repeated module).
            entry_mean = moments[:, 0] / np.maximum(numels, 1)
            centred = moments[:, 1] + numels * (entry_mean - mean[entry_segment]) ** 2
            dsq = np.bincount(entry_segment, centred, k)
        has_nan: dict[int, bool] = {}
        for e, (nan, _) in nonfinite.items():
            seg = int(entry_segment[e])
            has_nan[seg] = has_nan.get(seg, False) or nan > 0
        for seg, nan in has_nan.items():  # as the flat path: a NaN anywhere gives NaN, else Inf
            dsq[seg] = np.nan if nan else np.inf
        mins = np.full(k, np.inf)
        maxs = np.full(k, -np.inf)
        with np.errstate(invalid="ignore"):  # NaN extremes stay NaN
            np.minimum.at(mins, entry_segment, moments[:, 2])
            np.maximum.at(maxs, entry_segment, moments[:, 3])
        for e, counts in nonfinite.items():
            seg = int(entry_segment[e])
            prev = step.host_nonfinite.get(seg, (0.0, 0.0))
            step.host_nonfinite[seg] = (prev[0] + counts[0], prev[1] + counts[1])
        sums = np.stack([np.zeros(k), dsq], 1).reshape(-1)
        head = torch.from_numpy(np.concatenate([mean, sums, mins, maxs]))
        return [head] + self._sample_parts(step, samples)

    def _sample_parts(self, step: GroupStep, samples: torch.Tensor) -> list[torch.Tensor]:
        """The statistics taken from the fixed samples: update ratios, saturation, dead units (held
        already) and every histogram in one bincount."""
        layout = step.layout
        parts = []
        if self.update_ratio and step.old_samples is not None and layout.weight_slice is not None:
            a, b = layout.weight_slice
            new = samples[layout.sample_start[a]: layout.sample_start[b]]
            delta = (new - step.old_samples).square_()
            parts.append(torch.segment_reduce(delta, "sum", lengths=layout.sample_lengths[a:b]))
        if layout.saturation is not None:
            a, b = layout.act_slice
            centre, half = layout.saturation
            act = samples[layout.sample_start[a]: layout.sample_start[b]]
            at_rails = (act - centre).abs_().ge_(half)
            parts.append(torch.segment_reduce(at_rails, "sum", lengths=layout.sample_lengths[a:b]))
        parts += [dead for _, dead in step.dead]
        if self.histograms or layout.act_slice is not None:  # activations: zero fraction from the bins
            exact = samples if samples.dtype in (torch.float32, torch.float64) else samples.float()
            index = tensor_stats.log_magnitude_bins(exact, layout.hist_offsets, layout.hist_nan_slot).long()
            counts = torch.bincount(index, minlength=layout.hist_nan_slot + 1)
            parts.append(counts[: layout.hist_nan_slot])
        return parts

    def decode(self, step: GroupStep, host: np.ndarray) -> dict[tuple, dict]:
        """Host side (writer thread): {segment key: statistics} from one group's packed values."""
        layout = step.layout
        k = len(layout.segments)
        host_checks = self._host_checks(layout)
        pos = 0

        def take(count):
            nonlocal pos
            block = host[pos: pos + count]
            pos += count
            return block

        shift = take(k)
        n_sums = 2 if host_checks else 4
        sums = take(k * n_sums).reshape(k, n_sums)
        mins, maxs = take(k), take(k)
        if host_checks:
            nan_inf = np.zeros((k, 2))
            for s, counts in step.host_nonfinite.items():
                nan_inf[s] = counts
            dsum, dsq = sums[:, 0], sums[:, 1]
        else:
            nan_inf, dsum, dsq = sums[:, :2], sums[:, 2], sums[:, 3]
        delta = None
        if self.update_ratio and step.old_samples is not None and layout.weight_slice is not None:
            a, b = layout.weight_slice
            delta = np.full(k, np.nan)
            delta[a:b] = take(b - a)
        saturated = None
        if layout.saturation is not None:
            a, b = layout.act_slice
            saturated = np.full(k, np.nan)
            saturated[a:b] = take(b - a)
        dead = np.full(k, np.nan)
        for segs, _ in step.dead:
            dead[segs] = take(len(segs))
        binned = self.histograms or layout.act_slice is not None
        counts = take(k * (schema.HIST_LEN + 1)).reshape(k, -1)[:, : schema.HIST_LEN] if binned else None
        n = layout.numel
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = shift + dsum / n
            var = np.where(n > 1, np.maximum(dsq - dsum * dsum / n, 0.0) / np.maximum(n - 1, 1), 0.0)
            norm_sq = dsq + 2 * shift * dsum + n * shift * shift
            norm = np.where(np.isfinite(dsq), np.sqrt(np.maximum(norm_sq, 0.0)), dsq)
            zero_frac = counts[:, schema.HIST_ZERO_INDEX] / layout.sample_len if counts is not None else np.full(k, np.nan)
            if saturated is not None:
                saturated = saturated / layout.sample_len
            ratio = None
            if delta is not None:
                ratio = np.sqrt(delta * (n / layout.sample_len)) / np.maximum(norm, 1e-30)
        out = {}
        for s, seg in enumerate(layout.segments):
            out[seg.key] = {
                "norm": norm[s], "mean": mean[s], "std": math.sqrt(var[s]) if np.isfinite(var[s]) else np.nan,
                "min": mins[s], "max": maxs[s], "nan": nan_inf[s, 0], "inf": nan_inf[s, 1],
                "zero_frac": zero_frac[s], "hist": counts[s] if self.histograms else None,
                "sampled": int(layout.sample_len[s]),
                "ratio": np.nan if ratio is None else ratio[s],
                "saturated": np.nan if saturated is None else saturated[s], "dead": dead[s],
            }
        return out


def _host_moments(tensors: list[torch.Tensor], sample_size: int):
    """CPU: (per-tensor [sum, centred sum of squares, min, max] as float64, the tensors' fixed
    samples concatenated, {index: (NaN count, Inf count)} of the non-finite ones).

    The centred sum of squares is dot(x, x) - sum(x)^2 / n, except where that cancels (a tensor
    whose mean is large against its spread: norm weights near 1): those get a second, exact pass
    around their mean."""
    if not tensors:
        return None, None, {}
    totals, squares, lows, highs, empty = [], [], [], [], []
    zero = None
    for i, f in enumerate(tensors):
        if not f.numel():
            empty.append(i)
            zero = f.new_zeros((), dtype=torch.float32) if zero is None else zero
            totals.append(zero), squares.append(zero), lows.append(zero.to(f.dtype)), highs.append(zero.to(f.dtype))
            continue
        if f.dtype in tensor_stats.BLAS_DTYPES:
            totals.append(f.sum())
            squares.append(torch.dot(f, f))
        else:  # half precision: accumulate in float32
            totals.append(f.sum(dtype=torch.float32))
            squares.append(torch.linalg.vector_norm(f, dtype=torch.float32).square())
        lo, hi = torch.aminmax(f)
        lows.append(lo), highs.append(hi)
    # One stack per column for the whole group, not per tensor.
    # numpy has no bfloat16: half-precision extremes are widened (exactly) before leaving torch.
    moments = np.stack([_to_float64(torch.stack(c)) for c in (totals, squares, lows, highs)], 1)
    moments[empty, 2], moments[empty, 3] = math.inf, -math.inf
    n = np.asarray([max(f.numel(), 1) for f in tensors], dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        centred = moments[:, 1] - moments[:, 0] * (moments[:, 0] / n)
        finite = np.isfinite(moments[:, 2]) & np.isfinite(moments[:, 3])
        cancelled = finite & (n > 1) & (moments[:, 1] > 0) & ~(centred > 1e-2 * moments[:, 1])
    for i in np.flatnonzero(cancelled):
        f = tensors[i]
        d = f.to(torch.float64) - float(moments[i, 0] / n[i])
        centred[i] = float(torch.dot(d, d))
    moments[:, 1] = centred
    nonfinite = {}
    for i in np.flatnonzero(~finite):
        f = tensors[i]
        if f.numel():
            nonfinite[int(i)] = (float(torch.isnan(f).sum()), float(torch.isinf(f).sum()))
    samples = torch.cat([sample_view(f, sample_size) for f in tensors])
    return moments, samples, nonfinite


def _to_float64(t: torch.Tensor) -> np.ndarray:
    return (t if t.dtype in tensor_stats.BLAS_DTYPES else t.to(torch.float64)).numpy().astype(np.float64)


def _host_nonfinite(layout: Layout, host: np.ndarray) -> dict:
    """CPU only: NaN/Inf counts of the segments whose extremes are not finite (normally none, so
    normally no kernel at all). The shifted buffer keeps NaN and Inf where they were."""
    found = {}
    k = len(layout.segments)
    extremes = host[3 * k: 5 * k]  # after the shifts and the two shifted sums (see _reduce)
    bad = [s for s in range(k) if not (np.isfinite(extremes[s]) and np.isfinite(extremes[k + s]))]
    if not bad:
        return found
    row_start = np.concatenate([[0], np.cumsum(layout.row_lengths.tolist())])
    for s in bad:
        region = layout.rows[row_start[s]: row_start[s + 1]]
        found[s] = (float(torch.isnan(region).sum()), float(torch.isinf(region).sum()))
    return found


def _dead_units(layout: Layout, acts: dict) -> list[tuple[list[int], torch.Tensor]]:
    """Dead-unit fraction of each ReLU-like activation segment: a unit is dead if it is never
    positive over every example of the step. Equal-shape outputs share one stack and reduction."""
    index = {seg.key: s for s, seg in enumerate(layout.segments)}
    by_shape: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for name, (module_type, channels_first, ys) in acts.items():
        if module_type not in DEAD_UNIT_TYPES:
            continue
        for y in ys:
            if y.dim() >= 1:
                dim = unit_dim(y, channels_first)
                by_shape.setdefault((tuple(y.shape), dim), []).append((index[("act", name)], y))
    out = []
    for (shape, dim), members in by_shape.items():
        stacked = torch.stack([y for _, y in members])
        unit_max = stacked.movedim(dim + 1, -1).reshape(len(members), -1, shape[dim]).amax(dim=1)
        segs = [s for s, _ in members]
        if len(set(segs)) < len(segs):  # micro-batches of one module: a unit alive in any is alive
            order = sorted(range(len(segs)), key=lambda i: segs[i])
            unit_max = unit_max[order]
            unique = sorted(set(segs))
            lengths = torch.tensor([segs.count(s) for s in unique], device=unit_max.device)
            unit_max = torch.segment_reduce(unit_max, "max", lengths=lengths, axis=0)
            segs = unique
        out.append((segs, unit_max.le(0).mean(dim=1, dtype=torch.float64)))
    return out

"""Batched statistics of many tensors at once, computed on their device with few passes.

Pure functions over lists of tensors; the probe decides when to call them. Cost model (2-core CPU,
1.28M floats): norm 0.3 ms, sum 0.13 ms, aminmax 0.24 ms, but std_mean 6.6 ms, (x == 0).sum()
1.8 ms, isnan().sum() 2.1 ms, histc 3.5 ms. Hence:
- std comes from the norm and the sum (var = (|x|^2 - n*mean^2) / (n - 1), in float64 on the host),
- NaN/Inf counts are taken only for tensors whose norm is not finite (a finite norm means none),
- histograms and the zero fraction come from the fixed sample every path uses (at most
  schema.HIST_SAMPLE_SIZE elements per tensor, multi_tensor.sample_view), binned for all tensors
  in one bincount.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..runlog import schema

# var = (|x|^2 - n*mean^2)/(n-1) cancels badly when n*mean^2 is most of |x|^2 (batch-norm
# weights near 1, say). Above this share the spread is measured directly, around the mean.
CANCELLATION_SHARE = 0.99
BLAS_DTYPES = (torch.float32, torch.float64)
M_NORM, M_SUM, M_MIN, M_MAX, M_NUMEL, M_CENTRED = range(6)
N_MOMENTS = 6


def moment_stats(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[len(tensors), 6] float32 on the tensors' device: norm, sum, min, max, numel, centred norm.

    Every statistic uses every element (a sampled mean of a gradient is noise: its mean is
    usually far below its spread). Three passes per tensor on CPU: dot(x, x), sum, aminmax.
    - the centred norm |x - mean| is NaN ("derive std from norm and mean") except where that
      derivation would cancel (n*mean^2 close to |x|^2, batch-norm weights near 1): those tensors
      get an exact sum and centred norm, on CPU after a cheap test, on accelerators always (the
      test would need a device sync).
    On accelerators, small tensors are measured together on one concatenated buffer with
    segment reductions: a handful of kernel launches instead of several per tensor.
    """
    device = tensors[0].device
    if device.type != "cpu":
        return _moment_stats_accelerator(tensors)
    # Small tensors of one size (a model's biases, equal hidden layers) are measured as rows of one
    # stacked matrix: three reductions for the group instead of three per tensor (per-op dispatch
    # costs more than the arithmetic below a few thousand elements). Results are gathered in
    # "groups first, then singles" order and put back in input order with one index_select.
    groups = _same_size_groups(tensors)
    grouped = {i for g in groups for i in g}
    singles = [i for i in range(len(tensors)) if i not in grouped]
    norm_parts, sum_parts, min_parts, max_parts = [], [], [], []
    for group in groups:
        rows = torch.stack([tensors[i].reshape(-1) for i in group])
        norm_parts.append(torch.linalg.vector_norm(rows, dim=1).float())
        sum_parts.append(rows.sum(dim=1).float())
        lo, hi = torch.aminmax(rows, dim=1)
        min_parts.append(lo.float())
        max_parts.append(hi.float())
    if singles:
        nan = torch.tensor(float("nan"))
        norms, sums, mins, maxs = [], [], [], []
        for i in singles:
            f = tensors[i].reshape(-1)
            # BLAS dot(x, x) is ~2x faster than _foreach_norm / vector_norm on CPU.
            norms.append(torch.dot(f, f).sqrt() if f.dtype in BLAS_DTYPES else torch.linalg.vector_norm(f))
            sums.append(f.sum())
            lo, hi = torch.aminmax(f) if f.numel() else (nan, nan)
            mins.append(lo)
            maxs.append(hi)
        norm_parts.append(torch.stack(norms).float())
        sum_parts.append(torch.stack(sums).float())
        min_parts.append(torch.stack(mins).float())
        max_parts.append(torch.stack(maxs).float())
    order = torch.tensor([i for g in groups for i in g] + singles)
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))
    norm_col, sum_col, min_col, max_col = (torch.cat(p).index_select(0, back)
                                           for p in (norm_parts, sum_parts, min_parts, max_parts))
    numel_list = [float(t.numel()) for t in tensors]
    centred = [float("nan")] * len(tensors)
    for i, (norm, total, n) in enumerate(zip(norm_col.tolist(), sum_col.tolist(), numel_list)):
        if n > 1 and math.isfinite(norm) and total * total / n > CANCELLATION_SHARE * norm * norm:
            centred[i] = float(torch.linalg.vector_norm(tensors[i] - total / n))
    return torch.stack(
        [norm_col, sum_col, min_col, max_col, torch.tensor(numel_list), torch.tensor(centred)],
        dim=1,
    )


# CPU tensors up to this many elements are measured in stacked groups of equal size (measured:
# model (a) 1.21 -> 0.84 ms per call; at 65,536 it was slower than per tensor).
STACKED_NUMEL = 4096  # larger groups lose: the stacking copy outweighs the dispatch saved


def _same_size_groups(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of small non-empty tensors, grouped by (size, dtype); groups of two or more."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        if 0 < t.numel() <= STACKED_NUMEL and t.dtype in BLAS_DTYPES:
            groups.setdefault((t.numel(), t.dtype), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


# Tensors up to this many elements are measured together on accelerators (atomic segment
# reductions); larger ones get per-tensor kernels, which are faster for them.
BATCHED_NUMEL = 1 << 16


class _Segments:
    """Cached segment ids for a list of tensor sizes on one device (built once per model)."""

    cache: dict = {}

    @classmethod
    def ids(cls, lengths: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (lengths, str(device))
        found = cls.cache.get(key)
        if found is None:
            counts = torch.tensor(lengths, device=device)
            found = (torch.repeat_interleave(torch.arange(len(lengths), device=device), counts), counts.float())
            if len(cls.cache) > 64:
                cls.cache.clear()
            cls.cache[key] = found
        return found


def _moment_stats_accelerator(tensors: list[torch.Tensor]) -> torch.Tensor:
    rows: list[torch.Tensor | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if 0 < t.numel() <= BATCHED_NUMEL]
    if small:
        flat = torch.cat([tensors[i].reshape(-1).float() for i in small])
        seg, counts = _Segments.ids(tuple(tensors[i].numel() for i in small), flat.device)
        k = len(small)
        sums = flat.new_zeros(k).index_add_(0, seg, flat)
        mean = sums / counts
        deviation = flat - mean.index_select(0, seg)
        m2 = flat.new_zeros(k).index_add_(0, seg, deviation * deviation)
        mins = flat.new_full((k,), float("inf")).scatter_reduce_(0, seg, flat, "amin")
        maxs = flat.new_full((k,), float("-inf")).scatter_reduce_(0, seg, flat, "amax")
        norms = (m2 + counts * mean * mean).sqrt()
        block = torch.stack([norms, sums, mins, maxs, counts, m2.sqrt()], dim=1)
        for j, i in enumerate(small):
            rows[i] = block[j]
    for i, t in enumerate(tensors):
        if rows[i] is not None:
            continue
        if t.numel() == 0:
            rows[i] = t.new_tensor([0.0, 0.0, float("nan"), float("nan"), 0.0, 0.0]).float()
            continue
        std, mean = torch.std_mean(t.float(), correction=0)
        n = float(t.numel())
        lo, hi = torch.aminmax(t)
        centred = std * math.sqrt(n)
        norm = (centred * centred + n * mean * mean).sqrt()
        rows[i] = torch.stack([norm, mean * n, lo.float(), hi.float(), torch.full_like(mean, n), centred])
    return torch.stack(rows)


_TINY = 1e-30  # a normal float32 below the first bin edge (1e-12)


def log_magnitude_bins(values: torch.Tensor, offsets: torch.Tensor | None = None, nan_index: int | None = None
                       ) -> torch.Tensor:
    """Bin index per value as float, in [0, HIST_LEN); NaN (not histogrammed) gets HIST_LEN.

    Arithmetic only (no boolean masks, which are several times slower on CPU): the magnitude bin
    b in [1, BINS_PER_SIGN] is multiplied by sign(x), so zeros land on the zero bin, positives to
    its right and negatives mirrored to its left. +-inf clamps to the outermost bins. With
    `offsets` (float, one per value, HIST_ZERO_INDEX included) each value's index is moved into
    its own block of a batched bincount, and NaN gets `nan_index`.
    """
    # log10 of zeros and subnormals takes a slow path (~10x on CPU); anything below the first
    # edge lands in the innermost bin (or on the zero bin via sign), so clamp them up first.
    # b = clamp(floor((log10|x| - LOG_MIN) * BINS_PER_DECADE) + 1, 1, BINS) in four in-place ops.
    bins = torch.log10(values.abs().clamp_(min=_TINY)).mul_(schema.HIST_BINS_PER_DECADE)
    bins = bins.add_(1 - schema.HIST_LOG_MIN * schema.HIST_BINS_PER_DECADE).clamp_(1, schema.HIST_BINS_PER_SIGN).floor_()
    bins.mul_(torch.sign(values))
    if offsets is None:
        return bins.add_(schema.HIST_ZERO_INDEX).nan_to_num_(nan=float(schema.HIST_LEN))
    return bins.add_(offsets).nan_to_num_(nan=float(nan_index))


class HistogramBatcher:
    """Bins many flat samples in one pass: each sample's bin indices are offset into its own
    block, and one bincount over the concatenation counts them all (bincount on int64 is ~10x
    faster than histc on CPU)."""

    def __init__(self):
        self._offsets: dict[tuple, torch.Tensor] = {}

    def counts(self, samples: list[torch.Tensor]) -> torch.Tensor:
        """[len(samples), HIST_LEN] float counts on the samples' device."""
        device = samples[0].device
        lengths = tuple(s.numel() for s in samples)
        width = schema.HIST_LEN + 1
        key = (lengths, str(device))
        offsets = self._offsets.get(key)
        if offsets is None:
            blocks = torch.arange(len(samples), device=device) * width
            offsets = torch.repeat_interleave(blocks, torch.tensor(lengths, device=device))
            if len(self._offsets) > 64:  # models with changing gradient sets: keep memory bounded
                self._offsets.clear()
            self._offsets[key] = offsets
        flat = torch.cat([s.reshape(-1).float() for s in samples])
        index = log_magnitude_bins(flat).long().add_(offsets)
        counts = torch.bincount(index, minlength=len(samples) * width)
        return counts.view(len(samples), width)[:, : schema.HIST_LEN].float()


def nonfinite_counts(tensors: list[torch.Tensor], norms: torch.Tensor) -> torch.Tensor:
    """[len(tensors), 2] NaN and Inf counts. On CPU, a finite norm proves a tensor has neither, so
    only tensors with a non-finite norm are scanned; on accelerators everything is counted on the
    device (cheaper than synchronising to test the norms), small tensors in one batch."""
    if norms.device.type == "cpu":
        out = torch.zeros(len(tensors), 2)
        for i, value in enumerate(norms.tolist()):
            if not math.isfinite(value):
                out[i, 0] = torch.isnan(tensors[i]).sum()
                out[i, 1] = torch.isinf(tensors[i]).sum()
        return out
    rows: list[torch.Tensor | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if 0 < t.numel() <= BATCHED_NUMEL]
    if small:
        flat = torch.cat([tensors[i].reshape(-1) for i in small])
        seg, _ = _Segments.ids(tuple(tensors[i].numel() for i in small), flat.device)
        zeros = torch.zeros(len(small), device=flat.device)
        nan = zeros.index_add(0, seg, torch.isnan(flat).float())
        inf = zeros.index_add(0, seg, torch.isinf(flat).float())
        block = torch.stack([nan, inf], dim=1)
        for j, i in enumerate(small):
            rows[i] = block[j]
    for i, t in enumerate(tensors):
        if rows[i] is None:
            rows[i] = torch.stack([torch.isnan(t).sum(), torch.isinf(t).sum()]).float()
    return torch.stack(rows)


def finish_stats(moments, nonfinite, hist, sampled, update_ratio=None) -> np.ndarray:
    """Host-side (the writer thread): the schema's rows of whole tensors combined from shards,
    through the one finishing step (stat_rows.finish_rows).

    moments [T,6] (norm, sum, min, max, numel, centred norm or NaN), nonfinite [T,2], hist [T,HIST_LEN] or None,
    sampled [T] elements histogrammed, update_ratio [T] (weights) or None. Returns [T, len(STAT_FIELDS)] float64.
    """
    from .stat_rows import MomentBlock, finish_rows

    m = np.asarray(moments, dtype=np.float64).reshape(-1, N_MOMENTS)
    norm, total, lo, hi, numel, centred = m.T
    block = MomentBlock.empty(len(m))
    n = np.maximum(numel, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        derived = np.maximum(norm * norm - total * total / n, 0.0)
        block.m2 = np.where(np.isfinite(centred), centred * centred, derived)
    block.count, block.total, block.sumsq, block.lo, block.hi = numel, total, norm * norm, lo, hi
    nonfinite = np.asarray(nonfinite, dtype=np.float64).reshape(-1, 2)
    block.nan, block.inf = nonfinite[:, 0].copy(), nonfinite[:, 1].copy()
    if hist is not None:
        sampled = np.asarray(sampled, dtype=np.float64)
        has = sampled > 0
        block.zero_frac[has] = np.asarray(hist, dtype=np.float64)[has, schema.HIST_ZERO_INDEX] / sampled[has]
    if update_ratio is not None:
        block.update_ratio = np.asarray(update_ratio, dtype=np.float64)
    return finish_rows(block)

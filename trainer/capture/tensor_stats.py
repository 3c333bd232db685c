"""Batched statistics of many tensors at once, computed on their device with few passes.

Pure functions over lists of tensors; the probe decides when to call them. Cost model (2-core CPU,
1.28M floats): norm 0.3 ms, sum 0.13 ms, aminmax 0.24 ms, but std_mean 6.6 ms, (x == 0).sum()
1.8 ms, isnan().sum() 2.1 ms, histc 3.5 ms. Hence:
- std comes from the norm and the sum (var = (|x|^2 - n*mean^2) / (n - 1), in float64 on the host),
- NaN/Inf counts are taken only for tensors whose norm is not finite (a finite norm means none),
- histograms and the zero fraction come from a fixed random sample of at most
  schema.HIST_SAMPLE_SIZE elements per tensor, binned for all tensors in one bincount.
"""

from __future__ import annotations

import math

import torch

from ..runlog import schema

N_FIELDS = len(schema.STAT_FIELDS)
F_NORM, F_MEAN, F_STD, F_MIN, F_MAX, F_NAN, F_INF, F_ZERO, F_EXTRA, F_DEAD = range(N_FIELDS)


class SampleIndex:
    """Fixed random element indices per tensor size, so histograms of large tensors are unbiased
    by layout (a strided sample of a 256x256 matrix would see only 16 columns) and repeatable."""

    def __init__(self, sample_size: int = schema.HIST_SAMPLE_SIZE, seed: int = 0):
        self.sample_size = sample_size
        self._generator = torch.Generator().manual_seed(seed)
        self._cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def indices(self, numel: int, device: torch.device) -> torch.Tensor | None:
        """None when the whole tensor is small enough to be histogrammed entirely."""
        if numel <= self.sample_size:
            return None
        key = (numel, device)
        idx = self._cache.get(key)
        if idx is None:
            idx = torch.randperm(numel, generator=self._generator)[: self.sample_size].sort().values
            idx = idx.to(device)
            self._cache[key] = idx
        return idx

    def sample(self, flat: torch.Tensor) -> torch.Tensor:
        idx = self.indices(flat.numel(), flat.device)
        return flat if idx is None else flat.index_select(0, idx)


def moment_stats(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[len(tensors), 5] float32 on the tensors' device: norm, sum, min, max, numel.

    Three passes per tensor (norm, sum, aminmax); norms batched with _foreach_norm.
    """
    norms = torch._foreach_norm(tensors)
    sums = [t.sum() for t in tensors]
    mins, maxs = [], []
    for t in tensors:
        if t.numel() == 0:
            mins.append(t.new_tensor(float("nan")))
            maxs.append(t.new_tensor(float("nan")))
            continue
        lo, hi = torch.aminmax(t)
        mins.append(lo)
        maxs.append(hi)
    device = tensors[0].device
    numels = torch.tensor([float(t.numel()) for t in tensors], device=device)
    return torch.stack(
        [
            torch.stack(norms).float(),
            torch.stack(sums).float(),
            torch.stack(mins).float(),
            torch.stack(maxs).float(),
            numels,
        ],
        dim=1,
    )


def log_magnitude_bins(values: torch.Tensor) -> torch.Tensor:
    """Bin index in [0, HIST_LEN] per value (HIST_LEN marks NaN, which is not histogrammed)."""
    bps = schema.HIST_BINS_PER_SIGN
    magnitude_bin = ((torch.log10(values.abs()) - schema.HIST_LOG_MIN) * schema.HIST_BINS_PER_DECADE).floor()
    # log10(0) = -inf -> clamps to 0 but is overridden by the zero test below; +inf -> last bin.
    magnitude_bin = magnitude_bin.clamp_(0, bps - 1).nan_to_num_(0).long()
    zero = schema.HIST_ZERO_INDEX
    index = torch.where(values > 0, zero + 1 + magnitude_bin, zero - 1 - magnitude_bin)
    index = torch.where(values == 0, torch.full_like(index, zero), index)
    return torch.where(torch.isnan(values), torch.full_like(index, schema.HIST_LEN), index)


def batched_histograms(samples: list[torch.Tensor]) -> torch.Tensor:
    """[len(samples), HIST_LEN] counts of each flat sample on the global log-magnitude bins,
    computed in one pass over all samples (one bincount)."""
    device = samples[0].device
    lengths = torch.tensor([s.numel() for s in samples], device=device)
    flat = torch.cat([s.reshape(-1).float() for s in samples])
    segment = torch.repeat_interleave(torch.arange(len(samples), device=device), lengths)
    width = schema.HIST_LEN + 1
    counts = torch.bincount(segment * width + log_magnitude_bins(flat), minlength=len(samples) * width)
    return counts.view(len(samples), width)[:, : schema.HIST_LEN]


def nonfinite_counts(tensors: list[torch.Tensor], norms: torch.Tensor) -> torch.Tensor:
    """[len(tensors), 2] NaN and Inf counts. On CPU, a finite norm proves a tensor has neither, so
    only tensors with a non-finite norm are scanned; on accelerators everything is counted on the
    device, which is cheaper than synchronising to test the norms."""
    out = torch.zeros(len(tensors), 2, device=norms.device)
    if norms.device.type == "cpu":
        suspects = (~torch.isfinite(norms)).nonzero().flatten().tolist()
    else:
        suspects = range(len(tensors))
    for i in suspects:
        t = tensors[i]
        out[i, 0] = torch.isnan(t).sum()
        out[i, 1] = torch.isinf(t).sum()
    return out


def finish_stats(moments, nonfinite, hist, sampled, extra=None):
    """Host-side: the schema's stat rows from the raw device results (numpy arrays).

    moments [T,5] (norm, sum, min, max, numel), nonfinite [T,2], hist [T,HIST_LEN] or None,
    sampled [T] elements histogrammed, extra [T] or None. Returns a list of STAT_FIELDS tuples.
    """
    rows = []
    for i in range(len(moments)):
        norm, total, lo, hi, numel = (float(v) for v in moments[i])
        n = max(numel, 1.0)
        mean = total / n
        if numel > 1 and math.isfinite(norm) and math.isfinite(mean):
            var = max(norm * norm - n * mean * mean, 0.0) / (n - 1)
            std = math.sqrt(var)
        else:
            std = float("nan") if numel > 1 else 0.0
        if hist is not None and sampled[i] > 0:
            zero_frac = float(hist[i][schema.HIST_ZERO_INDEX]) / float(sampled[i])
        else:
            zero_frac = float("nan")
        rows.append(
            (
                norm, mean, std, lo, hi,
                int(nonfinite[i][0]), int(nonfinite[i][1]),
                zero_frac,
                float("nan") if extra is None else float(extra[i]),
                float("nan"),
            )
        )
    return rows

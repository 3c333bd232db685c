"""Per-layer statistics of sharded parameters (FSDP2 `fully_shard`: DTensor parameters and
gradients; FSDP1 `FullyShardedDataParallel`: slices of flat parameters, fsdp1.py): every rank
measures only its own shard, and one gather per logged step brings the
partial results to rank 0, which combines them into the statistics of the whole tensor. No rank
ever gathers a full parameter or gradient.

Partial results combine exactly: norms as the root of the summed squares, sums and counts (numel,
NaN/Inf, histogram bins, sampled elements) add up, min/max reduce, and the spread combines with
Chan et al.'s pairwise formula (M2 = sum of the shards' M2 + sum of n_i (mean_i - mean)^2). An
update-to-weight ratio's |dw| estimate combines like a norm.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from . import fsdp1, tensor_stats

EMPTY_MOMENTS = (0.0, 0.0, math.inf, -math.inf, 0.0, math.nan)  # a rank whose shard holds nothing


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are DTensors (FSDP2 fully_shard) in a running process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


class DTensorLayout:
    """FSDP2: the watched parameters are DTensors; a rank's piece is its local shard."""

    replicated = False
    group = None

    def __init__(self, params: list):
        self.params = params

    def weight(self, p) -> torch.Tensor:
        return local(p.tensor.detach())

    def grad(self, p) -> torch.Tensor | None:
        grad = p.tensor.grad
        return None if grad is None else local(grad.detach())


def layout_of(model: torch.nn.Module, user_root: torch.nn.Module, watched_param, collect):
    """How the watched parameters are split over ranks: a DTensorLayout (FSDP2), an
    fsdp1.FlatLayout, or None for whole tensors (one process, DDP). `collect` lists a module's
    parameters (probe.collect_params)."""
    flat = fsdp1.layout(model, user_root, watched_param)
    if flat is not None:
        return flat
    if is_sharded(user_root):
        return DTensorLayout(collect(user_root))
    return None


def every_rank_measures(model: torch.nn.Module) -> bool:
    """Whether each rank holds only part of the parameters (FSDP2, FSDP1 FULL_SHARD /
    SHARD_GRAD_OP), so every rank must watch; an unsupported FSDP1 setup raises
    fsdp1.UnsupportedShardingError here, on every rank."""
    modules = fsdp1.fsdp_modules(model)
    if modules:
        from torch.distributed.fsdp._traversal_utils import _get_fsdp_handles

        return fsdp1.strategy_of(_get_fsdp_handles(model))[0] != "NO_SHARD"
    return is_sharded(model)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def local_moments(tensors: list[torch.Tensor]) -> torch.Tensor:
    """tensor_stats.moment_stats of local shards, some of which may be empty (uneven sharding)."""
    device = tensors[0].device
    out = torch.tensor([EMPTY_MOMENTS], device=device).repeat(len(tensors), 1)
    filled = [i for i, t in enumerate(tensors) if t.numel()]
    if filled:
        out[filled] = tensor_stats.moment_stats([tensors[i] for i in filled]).to(out)
    return out


def combine_moments(m: torch.Tensor) -> torch.Tensor:
    """[ranks, T, 6] partial moments (norm, sum, min, max, numel, centred norm) -> [T, 6] of the whole."""
    m = m.double()
    norm_i, sum_i, min_i, max_i, n_i, centred_i = m.unbind(-1)
    n, total = n_i.sum(0), sum_i.sum(0)
    mean_i = sum_i / n_i.clamp(min=1)
    m2_i = torch.where(torch.isfinite(centred_i), centred_i.square(),
                       (norm_i.square() - sum_i * mean_i).clamp(min=0))
    mean = total / n.clamp(min=1)
    m2 = (m2_i + n_i * (mean_i - mean).square()).sum(0)
    return torch.stack([norm_i.square().sum(0).sqrt(), total, min_i.amin(0), max_i.amax(0), n, m2.sqrt()], dim=-1)


def norms_across_shards(group=None):
    """For every-step gradient norms (grad_norms.py): a function turning each rank's local norms
    (NO_GRADIENT, -1, where a parameter has none) into the whole tensors' norms, by one all-reduce
    of the squared norms over the shard group."""

    def combine(local_norms: torch.Tensor) -> torch.Tensor:
        missing = local_norms < 0
        squares = torch.where(missing, torch.zeros_like(local_norms), local_norms.square())
        dist.all_reduce(squares, group=group)
        return torch.where(missing, local_norms, squares.sqrt())

    return combine


class ShardCombiner:
    """One gather per logged step of every rank's partial statistics, combined on rank 0.
    `replicated` (FSDP1 NO_SHARD): rank 0 holds whole tensors and records them alone. `group`
    (FSDP1 hybrid sharding): the ranks one tensor is sharded over; each group gathers to its
    first rank, and rank 0 (first of its group) records its group's whole."""

    def __init__(self, replicated: bool = False, group=None):
        self.rank = dist.get_rank()
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.dst = dist.get_global_rank(group, 0) if group is not None else 0
        self.replicated = replicated

    def combine(self, grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms, hist, sampled_g,
                sampled_w):
        """The same arguments describing whole tensors, on rank 0; None on the other ranks.

        Every rank must call this at the same logged step with the same layout (FSDP gives each
        rank the same parameters, so it does)."""
        if self.replicated:
            return (grad_moments, grad_nonfinite, w_moments, w_nonfinite, update_norms, hist, sampled_g, sampled_w)
        parts = {
            "grad_moments": grad_moments, "grad_nonfinite": grad_nonfinite, "w_moments": w_moments,
            "w_nonfinite": w_nonfinite, "update_norms": update_norms, "hist": hist,
            "sampled_g": torch.tensor(sampled_g, dtype=torch.float64) if sampled_g else None,
            "sampled_w": torch.tensor(sampled_w, dtype=torch.float64) if sampled_w else None,
        }
        present = {k: v for k, v in parts.items() if v is not None}
        device = w_moments.device
        flat = torch.cat([v.reshape(-1).to(device, torch.float64) for v in present.values()])
        gathered = [torch.empty_like(flat) for _ in range(self.world_size)] if self.rank == self.dst else None
        dist.gather(flat, gathered, dst=self.dst, group=self.group)
        if self.rank != 0:
            return None
        stacked = torch.stack(gathered)  # [ranks, L]
        out, pos = dict.fromkeys(parts), 0
        for key, value in present.items():
            block = stacked[:, pos: pos + value.numel()].reshape(self.world_size, *value.shape)
            pos += value.numel()
            if key.endswith("moments"):
                out[key] = combine_moments(block).to(value.dtype)
            elif key == "update_norms":
                out[key] = block.square().sum(0).sqrt().to(value.dtype)
            else:
                out[key] = block.sum(0).to(value.dtype)
        sampled = [[int(x) for x in out[k].tolist()] if out[k] is not None else [] for k in ("sampled_g", "sampled_w")]
        return (out["grad_moments"], out["grad_nonfinite"], out["w_moments"], out["w_nonfinite"],
                out["update_norms"], out["hist"], *sampled)

"""FSDP1 (`torch.distributed.fsdp.FullyShardedDataParallel`): the user's parameters inside FSDP's
flat parameters, and each rank's piece of them.

FSDP1 concatenates the parameters of each wrapped unit into one flat parameter and gives every
rank a contiguous slice of it (with `use_orig_params=False` the original parameters are not even
registered any more). A rank's piece of an original parameter is the part of its flat-parameter
shard that parameter occupies (FSDP's own `_shard_param_infos`: offset and length in the shard);
the statistics of the whole tensor are combined from every rank's piece on rank 0 (sharded.py),
as for FSDP2. Pieces are read from the flat parameter's local shard (`_local_shard`) and the
handle's sharded gradient, which stay the shard whatever FSDP is doing (a unit unsharded for a
forward pass swaps the flat parameter's data to the full tensor, not the shard's).

Names are the user's own ('encoder.fc1.weight'), with FSDP's '_fsdp_wrapped_module.' and the
activation-checkpoint wrapper's prefixes removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import module_path, param_layer

# Strategies that split each flat parameter over the unit's process group: the whole world,
# or (hybrid) a shard group, replicated across groups.
SHARDED = ("FULL_SHARD", "SHARD_GRAD_OP")
HYBRID = ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2")


class UnsupportedShardingError(ValueError):
    """An FSDP1 setup whose statistics gradwatch cannot combine correctly."""


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP1 wrappers inside `model` (itself included); empty when FSDP1 is not in use."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed
        return []
    return [m for m in model.modules() if isinstance(m, FullyShardedDataParallel)]


@dataclass
class Piece:
    """Where one original parameter lies in this rank's shard of its flat parameter."""

    handle: object  # FSDP's FlatParamHandle
    offset: int  # in the local shard
    numel: int  # elements of this parameter in the local shard (0: none here)

    def weight(self) -> torch.Tensor:
        shard = self.handle.flat_param._local_shard
        return shard.detach()[self.offset: self.offset + self.numel]

    def grad(self) -> torch.Tensor | None:
        # The gradient the optimizer steps with: FSDP's sharded gradient (the CPU-offloaded
        # copy where offloading is on). None before the unit's first backward pass.
        grad = self.handle.sharded_grad
        return None if grad is None else grad.detach()[self.offset: self.offset + self.numel]


@dataclass
class FlatLayout:
    """The watched parameters of an FSDP1 model and this rank's piece of each."""

    params: list  # probe.WatchedParam, in the user module's registration order
    pieces: dict  # id(WatchedParam) -> Piece
    replicated: bool  # NO_SHARD: every rank holds whole tensors (recorded by rank 0 alone)
    group: object = None  # the process group a parameter is sharded over (None: every rank)

    def weight(self, p) -> torch.Tensor:
        return self.pieces[id(p)].weight()

    def grad(self, p) -> torch.Tensor | None:
        return self.pieces[id(p)].grad()


def strategy_of(handles: list) -> tuple[str, object]:
    """(the one sharding strategy of every unit, the process group its parameters are sharded
    over: None for every rank), or UnsupportedShardingError."""
    import torch.distributed as dist

    names = {h._sharding_strategy.name for h in handles}
    groups = {h.process_group for h in handles}
    if len(names) != 1 or len(groups) != 1:
        raise UnsupportedShardingError(
            "gradwatch records FSDP models whose units share one sharding strategy and process group; got "
            f"{', '.join(sorted(names))} over {len(groups)} process group(s)")
    (name,), (group,) = names, groups
    if name == "NO_SHARD":
        return name, None
    if name not in SHARDED + HYBRID:
        raise UnsupportedShardingError(f"gradwatch cannot record FSDP sharding strategy {name}; "
                                       f"known: {', '.join(SHARDED + HYBRID + ('NO_SHARD',))}")
    if name in SHARDED and dist.get_world_size(group) != dist.get_world_size():
        raise UnsupportedShardingError(
            f"gradwatch records {name} units sharded over every rank; these are sharded over "
            f"{dist.get_world_size(group)} of {dist.get_world_size()} ranks (use HYBRID_SHARD for shard groups)")
    return name, group if name in HYBRID else None


def layout(model: nn.Module, user_root: nn.Module, watched_param) -> FlatLayout | None:
    """The FSDP1 layout of `model` (user_root: the user's module inside the outer wrapper), or
    None without FSDP1. `watched_param` builds a probe.WatchedParam(name, layer, param,
    module_type, tensor, shape)."""
    if not fsdp_modules(model):
        return None
    from torch.distributed.fsdp._traversal_utils import _get_fsdp_handles

    handles = _get_fsdp_handles(model)
    if not handles:
        raise UnsupportedShardingError("FSDP model has no flat parameters (was it run before being wrapped?)")
    strategy, group = strategy_of(handles)
    # id(module) -> entries of its own parameters held in flat parameters, in FSDP's order.
    owned: dict[int, list] = {}
    for handle in handles:
        flat = handle.flat_param
        for info, shape, shard in zip(flat._param_infos, flat._shapes, flat._shard_param_infos):
            piece = Piece(handle, shard.offset_in_shard or 0, shard.numel_in_shard or 0) if shard.in_shard \
                else Piece(handle, 0, 0)
            owned.setdefault(id(info.module), []).append((info.param_name, tuple(shape), piece, flat))
    params, pieces = [], {}
    for name, module in user_root.named_modules():
        path = module_path(name)
        for param_name, shape, piece, flat in owned.pop(id(module), []):
            # use_orig_params=True keeps the original parameter registered (the optimizer holds
            # it); otherwise the optimizer holds the flat parameter.
            original = module._parameters.get(param_name) if piece.handle._use_orig_params else None
            tensor = original if isinstance(original, nn.Parameter) else flat
            layer = param_layer(path, module, param_name) if path else type(module).__name__
            p = watched_param(f"{layer}.{param_name}", layer, param_name, type(module).__name__, tensor, shape)
            params.append(p)
            pieces[id(p)] = piece
    if owned:
        raise UnsupportedShardingError("FSDP holds parameters of modules outside the watched model; "
                                       "watch the outermost FSDP module")
    return FlatLayout(params, pieces, strategy == "NO_SHARD", group)

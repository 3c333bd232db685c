"""One rank of a 2-process FSDP1 (FullyShardedDataParallel, gloo, CPU) training under Run, for
tests/capture/test_run_api_fsdp1.py.

usage: torchrun --nproc_per_node 2 fsdp1_worker.py LOGDIR OUT_JSON USE_ORIG_PARAMS WRAP STRATEGY
USE_ORIG_PARAMS: 1 or 0; WRAP: "nested" (each Linear its own unit, then the root) or "root" (one
unit holding every parameter) or "mixed" (the encoder a NO_SHARD unit inside a root of STRATEGY:
gradwatch refuses it); STRATEGY: a ShardingStrategy name (FULL_SHARD, SHARD_GRAD_OP,
NO_SHARD, HYBRID_SHARD).
Both ranks see the same batches, so the sharded gradients equal a single-process reference that
rank 0 trains beside it. Writes OUT_JSON (rank 0): run path, the reference's per-step statistics,
and the number of collective calls of each kind made by gradwatch at the logged steps.
"""

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp import ShardingStrategy  # noqa: E402
from torch.distributed.fsdp.wrap import ModuleWrapPolicy  # noqa: E402

from gradwatch.trainer.capture.fsdp1 import UnsupportedShardingError  # noqa: E402
from gradwatch.trainer.capture.probe import Probe  # noqa: E402
from gradwatch.trainer.run import Run  # noqa: E402

STEPS = 4
COLLECTIVES = ("gather", "all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "reduce_scatter_tensor")


class Net(nn.Module):
    """Sizes chosen so the flat parameters split unevenly: a rank's shard holds part of a weight,
    and a bias may lie wholly on one rank."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 10), nn.ReLU())
        self.hidden = nn.Linear(10, 7)
        self.act = nn.Tanh()
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.act(self.hidden(self.encoder(x))))


def main() -> None:
    logdir, out_json, use_orig, wrap, strategy = sys.argv[1:6]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = Net()
    reference = copy.deepcopy(model)
    policy = ModuleWrapPolicy({nn.Linear}) if wrap == "nested" else None
    groups = {}
    if strategy == "HYBRID_SHARD":
        # Two shard groups of half the ranks each ([0, 1] and [2, 3] of 4), replicated across
        # them: combining over all ranks (not the shard group) would count every shard twice.
        world, half = dist.get_world_size(), dist.get_world_size() // 2
        shard = [dist.new_group(list(range(i, i + half))) for i in range(0, world, half)]
        replicate = [dist.new_group(list(range(i, world, half))) for i in range(half)]
        groups["process_group"] = (shard[rank // half], replicate[rank % half])
    if wrap == "mixed":
        model.encoder = FSDP(model.encoder, device_id=torch.device("cpu"), sharding_strategy=ShardingStrategy.NO_SHARD)
    model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=use_orig == "1", auto_wrap_policy=policy,
                 sharding_strategy=ShardingStrategy[strategy], **groups)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    # Collectives gradwatch's capture makes: counted inside optimizer.step() and inside the
    # probe's measuring and recording (FSDP's own collectives run in forward and backward).
    counts, counting = {}, [False]
    for method in ("_measure_gradients", "_record"):
        def measured(self, *args, _original=getattr(Probe, method), **kwargs):
            counting[0] = True
            try:
                return _original(self, *args, **kwargs)
            finally:
                counting[0] = False

        setattr(Probe, method, measured)
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            if counting[0]:
                counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(dist, name, wrapper)
    expected = []
    with Run(logdir, name="fsdp1") as run:
        try:
            probe = run.watch(model, every=1)
        except UnsupportedShardingError as exc:
            Path(f"{out_json}.rank{rank}").write_text(json.dumps({"path": str(run.path), "refused": str(exc)}))
            return
        g = torch.Generator().manual_seed(1)
        for _ in range(STEPS):
            x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            ref_opt.zero_grad()
            nn.functional.mse_loss(reference(x), y).backward()
            expected.append({name: {"grad": p.grad.double().norm().item(), "grad_mean": p.grad.double().mean().item(),
                                    "grad_std": p.grad.double().std().item(), "grad_min": p.grad.min().item(),
                                    "grad_max": p.grad.max().item()}
                             for name, p in reference.named_parameters()})
            before = {name: p.detach().clone() for name, p in reference.named_parameters()}
            ref_opt.step()
            for name, p in reference.named_parameters():
                expected[-1][name]["weight"] = p.detach().double().norm().item()
                expected[-1][name]["weight_mean"] = p.detach().double().mean().item()
                expected[-1][name]["ratio"] = ((p.detach() - before[name]).norm() / p.detach().norm()).item()
        path = str(run.path)
    out = {"path": path, "expected": expected, "counts": counts, "watching": probe is not None,
           "shapes": {name: list(p.shape) for name, p in reference.named_parameters()}}
    Path(f"{out_json}.rank{rank}").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

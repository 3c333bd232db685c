"""One rank of a 2-process FSDP2 (fully_shard, gloo, CPU) training under Run, for
tests/capture/test_run_api_fsdp.py.

usage: torchrun --nproc_per_node 2 fsdp_worker.py LOGDIR OUT_JSON
Both ranks see the same batches, so the sharded gradients equal a single-process reference that
rank 0 trains beside it. Writes OUT_JSON (rank 0): run path, the reference's per-step gradient and
weight norms, and the counts of gathers and of full-tensor gathers seen during training.
"""

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from gradwatch.trainer.run import Run  # noqa: E402

STEPS = 4


def counting(owner, name, counts):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def main() -> None:
    logdir, out_json = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    # 7 output rows: dim 0 does not split evenly over 2 ranks.
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 7), nn.Tanh(), nn.Linear(7, 3))
    reference = copy.deepcopy(model)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    counts = {}
    counting(dist, "gather", counts)
    counting(DTensor, "full_tensor", counts)
    counting(DTensor, "redistribute", counts)
    expected = []
    with Run(logdir, name="fsdp") as run:
        run.watch(model, every=1)
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
                expected[-1][name]["ratio"] = ((p.detach() - before[name]).norm() / p.detach().norm()).item()
        path = str(run.path)
    if rank == 0:
        Path(out_json).write_text(json.dumps({"path": path, "expected": expected, "counts": counts}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

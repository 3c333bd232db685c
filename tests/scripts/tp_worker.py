"""One rank of a tensor-parallel training under Run (gloo, CPU), for tests/capture/test_run_api_tp.py.

usage: torchrun --nproc_per_node N tp_worker.py MODE LOGDIR OUT_JSON
MODE "tp": N=2, a 1-D mesh, `parallelize_module` with ColwiseParallel then RowwiseParallel (its
bias replicated) and a last layer left unparallelised. MODE "fsdp_tp": N=4, a 2-D (dp=2, tp=2)
mesh, the same plan on "tp" and `fully_shard` over "dp". Every rank sees the same batches, so the
gradients equal a single-process reference that rank 0 trains beside it. Writes OUT_JSON (rank 0):
the run path and the reference's per-step statistics of every parameter.
"""

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module  # noqa: E402

from gradwatch.trainer.run import Run  # noqa: E402

STEPS = 3


def reference_stats(tensor: torch.Tensor) -> dict:
    x = tensor.detach().double()
    return {"norm": x.norm().item(), "mean": x.mean().item(), "std": x.std().item(),
            "min": x.min().item(), "max": x.max().item()}


def main() -> None:
    mode, logdir, out_json = sys.argv[1:4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4), nn.Tanh(), nn.Linear(4, 3))
    reference = copy.deepcopy(model)
    plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
    if mode == "tp":
        parallelize_module(model, init_device_mesh("cpu", (2,), mesh_dim_names=("tp",)), plan)
    else:
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        parallelize_module(model, mesh["tp"], plan)
        fully_shard(model, mesh=mesh["dp"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    expected = []
    with Run(logdir, name=mode) as run:
        run.watch(model, every=1)
        g = torch.Generator().manual_seed(1)
        for _ in range(STEPS):
            x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            ref_opt.zero_grad()
            nn.functional.mse_loss(reference(x), y).backward()
            step = {name: {"grad": reference_stats(p.grad)} for name, p in reference.named_parameters()}
            ref_opt.step()
            for name, p in reference.named_parameters():
                step[name]["weight"] = reference_stats(p)
            expected.append(step)
        path = str(run.path)
    if rank == 0:
        Path(out_json).write_text(json.dumps({"path": path, "expected": expected}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""One rank of a 2-process DDP (gloo, CPU) training under Run, for tests/test_run_api_ddp.py.

usage: RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python ddp_worker.py LOGDIR OUT_JSON
Rank 0's writer drops every histogram (as under a slow disk), and rank 1 finishes 0.5 s after
rank 0, so the test can check that rank 0's drop count survives rank 1's close.
Writes OUT_JSON: run path, rank, and the gradient norms (after all-reduce) of every step.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from gradwatch.trainer.run import Run  # noqa: E402

STEPS = 4


def main() -> None:
    logdir, out_json = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # same initial weights on both ranks
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    torch.manual_seed(100 + rank)  # different data per rank
    grads = []
    run = Run(logdir, name="ddp", config={"world": 2})
    if rank == 0:  # a slow shared disk: the writer drops every histogram (and counts them)
        add_layer_record = run._writer.add_layer_record

        def add_dropping_histograms(record):
            record.drop_histograms = True
            add_layer_record(record)

        run._writer.add_layer_record = add_dropping_histograms
    probe = run.watch(ddp, every=1)
    for step in range(STEPS):
        opt.zero_grad()
        loss = ddp(torch.randn(5, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        grads.append({n: torch.linalg.vector_norm(p.grad).item() for n, p in model.named_parameters()})
        run.log(step, train_loss=loss.item(), rank_id=rank)
    if rank == 1:
        time.sleep(0.5)
    run.finish()
    Path(out_json).write_text(json.dumps({
        "path": str(run.path), "rank": rank, "grads": grads, "probe_is_none": probe is None,
    }))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

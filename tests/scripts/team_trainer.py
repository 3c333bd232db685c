"""A small trainer for the team tests and bench/team_lag.py: `python team_trainer.py LOGDIR NAME STEPS PAUSE_S`,
alone or under torchrun (DDP with gloo, every rank publishing into one run). Prints the run id first."""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist

from gradwatch.trainer.run import Run


def main() -> None:
    logdir, name, steps, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with Run(logdir, name=name) as run:
        run.watch(model, every=5)
        print(run.id, flush=True)
        for step in range(steps):
            loss = model(torch.randn(32, 8)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(step, loss=loss.item())
            time.sleep(pause)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

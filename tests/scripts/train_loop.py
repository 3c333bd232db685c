"""A user's training loop under Run, for tests that need a trainer in another process.

usage: python tests/scripts/train_loop.py LOGDIR STEPS [EVERY] [FLUSH_S] [SLEEP_S]
STEPS 0 trains forever. Prints the run folder on the first line, then 'step N' lines.
Scalars per step: train_loss (the real loss) and check = 2 * step + 1 (for consistency checks).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gradwatch.trainer.run import Run  # noqa: E402


def main() -> None:
    logdir, steps = sys.argv[1], int(sys.argv[2])
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    flush_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    sleep_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Run(logdir, name="subproc", flush_interval_s=flush_s) as run:
        run.watch(model, every=every)
        print(run.path, flush=True)
        step = 0
        while steps == 0 or step < steps:
            opt.zero_grad()
            loss = model(torch.randn(4, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            run.log(step, train_loss=loss.item(), check=2 * step + 1)
            if step % 50 == 0:
                print(f"step {step}", flush=True)
            step += 1
            if sleep_s:
                time.sleep(sleep_s)


if __name__ == "__main__":
    main()

"""pytorch/examples time_sequence_prediction (github.com/pytorch/examples, time_sequence_prediction/
train.py and generate_sine_wave.py, BSD 3-Clause licence, Copyright (c) 2017 PyTorch contributors):
two stacked LSTM cells learning to continue sine waves.

Written here after the published script (read at commit 77f55b9), not copied: `LSTMCell(1, 51)`
then `LSTMCell(51, 51)` unrolled over the sequence by hand, a `Linear(51, 1)` read-out at each time
step, the whole model in float64, MSE loss, L-BFGS at lr 0.8 stepping with a closure on the whole
training set (all but the first 3 waves, which are the test set), the test loss after every step.
The waves follow generate_sine_wave.py (sin((t + shift) / 20), shifts in +-80).

Trimmed for the CPU: 16 waves of 100 points instead of 100 of 1,000, 6 L-BFGS steps of at most 8
closure calls. A case may swap the optimizer, as a user trying SGD would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe


class Sequence(nn.Module):
    def __init__(self, hidden: int = 51):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x):
        zeros = torch.zeros(x.size(0), self.hidden, dtype=torch.double)
        h1, c1, h2, c2 = zeros, zeros, zeros, zeros
        outputs = []
        for x_t in x.split(1, dim=1):
            h1, c1 = self.lstm1(x_t, (h1, c1))
            h2, c2 = self.lstm2(h1, (h2, c2))
            outputs.append(self.linear(h2))
        return torch.cat(outputs, dim=1)


DEFAULTS = dict(optimizer="lbfgs", lr=0.8, steps=6, max_iter=8, waves=16, length=100, momentum=0.0, clip=None,
                every=1, seed=0)


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    from gradwatch import Run

    opt = {**DEFAULTS, **options}
    torch.manual_seed(opt["seed"])
    waves = data.sine_waves(opt["waves"], opt["length"])
    inputs, target = waves[3:, :-1], waves[3:, 1:]
    test_input, test_target = waves[:3, :-1], waves[:3, 1:]
    seq = Sequence().double()
    criterion = nn.MSELoss()
    if opt["optimizer"] == "lbfgs":
        optimizer = torch.optim.LBFGS(seq.parameters(), lr=opt["lr"], max_iter=opt["max_iter"])
    else:
        optimizer = torch.optim.SGD(seq.parameters(), lr=opt["lr"], momentum=opt["momentum"])
    probe = TruthProbe(seq)
    # ---- gradwatch glue ----
    with Run(logdir, name=name, config={k: v for k, v in opt.items() if k != "every"}) as run, probe:
        run.watch(seq, every=opt["every"])
        for i in range(opt["steps"]):
            def closure():
                optimizer.zero_grad()
                loss = criterion(seq(inputs), target)
                if not probe.losses.get(probe.step):  # the step's own loss: its first evaluation
                    probe.record_loss(loss)
                loss.backward()
                if opt["clip"]:
                    nn.utils.clip_grad_norm_(seq.parameters(), opt["clip"])
                return loss

            loss = optimizer.step(closure) if opt["optimizer"] == "lbfgs" else _sgd_step(optimizer, closure)
            run.log(i, train_loss=float(loss.detach()))
            with torch.no_grad():
                test_loss = criterion(seq(test_input), test_target).item()
            run.log(i, val_loss=test_loss)
            probe.record_val(test_loss)
            if not math.isfinite(float(loss.detach())):
                break
        path = run.path
    return str(path), probe.record()


def _sgd_step(optimizer, closure):
    loss = closure()
    optimizer.step()
    return loss

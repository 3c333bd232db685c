"""pytorch/examples mnist (github.com/pytorch/examples, mnist/main.py, BSD 3-Clause licence,
Copyright (c) 2017 PyTorch contributors): the example's Net and its train/test loop.

Written here after the published script (read at commit 77f55b9), not copied: two 3x3
convolutions with functional ReLUs, 2x2 max pooling, dropout 0.25, a hidden Linear layer with
ReLU and dropout 0.5, a 10-way output through log_softmax and `nll_loss`; Adadelta at lr 1.0 with
StepLR(step_size=1, gamma=0.7) stepped after every epoch, batches of 64, evaluation on the test set
after every epoch.

Trimmed for the CPU: 8 and 16 channels instead of 32 and 64, a 64-unit hidden layer instead of
128, three epochs of 20 batches; the data are MNIST-shaped synthetic digits (data.prototype_images:
28x28, one channel, 10 classes, normalised), since nothing may be downloaded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe


class Net(nn.Module):
    def __init__(self, c1: int = 8, c2: int = 16, hidden: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(c2 * 12 * 12, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


DEFAULTS = dict(batch_size=64, test_batch_size=500, epochs=3, batches_per_epoch=20, lr=1.0, gamma=0.7, seed=1,
                every=10, hidden_bias=None, train_size=None)


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    from gradwatch import Run

    args = {**DEFAULTS, **options}
    torch.manual_seed(args["seed"])
    n_train = args["train_size"] or args["batch_size"] * args["batches_per_epoch"]
    x, y = data.prototype_images(0, n_train)
    tx, ty = data.prototype_images(0, args["test_batch_size"], sample=1)
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args["batch_size"],
                                               shuffle=True)
    model = Net()
    if args["hidden_bias"] is not None:  # the injected fault: hidden biases initialised far below zero
        for layer in (model.conv1, model.conv2, model.fc1):
            nn.init.constant_(layer.bias, args["hidden_bias"])
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args["lr"])
    scheduler = StepLR(optimizer, step_size=1, gamma=args["gamma"])
    probe = TruthProbe(model, relu_sites={"conv1": "relu", "conv2": "relu", "fc1": "relu"})
    step = 0
    # ---- gradwatch glue ----
    with Run(logdir, name=name, config={k: v for k, v in args.items() if k != "every"}) as run, probe:
        run.watch(model, every=args["every"])
        for epoch in range(1, args["epochs"] + 1):
            model.train()
            for _ in range(max(1, math.ceil(args["batches_per_epoch"] / len(train_loader)))):
                for data_batch, target in train_loader:
                    optimizer.zero_grad()
                    loss = F.nll_loss(model(data_batch), target)
                    probe.record_loss(loss)
                    loss.backward()
                    optimizer.step()
                    run.log(step, train_loss=loss.item())
                    step += 1
            model.eval()
            with torch.no_grad():
                out = model(tx)
                test_loss = F.nll_loss(out, ty).item()
                accuracy = (out.argmax(dim=1) == ty).float().mean().item()
            run.log(step - 1, epoch=epoch, val_loss=test_loss, val_acc=accuracy)
            probe.record_val(test_loss)
            scheduler.step()
        path = run.path
    return str(path), {**probe.record(), "num_classes": 10}

"""Every statistic of the field table is a finite number wherever it applies, on every path that
produces rows: the host path, the accelerator path a GPU runs (forced on the CPU), activation
outputs measured per call in the forward hook (4,096-wide layers, too large to hold) and outputs
held until the step. (FSDP2: tests/capture/test_run_api_fsdp.py, with the same check.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.trainer.capture.activation_stats import DEFER_NUMEL
from gradwatch.trainer.run import Run

from .finite_stats import nan_statistics

pytestmark = pytest.mark.usefixtures("capture_path")
BATCH = 32


class WideNet(nn.Module):
    """Per-call outputs: the 4,096-wide ReLU and GELU (BATCH x 4096 > DEFER_NUMEL). Held outputs:
    the Sigmoid and Tanh."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu = nn.Linear(16, 4096), nn.ReLU()
        self.fc2, self.sigmoid = nn.Linear(4096, 64), nn.Sigmoid()
        self.fc3, self.gelu = nn.Linear(64, 4096), nn.GELU()
        self.fc4, self.tanh = nn.Linear(4096, 8), nn.Tanh()
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        y = self.tanh(self.fc4(self.gelu(self.fc3(self.sigmoid(self.fc2(self.relu(self.fc1(x))))))))
        return self.frozen(self.head(y))


def test_every_statistic_is_finite_on_every_path(tmp_path, capture_path):
    assert BATCH * 4096 > DEFER_NUMEL >= BATCH * 64  # both activation producers are exercised
    torch.manual_seed(0)
    model = WideNet()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with Run(tmp_path, name=capture_path) as run:
        run.watch(model, every=1)
        for step in range(3):
            opt.zero_grad()
            loss = model(torch.randn(BATCH, 16)).pow(2).mean()
            loss.backward()
            opt.step()
            run.log(step, train_loss=loss.item())
    assert nan_statistics(run.path) == []

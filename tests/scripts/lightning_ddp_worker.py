"""A Lightning fit with strategy="ddp" (or "ddp_spawn"), accelerator="cpu", devices=2 and
gradwatch's callback, for tests/integrations/test_lightning_ddp.py.

usage: python lightning_ddp_worker.py LOGDIR OUT_JSON STRATEGY
Lightning starts the second process itself (re-running this script for "ddp", spawning for
"ddp_spawn"). Every rank writes OUT_JSON.rank<N>: its global rank, whether its callback opened a
run, and (rank 0) the gradients Lightning's optimizer steps with at each global_step, after
DDP's all-reduce, as a reference callback sees them.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from gradwatch.integrations.lightning import GradwatchCallback  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Report(pl.Callback):
    """Each rank's view: the reference gradients and whether gradwatch recorded there."""

    def __init__(self, out_json: str, gradwatch: GradwatchCallback):
        self.out_json, self.gradwatch, self.grads, self.has_run = out_json, gradwatch, {}, None

    def on_train_start(self, trainer, pl_module):
        self.has_run = self.gradwatch.run is not None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads[trainer.global_step] = {n: p.grad.detach().double().norm().item()
                                           for n, p in pl_module.named_parameters()}

    def on_fit_end(self, trainer, pl_module):
        Path(f"{self.out_json}.rank{trainer.global_rank}").write_text(json.dumps({
            "rank": trainer.global_rank, "world_size": trainer.world_size,
            "has_run": self.has_run, "grads": self.grads,
        }))


def main() -> None:
    logdir, out_json, strategy = sys.argv[1:4]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    gradwatch = GradwatchCallback(logdir=logdir, name="ddp", every=1)
    trainer = pl.Trainer(
        strategy=strategy, accelerator="cpu", devices=2, max_epochs=2, callbacks=[gradwatch, Report(out_json, gradwatch)],
        logger=False, log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    pl.seed_everything(0)
    trainer.fit(Classifier(), DataLoader(data, batch_size=8))


if __name__ == "__main__":
    main()

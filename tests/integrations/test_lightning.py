"""GradwatchCallback with the real Lightning: gradients equal Lightning's own (seen by a reference
callback in on_before_optimizer_step) at the same global_step under accumulation, bf16 and
clipping; self.log values under gradwatch's names; a dead-ReLU run is diagnosed; statuses."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradwatch.integrations.lightning import GradwatchCallback
from gradwatch.trainer.diagnose import diagnose_run
from gradwatch.trainer.runlog import RunReader


def loaders(n=64, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch), DataLoader(data, batch_size=32)


class Classifier(pl.LightningModule):
    def __init__(self, bias: float = 0.0, fail_at: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
        nn.init.constant_(self.net[0].bias, bias)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"boom at step {self.global_step}")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class ReferenceGrads(pl.Callback):
    """Lightning's own gradients at each optimizer step, keyed by trainer.global_step."""

    def __init__(self):
        self.grads = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads[trainer.global_step] = {n: p.grad.detach().double().norm().item()
                                           for n, p in pl_module.named_parameters()}


def fit(tmp_path, model, epochs=2, **trainer_args):
    reference = ReferenceGrads()
    callback = GradwatchCallback(logdir=tmp_path, name="lightning", every=1)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[reference, callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1, accelerator="cpu", **trainer_args)
    train, val = loaders()
    trainer.fit(model, train, val)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    return folder, reference, trainer


@pytest.mark.parametrize("trainer_args", [
    {},
    {"accumulate_grad_batches": 2, "precision": "bf16-mixed", "gradient_clip_val": 0.05},
])
def test_gradients_equal_lightnings_at_the_same_global_step(tmp_path, trainer_args):
    torch.manual_seed(0)
    folder, reference, trainer = fit(tmp_path, Classifier(), **trainer_args)
    with RunReader(folder) as reader:
        grads, _ = reader.layer_stats(kinds=("grad",))
        acts, _ = reader.layer_stats(kinds=("activation",))
        meta, status = reader.meta, reader.status()
        train_loss = reader.scalar_series("train_loss")
        val_loss, epochs = reader.scalar_series("val_loss"), reader.scalar_series("epoch")
        assert "val_acc" in reader.scalar_names()
    steps_per_epoch = 8 // trainer_args.get("accumulate_grad_batches", 1)
    assert trainer.global_step == 2 * steps_per_epoch
    assert sorted(reference.grads) == list(range(trainer.global_step))
    assert sorted(grads["step"].unique()) == sorted(reference.grads)  # first optimizer step is 0
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(reference.grads[row["step"]][row["name"]], rel=1e-5), row
    assert set(acts["layer"]) == {"net.1"} and sorted(acts["step"].unique()) == sorted(reference.grads)
    assert status == "finished"
    assert meta["integration"] == "lightning"
    assert meta["grad_clip"] == trainer_args.get("gradient_clip_val")
    assert meta["config"]["bias"] == 0.0  # the module's hyperparameters are the config
    # self.log values at Lightning's own steps: train_loss every optimizer step (log_every_n_steps=1)
    # logged per micro-batch loss of the step; val at each epoch's last step, with the epoch.
    assert train_loss["step"].tolist() == list(range(trainer.global_step))
    last_steps = [steps_per_epoch - 1, 2 * steps_per_epoch - 1]
    assert val_loss["step"].tolist() == last_steps
    assert epochs["step"].tolist() == last_steps and epochs["value"].tolist() == [1.0, 2.0]


def test_a_dead_relu_lightning_run_is_flagged_dead_units(tmp_path):
    torch.manual_seed(0)
    folder, _, _ = fit(tmp_path, Classifier(bias=-20.0), epochs=2)
    flags = {flag["rule"] for flag in diagnose_run(folder)["flags"]}
    assert "dead_units" in flags


def test_a_failing_fit_is_marked_failed_with_the_exception(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="boom at step 3"):
        fit(tmp_path, Classifier(fail_at=3))
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    with RunReader(folder) as reader:
        assert reader.status() == "failed"
        assert "RuntimeError: boom at step 3" in reader.meta["error"]
        assert sorted(reader.logged_steps()) == [0, 1, 2]


class Interrupted(Classifier):
    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            raise KeyboardInterrupt
        return super().training_step(batch, batch_idx)


def test_an_interrupted_fit_is_marked_stopped(tmp_path):
    torch.manual_seed(0)
    try:
        fit(tmp_path, Interrupted())
    except (KeyboardInterrupt, SystemExit):
        pass  # Lightning handles Ctrl-C itself (and may exit)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    with RunReader(folder) as reader:
        assert reader.status() == "stopped"
        assert sorted(reader.logged_steps()) == [0, 1]

"""Lightning's own examples (github.com/Lightning-AI/pytorch-lightning, examples/pytorch/basics/
backbone_image_classifier.py and autoencoder.py, Apache-2.0, Copyright The Lightning AI team),
trained by the installed `lightning.Trainer`.

Written here after the published examples, not copied:
- `LitClassifier` around a `Backbone` of two Linear layers (784 -> 128 -> 10) with `torch.relu`
  after both - the example's logits go through a ReLU too -, cross-entropy, Adam at
  `learning_rate`, logging `train_loss` (on_epoch) and `valid_loss` (on_step), the example's names;
- `LitAutoEncoder`: encoder Linear(784, 64) -> nn.ReLU -> Linear(64, 3), decoder Linear(3, 64) ->
  nn.ReLU -> Linear(64, 784), MSE reconstruction loss, Adam at lr 1e-2, logging `train_loss` and
  `val_loss` on_step.
Data: MNIST-shaped synthetic digits (data.prototype_images) in place of the MNIST download, batches of
32, Lightning's defaults otherwise (sanity validation steps included). A case may change what a
user would: the learning rate, the activation and depth, the bias initialisation, the data size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe

DEFAULTS = dict(module="classifier", learning_rate=1e-3, hidden_dim=128, epochs=4, train_size=640, batch_size=32,
                label_noise=0.0, image_noise=0.3, activation="relu", depth=1, encoder_bias=None, val_every=1, every=10, seed=1234)


def _classifier(opt):
    import lightning.pytorch as pl

    class Backbone(nn.Module):
        def __init__(self, hidden_dim=128):
            super().__init__()
            self.l1 = nn.Linear(28 * 28, hidden_dim)
            self.l2 = nn.Linear(hidden_dim, 10)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            return torch.relu(self.l2(torch.relu(self.l1(x))))

    class LitClassifier(pl.LightningModule):
        def __init__(self, backbone=None, learning_rate=1e-4):
            super().__init__()
            self.save_hyperparameters(ignore=["backbone"])
            self.backbone = backbone if backbone is not None else Backbone()

        def forward(self, x):
            return self.backbone(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("valid_loss", loss, on_step=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)

    model = LitClassifier(Backbone(opt["hidden_dim"]), learning_rate=opt["learning_rate"])
    return model, {"backbone.l1": "relu"}, {}


def _autoencoder(opt):
    import lightning.pytorch as pl

    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[opt["activation"]]

    def stack(sizes):  # Linear -> activation between consecutive sizes, no activation at the end
        layers = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        return nn.Sequential(*layers)

    hidden = opt["hidden_dim"]

    class LitAutoEncoder(pl.LightningModule):
        def __init__(self, hidden_dim=64, learning_rate=10e-3):
            super().__init__()
            self.save_hyperparameters()
            self.encoder = stack([28 * 28] + [hidden_dim] * opt["depth"] + [3])
            self.decoder = stack([3] + [hidden_dim] * opt["depth"] + [28 * 28])

        def forward(self, x):
            return self.decoder(self.encoder(x))

        def _common_step(self, batch, stage):
            x, _ = batch
            x = x.view(x.size(0), -1)
            loss = F.mse_loss(x, self(x))
            self.log(f"{stage}_loss", loss, on_step=True)
            return loss

        def training_step(self, batch, batch_idx):
            return self._common_step(batch, "train")

        def validation_step(self, batch, batch_idx):
            return self._common_step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)

    model = LitAutoEncoder(hidden, opt["learning_rate"])
    if opt["encoder_bias"] is not None:  # the injected fault: the encoder's hidden biases far below zero
        for layer in [m for m in model.encoder if isinstance(m, nn.Linear)][:-1]:
            nn.init.constant_(layer.bias, opt["encoder_bias"])
    sites = {f"encoder.{i}": "output" for i, m in enumerate(model.encoder) if isinstance(m, nn.ReLU)}
    sites.update({f"decoder.{i}": "output" for i, m in enumerate(model.decoder) if isinstance(m, nn.ReLU)})
    layer_of_site = {site: f"{site.split('.')[0]}.{int(site.split('.')[1]) - 1}" for site in sites}
    return model, sites, layer_of_site


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from gradwatch.integrations.lightning import GradwatchCallback

    opt = {**DEFAULTS, **options}
    pl.seed_everything(opt["seed"], verbose=False)
    build = _classifier if opt["module"] == "classifier" else _autoencoder
    model, sites, layer_of_site = build(opt)
    x, y = data.prototype_images(3, opt["train_size"], noise=opt["image_noise"], label_noise=opt["label_noise"])
    vx, vy = data.prototype_images(3, 256, noise=opt["image_noise"], sample=1)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=opt["batch_size"], shuffle=True)
    val_loader = DataLoader(TensorDataset(vx, vy), batch_size=opt["batch_size"])
    probe = TruthProbe(model, relu_sites=sites, layer_of_site=layer_of_site)

    class Truth(pl.Callback):  # plain torch: the step's loss and each validation's mean loss
        def __init__(self):
            self.val = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            probe.losses[probe.step - 1].append(float(outputs["loss"]))

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                self.val.append(float(outputs))

        def on_validation_epoch_end(self, trainer, module):
            if not trainer.sanity_checking and self.val:
                probe.record_val(sum(self.val) / len(self.val))
            self.val = []

    logdir = Path(logdir) / name
    # ---- gradwatch glue: one callback ----
    callback = GradwatchCallback(logdir=logdir, name=name, every=opt["every"], config=dict(model.hparams))
    trainer = pl.Trainer(max_epochs=opt["epochs"], callbacks=[callback, Truth()], accelerator="cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, check_val_every_n_epoch=opt["val_every"])
    with probe:
        trainer.fit(model, train_loader, val_loader)
    (folder,) = [p for p in logdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    num_classes = 10 if opt["module"] == "classifier" else None
    return str(folder), {**probe.record(), "num_classes": num_classes}

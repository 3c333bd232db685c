"""A timm-style small ResNet (the BasicBlock design of He et al. 2016, "Deep Residual Learning", as
timm's timm/models/resnet.py (Apache-2.0) and torchvision's resnet.py (BSD-3-Clause) define it),
trained the way timm's and torchvision's reference recipes train image classifiers: SGD with
Nesterov momentum 0.9, weight decay, cosine learning-rate decay, cross-entropy.

Written here after the published design, not copied: a 3x3 stem convolution with BatchNorm and ReLU
(the CIFAR variant of the stem), stages of BasicBlocks (conv3x3-BN-ReLU-conv3x3-BN, plus the input,
then ReLU; a 1x1 conv + BN shortcut where the shape changes), the last BN of each block initialised
to zero (timm's `zero_init_last`), global average pooling and a Linear classifier; Kaiming-normal
initialisation of the convolutions (fan_out, ReLU), BN weights 1 and biases 0.

Trimmed for the CPU: two stages of one block each (16 and 32 channels), 16x16 colour images of 10
classes (data.prototype_images, CIFAR-shaped otherwise), a few epochs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def zero_init_last(self):
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(16, 32), in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        stages, inplanes = [], widths[0]
        for i, planes in enumerate(widths):
            stages.append(BasicBlock(inplanes, planes, stride=1 if i == 0 else 2))
            inplanes = planes
        self.layer1, self.layer2 = stages
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                m.zero_init_last()

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


DEFAULTS = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=4, train_size=512, batch_size=32, image_noise=0.5,
                label_noise=0.0, every=10, seed=0)


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    from gradwatch import Run

    opt = {**DEFAULTS, **options}
    torch.manual_seed(opt["seed"])
    x, y = data.prototype_images(5, opt["train_size"], channels=3, size=16, noise=opt["image_noise"],
                                 label_noise=opt["label_noise"])
    vx, vy = data.prototype_images(5, 256, channels=3, size=16, noise=opt["image_noise"], sample=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=opt["batch_size"],
                                         shuffle=True)
    model = ResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt["momentum"], nesterov=True,
                                weight_decay=opt["weight_decay"])
    total_steps = opt["epochs"] * len(loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    sites = {"act1": "output", "layer1.act1": "output", "layer1.act2": "output", "layer2.act1": "output",
             "layer2.act2": "output"}
    probe = TruthProbe(model, relu_sites=sites,
                       layer_of_site={"act1": "conv1", "layer1.act1": "layer1.conv1", "layer1.act2": "layer1.conv2",
                                      "layer2.act1": "layer2.conv1", "layer2.act2": "layer2.conv2"})
    step = 0
    # ---- gradwatch glue ----
    with Run(logdir, name=name, config={k: v for k, v in opt.items() if k != "every"}) as run, probe:
        run.watch(model, every=opt["every"])
        for epoch in range(1, opt["epochs"] + 1):
            model.train()
            for images, labels in loader:
                loss = F.cross_entropy(model(images), labels)
                probe.record_loss(loss)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                run.log(step, train_loss=loss.item())
                step += 1
            model.eval()
            with torch.no_grad():
                out = model(vx)
                val_loss = F.cross_entropy(out, vy).item()
            run.log(step - 1, epoch=epoch, val_loss=val_loss, val_acc=(out.argmax(1) == vy).float().mean().item())
            probe.record_val(val_loss)
            if not math.isfinite(loss.item()):
                break
        path = run.path
    return str(path), {**probe.record(), "num_classes": 10}

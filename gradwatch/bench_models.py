"""The capture benchmark's models, shared by bench/overhead.py, bench/gpu_check.py and the
dispatch-count test: (a) text, (b) deep, a GPT-2-style transformer and a small ResNet-style CNN.

Each entry of MODELS builds a model and a fixed batch (inputs, class targets) from a generator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TextModel(nn.Module):
    """Model (a): Embedding(20000, 64) + mean pooling + 5 Linear(256) sigmoid layers + 3 classes."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20000, 64)
        layers, width = [], 64
        for _ in range(5):
            layers += [nn.Linear(width, 256), nn.Sigmoid()]
            width = 256
        self.mlp = nn.Sequential(*layers, nn.Linear(256, 3))

    def forward(self, tokens):
        return self.mlp(self.embedding(tokens).mean(dim=1))


def deep_model() -> nn.Module:
    """Model (b): 20 Linear(512) ReLU layers."""
    layers = []
    for _ in range(20):
        layers += [nn.Linear(512, 512), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(512, 10))


class Block(nn.Module):
    """A pre-norm GPT-2 block: causal self-attention and a 4x GELU MLP, 12 parameter tensors."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.attn_qkv = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp_fc = nn.Linear(width, 4 * width)
        self.gelu = nn.GELU(approximate="tanh")
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn_qkv(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(self.gelu(self.mlp_fc(self.ln_2(x))))


class GPT2Style(nn.Module):
    """GPT-2 small's shape: 12 blocks, width 768, 148 parameter tensors (the output layer is tied to
    the token embedding). Smaller widths keep the same tensor count for quick checks."""

    def __init__(self, vocab: int = 50257, width: int = 768, blocks: int = 12, heads: int = 12, context: int = 128):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.skip(x))


def resnet_model(widths=(16, 32, 64)) -> nn.Module:
    """A small ResNet-style CNN for 32x32 images: stem, three stages of two basic blocks, 10 classes."""
    layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for i, w in enumerate(widths):
        layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def _tokens(vocab: int, batch: int, context: int = 128):
    def make(g):
        tokens = torch.randint(0, vocab, (batch, context + 1), generator=g)
        return tokens[:, :-1], tokens[:, 1:]

    return make


MODELS = {
    "text": (TextModel, lambda g: (torch.randint(0, 20000, (64, 32), generator=g), torch.randint(0, 3, (64,), generator=g))),
    "deep": (deep_model, lambda g: (torch.randn(128, 512, generator=g), torch.randint(0, 10, (128,), generator=g))),
    "gpt2": (GPT2Style, _tokens(50257, 2)),
    "resnet": (resnet_model, lambda g: (torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))),
    # Same tensor count as "gpt2" at a fraction of the arithmetic: for dispatch counts.
    "gpt2-narrow": (lambda: GPT2Style(vocab=1000, width=64, heads=4), _tokens(1000, 2)),
}


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    """Cross-entropy of the model on its batch (token models: over every position)."""
    x, y = batch
    out = model(x)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def trainer_step(key: str, logdir=None, every=10, accelerator_path: bool = False):
    """(step(i) training the model once, the Run or None, parameter tensor count) for model `key`,
    watched with `every` when logdir is given. accelerator_path counts NaN/Inf on the device even
    on the CPU, as a GPU does."""
    from gradwatch.trainer.run import Run

    builder, batch = MODELS[key]
    torch.manual_seed(0)
    model = builder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = batch(torch.Generator().manual_seed(1))
    run = None
    if logdir is not None:
        run = Run(logdir, name=key)
        probe = run.watch(model, every=every)
        if accelerator_path:
            probe._measurer.host_checks = False
            probe._grad_norms.measure_at_step()  # a GPU's every-step norms: fused, at the step

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, data)
        loss.backward()
        opt.step()
        if run is not None:
            run.log(i, train_loss=loss.item())
        else:
            loss.item()

    return step, run, sum(1 for _ in model.parameters())


def capture_extra_ops(key: str, logdir, every: int = 10, accelerator_path: bool = False) -> dict:
    """Ops capture adds, counted as trainer/capture/dispatch_count.py defines, over one whole
    period after a warm-up one: {"logged": extra ops of the logged step (the period's extra less
    the unlogged steps'), "unlogged": per unlogged step, "tensors": n, "per_step": [extra per step],
    "by_op": {op name: extra count over the period}}."""
    import statistics
    from collections import Counter

    from gradwatch.trainer.capture.dispatch_count import count_ops

    base, _, n_tensors = trainer_step(key)
    watched, run, _ = trainer_step(key, logdir, every, accelerator_path)
    for i in range(every):  # first period: layouts, caches, first-call costs
        base(i)
        watched(i)
    extra, by_op = [], Counter()
    for i in range(every):
        base_ops, _ = count_ops(base, every + i)
        watched_ops, _ = count_ops(watched, every + i)
        extra.append(sum(watched_ops.values()) - sum(base_ops.values()))
        by_op.update(watched_ops)
        by_op.subtract(base_ops)
    run.finish()
    unlogged = statistics.median(extra[2:])  # step 0 logs; its record is finished in step 1
    return {"logged": sum(extra) - (every - 1) * unlogged, "unlogged": unlogged, "tensors": n_tensors,
            "per_step": extra, "by_op": {op: n for op, n in by_op.items() if n}}

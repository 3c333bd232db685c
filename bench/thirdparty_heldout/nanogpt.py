"""nanoGPT (github.com/karpathy/nanoGPT, MIT licence, Copyright (c) 2022 Andrej Karpathy): the GPT of
model.py and the training loop of train.py with config/train_shakespeare_char.py's recipe, made tiny.

Written here after the published design (read at commit 3adf61e), not copied: pre-LayerNorm blocks
of causal self-attention (`scaled_dot_product_attention`, is_causal) and a GELU MLP, LayerNorm with
an optional bias, token and position embeddings, the token embedding tied to the output head,
N(0, 0.02) initialisation with the residual projections (`c_proj`) at 0.02 / sqrt(2 n_layer);
AdamW with weight decay on the 2-D tensors only, betas (0.9, 0.99), a linear warmup then cosine
decay to min_lr, gradient clipping at grad_clip (0 disables it), evaluation every eval_interval
iterations on eval_iters batches of each split. Data: shakespeare_char's shape (a character
vocabulary, 90/10 split) from locally generated verse (data.char_text).

Trimmed for the CPU: 2 layers, 2 heads, 48 wide, a context of 32 characters, batches of 16, a few
hundred iterations; no DDP, no torch.compile, float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe


@dataclass
class GPTConfig:
    block_size: int = 32
    vocab_size: int = 32
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 48
    dropout: float = 0.0
    bias: bool = False


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (nanoGPT's `bias` option)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x):
        batch, time, width = x.shape
        heads = [t.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2)
                 for t in self.c_attn(x).split(self.n_embd, dim=2)]
        q, k, v = heads
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(batch, time, width)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


# shakespeare_char's recipe, scaled down; a case overrides some of these.
DEFAULTS = dict(
    n_chars=20_000, batch_size=16, block_size=32, n_layer=2, n_head=2, n_embd=48, dropout=0.0, bias=False,
    learning_rate=1e-3, max_iters=150, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, decay_lr=True,
    warmup_iters=10, lr_decay_iters=150, min_lr=1e-4, eval_interval=25, eval_iters=4, every=10, seed=1337,
)


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    """One nanoGPT run watched by gradwatch; returns (run folder, the probe's record)."""
    from gradwatch import Run

    cfg = {**DEFAULTS, **options}
    torch.manual_seed(cfg["seed"])
    ids, vocab = data.encode_chars(data.char_text(cfg["seed"], cfg["n_chars"]))
    split = int(0.9 * len(ids))
    splits = {"train": torch.from_numpy(ids[:split]), "val": torch.from_numpy(ids[split:])}
    rng = np.random.default_rng(cfg["seed"])

    def get_batch(which):
        source = splits[which]
        starts = rng.integers(0, len(source) - cfg["block_size"] - 1, size=cfg["batch_size"])
        x = torch.stack([source[i:i + cfg["block_size"]] for i in starts])
        y = torch.stack([source[i + 1:i + 1 + cfg["block_size"]] for i in starts])
        return x, y

    model = GPT(GPTConfig(block_size=cfg["block_size"], vocab_size=vocab, n_layer=cfg["n_layer"],
                          n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"]))
    optimizer = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]))

    def get_lr(it):
        if it < cfg["warmup_iters"]:
            return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
        if it > cfg["lr_decay_iters"]:
            return cfg["min_lr"]
        ratio = (it - cfg["warmup_iters"]) / (cfg["lr_decay_iters"] - cfg["warmup_iters"])
        return cfg["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {split: float(np.mean([model(*get_batch(split))[1].item() for _ in range(cfg["eval_iters"])]))
               for split in ("train", "val")}
        model.train()
        return out

    probe = TruthProbe(model)
    config = {k: v for k, v in cfg.items() if k not in ("every",)}
    # ---- gradwatch glue: a Run around the loop, watch the model, log the losses ----
    with Run(logdir, name=name, config=config) as run, probe:
        run.watch(model, every=cfg["every"])
        for iter_num in range(cfg["max_iters"]):
            lr = get_lr(iter_num) if cfg["decay_lr"] else cfg["learning_rate"]
            for group in optimizer.param_groups:
                group["lr"] = lr
            if iter_num % cfg["eval_interval"] == 0 and iter_num > 0:
                losses = estimate_loss()
                run.log(iter_num - 1, val_loss=losses["val"])
                probe.record_val(losses["val"])
            _, loss = model(*get_batch("train"))
            probe.record_loss(loss)
            loss.backward()
            if cfg["grad_clip"] != 0.0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.log(iter_num, train_loss=loss.item(), lr=lr)
            if not math.isfinite(loss.item()):
                break
        path = run.path
    return str(path), {**probe.record(), "num_classes": vocab}

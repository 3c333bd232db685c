"""Two large-model instabilities reproduced in a small GPT on the CPU, and the flags raised before the
loss blows up (lead time in steps).

A nanoGPT-style model (2 blocks, d=64, 4 heads, pre-LN, F.scaled_dot_product_attention, random init)
on Markov-chain tokens, AdamW (betas 0.9/0.95, no weight decay) warmed up linearly over 100 steps to
a peak lr far too high (0.3):
1. attention logit growth (Wortsman et al. 2023): without QK layer norm the max attention logit grows
   from ~2 to hundreds; the loss blows up tens of steps later. With QK layer norm the logits stay
   bounded (the loss still blows up at this lr, for the next reason);
2. Adam's second moment lagging (Wortsman et al. 2023b): with QK layer norm, a gradient the second
   moment has not seen pushes the RMS of g/sqrt(v) far above 1 a few steps before the loss blows up.
Truth is plain torch: the loss blow-up step is the first step whose loss is >= 2x the lowest loss so
far. gradwatch records the signals with AttentionLogitRecorder and AdamLagRecorder.

    python bench/large_model_instabilities.py
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gpt(vocab: int, qk_norm: bool, d: int = 64, heads: int = 4, layers: int = 2, block: int = 32):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.q_norm = nn.LayerNorm(d // heads) if qk_norm else None
            self.k_norm = nn.LayerNorm(d // heads) if qk_norm else None

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, 2))
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(b, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), CausalSelfAttention(), nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    return GPT()


def train(logdir, *, qk_norm: bool, lr: float = 0.3, steps: int = 110, warmup: int = 100, every: int = 2,
          vocab: int = 256, seed: int = 0):
    """Train and record; returns (run folder, per-step losses)."""
    import torch
    from torch.nn import functional as F

    from bench.diagnosis_userloops import markov_tokens
    from gradwatch import Run
    from gradwatch.trainer.capture.adam_lag import AdamLagRecorder
    from gradwatch.trainer.capture.attention_logits import AttentionLogitRecorder

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    tokens = torch.as_tensor(markov_tokens(seed, 200_000, vocab=vocab), dtype=torch.long)
    model = gpt(vocab, qk_norm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    losses = []
    with Run(logdir, name=f"gpt-qk{int(qk_norm)}", config={"vocab_size": vocab, "lr": lr}) as run:
        run.watch(model, every=every)
        attention = AttentionLogitRecorder(model, run, every=every)
        lag = AdamLagRecorder(optimizer, run)
        for step in range(steps):
            starts = torch.randint(0, len(tokens) - 33, (16,))  # the global generator, seeded above
            x = torch.stack([tokens[i:i + 32] for i in starts])
            y = torch.stack([tokens[i + 1:i + 33] for i in starts])
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            run.log(step, train_loss=losses[-1])
        attention.close()
        lag.close()
        path = run.path
    return path, losses


def blow_up_step(losses) -> int | None:
    """Plain reading: the first step whose loss is >= 2x the lowest loss before it."""
    lowest = math.inf
    for i, value in enumerate(losses):
        if i > 5 and value >= 2 * lowest:
            return i
        lowest = min(lowest, value)
    return None


def lead_times(logdir) -> dict:
    from gradwatch.trainer.diagnose import RunData, diagnose, expand_absorbed
    from gradwatch.trainer.runlog import RunReader

    out = {}
    for qk_norm in (False, True):
        path, losses = train(Path(logdir) / f"qk{int(qk_norm)}", qk_norm=qk_norm)
        with RunReader(path) as reader:
            flags = expand_absorbed(diagnose(RunData.from_reader(reader)))
        blow = blow_up_step(losses)
        signals = {f.rule: f.first_step for f in flags if f.rule in ("attention_logit_growth", "adam_second_moment_lag")
                   and f.severity in ("warning", "critical")}
        out[f"qk_norm={qk_norm}"] = {"loss_blow_up_step": blow, "flags": signals,
                                     "lead_steps": {r: (blow - s if blow is not None else None) for r, s in signals.items()}}
    return out


if __name__ == "__main__":
    print(json.dumps(lead_times(tempfile.mkdtemp(prefix="gw-large-"))))

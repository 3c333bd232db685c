"""A real torch model with many parameter tensors in 12 repeated blocks, trained a few steps with the
Run API: what the Run page's all-layers views are tested on (tiny widths, CPU, a few seconds).

One block's MLP is dead on purpose (its first layer's bias pushes every ReLU input below zero), so
the real diagnosis flags a layer deep inside the model.
"""

from __future__ import annotations

from pathlib import Path

BLOCKS = 12
WIDTH = 16
DEAD_BLOCK = 5


def record_block_model_run(logdir: Path, name: str = "blocks12", steps: int = 14) -> str:
    """Train the model for `steps` optimizer steps into `logdir`; returns the run id."""
    import torch
    from torch import nn

    from gradwatch import Run

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))

        def forward(self, x):
            scores = self.q(x) @ self.k(x).transpose(1, 2) / WIDTH**0.5
            return self.o(torch.softmax(scores, dim=-1) @ self.v(x))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(WIDTH, 2 * WIDTH), nn.ReLU(), nn.Linear(2 * WIDTH, WIDTH)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn, self.ln2, self.mlp = nn.LayerNorm(WIDTH), Attention(), nn.LayerNorm(WIDTH), Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class BlockModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))
            self.ln_f, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 50)

        def forward(self, tokens):
            x = self.embed(tokens)
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    torch.manual_seed(0)
    model = BlockModel()
    with torch.no_grad():
        model.blocks[DEAD_BLOCK].mlp.fc1.bias.fill_(-50.0)  # every ReLU input < 0: a dead layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 50, (8, 12), generator=torch.Generator().manual_seed(1))
    with Run(logdir=str(logdir), name=name, config={"model": "block-model", "blocks": BLOCKS}) as run:
        run.watch(model, every=1)
        for step in range(steps):
            logits = model(tokens[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(step, train_loss=loss.item())
        return run.id

"""Diagnosis cases beyond the lesson: real architectures trained by a user's own loop through `Run`.

The lesson's cases (bench/diagnosis_cases.py) go through gradwatch's training loop, which logs every
scalar the rules know. Users' code does not: a word-level LSTM language model trained like
pytorch/examples' word_language_model (plain SGD at lr 20, with or without clipping), a small
GPT-2 (transformers' GPT2LMHeadModel built from a config, random init) trained with AdamW, a
residual MLP, a fine-tune with frozen early layers, gradient accumulation, a learning-rate schedule
that decays to ~0 - each logging only `train_loss` per step (and `val_loss` per epoch where the
user would), watched at every=1, 10 or 100.

Data is synthetic so the cases need no download and run in seconds: token streams from a sparse
random Markov chain (each token has a few likely successors: a model can learn it well below the
uniform-guess loss ln V) and two-class points for the MLPs.

Each case names what must fire (`expected`), what may (`allowed`), remedies that would do harm on
it (`harmful`) and, where it matters, checks on the flags (`checks`: no vanishing verdict on an
embedding, exploding flagged near a step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

VOCAB = 1000
SEQ_LEN = 16
# Remedies that do not fit a gated recurrent net or a transformer (their gradients do not vanish
# for want of ReLU; batch norm does not fit sequence models).
NOT_FOR_SEQUENCE_MODELS = ("relu", "batchnorm", "lstm")


@dataclass(frozen=True)
class LoopCase:
    """One labelled run of a user's own training loop."""

    id: str
    arch: str
    group: str  # pathology or healthy
    build: Callable  # (seed) -> (model, optimizer factory, config dict)
    steps: int
    every: int
    expected: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    harmful: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()  # as the lesson cases: rules a fix must not carry (none here)
    clip: float | None = None
    accumulate: int = 1
    schedule: str | None = None  # "linear-to-zero"
    data: str = "tokens"  # tokens | points
    eval_every: int = 0  # optimizer steps between val_loss evaluations (0: none)
    flag_near_step: dict = field(default_factory=dict)  # rule -> (step, tolerance in steps)
    no_layers: dict = field(default_factory=dict)  # rule -> layers it must not name
    note: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expected


# ---- data ---------------------------------------------------------------------------------------
def markov_tokens(seed: int, n_tokens: int, vocab: int = VOCAB, successors: int = 4, sample: int = 0) -> np.ndarray:
    """A token stream from a random sparse Markov chain with Zipf-distributed words, like text: each
    token is followed by one of `successors` tokens (probabilities 0.55, 0.25, 0.12, 0.08) drawn with
    probability ~ 1/rank, so a few words are frequent. The best loss is about 1.2 nats against
    ln(vocab) for a uniform guess. `seed` picks the chain (the task), `sample` another stream from
    the same chain (held-out data; 0 is the training stream)."""
    rng = np.random.default_rng(1000 + seed)
    zipf = 1.0 / np.arange(1, vocab + 1)
    nexts = rng.choice(vocab, size=(vocab, successors), p=zipf / zipf.sum())
    weights = np.array([0.55, 0.25, 0.12, 0.08][:successors])
    weights = weights / weights.sum()
    out = np.empty(n_tokens, dtype=np.int64)
    out[0] = 0
    stream = rng if sample == 0 else np.random.default_rng([1000 + seed, sample])
    choice = stream.choice(successors, size=n_tokens, p=weights)
    for i in range(1, n_tokens):
        out[i] = nexts[out[i - 1], choice[i]]
    return out


def token_batches(seed: int, batch_size: int, n_batches: int, sample: int = 0):
    """(inputs, targets) pairs of shape (batch, SEQ_LEN): next-token prediction."""
    import torch

    stream = markov_tokens(seed, batch_size * n_batches * (SEQ_LEN + 1) + 1, sample=sample)
    chunks = stream[: batch_size * n_batches * (SEQ_LEN + 1)].reshape(n_batches, batch_size, SEQ_LEN + 1)
    tensor = torch.from_numpy(chunks)
    return [(tensor[i, :, :-1], tensor[i, :, 1:]) for i in range(n_batches)]


def point_batches(seed: int, batch_size: int, n_batches: int, dim: int = 16, sample: int = 0):
    """Two classes of Gaussian points split by a random hyperplane with a curved margin: `seed`
    picks the hyperplane (the task), `sample` the points (held-out data: another sample)."""
    import torch

    w = np.random.default_rng(2000 + seed).normal(size=dim)
    rng = np.random.default_rng([2000 + seed, sample])
    x = rng.normal(size=(batch_size * n_batches, dim)).astype(np.float32)
    y = ((x @ w + 0.5 * np.sin(3 * x[:, 0])) > 0).astype(np.int64)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    return [(xs[i * batch_size:(i + 1) * batch_size], ys[i * batch_size:(i + 1) * batch_size])
            for i in range(n_batches)]


# ---- models -------------------------------------------------------------------------------------
def lstm_lm(vocab: int = VOCAB, emb: int = 64, hidden: int = 128, layers: int = 2):
    """word_language_model's RNNModel (LSTM): encoder (embedding), rnn, decoder."""
    from torch import nn

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(vocab, emb)
            self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True)
            self.decoder = nn.Linear(hidden, vocab)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, ids):
            out, _ = self.rnn(self.encoder(ids))
            return self.decoder(out)

    return RNNModel()


def gpt2_lm(vocab: int = VOCAB, n_embd: int = 32, n_layer: int = 2, n_head: int = 2):
    """transformers' GPT2LMHeadModel from a small config (random init, no download); returns logits."""
    from torch import nn
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=SEQ_LEN, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)

    class GPT2Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt = GPT2LMHeadModel(config)

        def forward(self, ids):
            return self.gpt(input_ids=ids).logits

    return GPT2Logits()


def residual_mlp(dim: int = 16, width: int = 64, blocks: int = 6):
    """Pre-norm residual MLP blocks (LayerNorm -> Linear -> GELU -> Linear, added to the input)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(width)
            self.fc1 = nn.Linear(width, width)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(width, width)

        def forward(self, x):
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(dim, width)
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.head = nn.Linear(width, 2)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    return ResNet()


def relu_mlp(dim: int = 16, width: int = 64, depth: int = 4, frozen: int = 0):
    """A ReLU MLP; the first `frozen` Linear layers do not train (a fine-tune of a pretrained trunk)."""
    from torch import nn

    layers, width_in = [], dim
    for _ in range(depth):
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        width_in = width
    model = nn.Sequential(*layers, nn.Linear(width, 2))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for layer in linears[:frozen]:
        for p in layer.parameters():
            p.requires_grad_(False)
    return model


def _sgd(lr: float, momentum: float = 0.0):
    import torch

    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


def _adamw(lr: float):
    import torch

    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def _lstm(lr: float):
    return lambda seed: (lstm_lm(), _sgd(lr), {"optimizer": "sgd", "lr": lr})


def _gpt2(lr: float):
    return lambda seed: (gpt2_lm(), _adamw(lr), {"optimizer": "adamw", "lr": lr})


def _resnet(seed):
    return residual_mlp(), _adamw(1e-3), {"optimizer": "adamw", "lr": 1e-3}


def _frozen(seed):
    return relu_mlp(frozen=2), _sgd(0.05, 0.9), {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}


def _accumulated(seed):
    return relu_mlp(), _sgd(0.05, 0.9), {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "accumulate": 4}


def _scheduled(seed):
    return relu_mlp(), _sgd(0.1, 0.9), {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "linear"}


LM_HARMFUL = NOT_FOR_SEQUENCE_MODELS + ("higher-lr",)

CASES: tuple[LoopCase, ...] = (
    # word_language_model's own recipe: SGD lr 20 with clipping at 0.25.
    LoopCase("user-lstm-lm-clip", "lstm-lm", "healthy", _lstm(20.0), steps=120, every=10, clip=0.25,
             eval_every=40, harmful=LM_HARMFUL + ("clipping",), no_layers={"vanishing_gradient": ("encoder",)}),
    # The same without clipping: the loss and gradients blow up within the first steps.
    LoopCase("user-lstm-lm-noclip", "lstm-lm", "pathology", _lstm(20.0), steps=60, every=1,
             expected=("exploding_gradient",), allowed=("loss_divergence", "learning_rate", "nonfinite"),
             harmful=LM_HARMFUL, eval_every=20, flag_near_step={"exploding_gradient": (6, 6)},
             no_layers={"vanishing_gradient": ("encoder",)}),
    LoopCase("user-lstm-lm-noclip-e10", "lstm-lm", "pathology", _lstm(20.0), steps=60, every=10,
             expected=("loss_divergence",), allowed=("exploding_gradient", "learning_rate", "nonfinite"),
             harmful=LM_HARMFUL, eval_every=20),
    # ... and at every=100: the one logged layer step is step 0; the loss and the every-step
    # gradient sentinel carry the blow-up.
    LoopCase("user-lstm-lm-noclip-e100", "lstm-lm", "pathology", _lstm(20.0), steps=60, every=100,
             expected=("loss_divergence",), allowed=("exploding_gradient", "learning_rate", "nonfinite"),
             harmful=LM_HARMFUL, eval_every=20),
    LoopCase("user-gpt2", "gpt2", "healthy", _gpt2(3e-3), steps=120, every=10, eval_every=40, harmful=LM_HARMFUL),
    LoopCase("user-gpt2-e100", "gpt2", "healthy", _gpt2(3e-3), steps=300, every=100, harmful=LM_HARMFUL),
    # AdamW at lr 0.05 without clipping: updates far too large, the loss stalls high.
    LoopCase("user-gpt2-lr-high", "gpt2", "pathology", _gpt2(0.05), steps=80, every=1,
             expected=("learning_rate",), allowed=("loss_divergence", "exploding_gradient", "underfitting"),
             harmful=LM_HARMFUL),
    LoopCase("user-gpt2-lr1-e10", "gpt2", "pathology", _gpt2(1.0), steps=100, every=10,
             expected=("loss_divergence",), allowed=("exploding_gradient", "learning_rate", "nonfinite",
                                                     "underfitting"),
             harmful=LM_HARMFUL),
    LoopCase("user-resnet", "resnet", "healthy", _resnet, steps=150, every=10, data="points", eval_every=50,
             harmful=("higher-lr",)),
    LoopCase("user-frozen-finetune", "mlp", "healthy", _frozen, steps=150, every=10, data="points", eval_every=50),
    LoopCase("user-grad-accumulation", "mlp", "healthy", _accumulated, steps=100, every=10, data="points",
             accumulate=4),
    LoopCase("user-lr-decay-to-zero", "mlp", "healthy", _scheduled, steps=300, every=10, data="points",
             schedule="linear-to-zero", eval_every=100),
)
CASE_IDS = tuple(case.id for case in CASES)


def get_case(case_id: str) -> LoopCase:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(f"unknown user-loop case {case_id!r}; known: {', '.join(CASE_IDS)}")


# ---- the user's loop ----------------------------------------------------------------------------
def train_loop_case(case: LoopCase, logdir, seed: int = 0):
    """Train `case` with a plain PyTorch loop watched by gradwatch; returns the run folder path."""
    import torch
    from torch import nn

    from gradwatch import Run

    torch.manual_seed(seed)
    model, make_optimizer, config = case.build(seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    scheduler = None
    if case.schedule == "linear-to-zero":
        # Linear decay over 60% of the run to 1e-4 x the peak, held there: weights barely move at
        # the end, on purpose.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(1e-4, 1 - s / (0.6 * case.steps)))
    batch_size = 20 if case.data == "tokens" else 64
    micro = case.steps * case.accumulate
    if case.data == "tokens":
        batches = token_batches(seed, batch_size, min(micro, 200))
        val = token_batches(seed, batch_size, 4, sample=1)  # held out: the same chain
    else:
        batches = point_batches(seed, batch_size, min(micro, 200))
        val = point_batches(seed, 256, 1, sample=1)  # held out: the same hyperplane
    config = dict(config, clip_norm=case.clip, batch_size=batch_size)
    if case.data == "tokens":
        config["vocab_size"] = VOCAB
    loss_fn = nn.CrossEntropyLoss()

    def loss_of(x, y):
        out = model(x)
        return loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    with Run(logdir, name=case.id, config=config) as run:
        run.watch(model, every=case.every)
        for step in range(case.steps):
            model.train()
            total = 0.0
            for k in range(case.accumulate):
                x, y = batches[(step * case.accumulate + k) % len(batches)]
                loss = loss_of(x, y) / case.accumulate
                loss.backward()
                total += float(loss.detach())
            if case.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), case.clip)
            optimizer.step()
            optimizer.zero_grad()
            if scheduler is not None:
                scheduler.step()
            run.log(step, train_loss=total)
            if case.eval_every and (step + 1) % case.eval_every == 0:
                model.eval()
                with torch.no_grad():
                    value = float(np.mean([float(loss_of(x, y)) for x, y in val]))
                run.log(step, val_loss=value if math.isfinite(value) else float("nan"))
            if not math.isfinite(total):
                break  # what a user's script does when the loss is NaN
        path = run.path
    return path

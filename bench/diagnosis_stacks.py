"""Diagnosis cases recorded through the framework integrations: a real `lightning.Trainer` with
`gradwatch.integrations.lightning.GradwatchCallback` and a real `transformers.Trainer` with
`gradwatch.integrations.transformers.GradwatchCallback`.

What reaches the rules is only what the integrations record: the framework's step numbers (Lightning
counts from 0, HF from 1), `self.log` values (Lightning) or HF's logs (`loss`, `eval_loss`,
`learning_rate`, `grad_norm`), the optimizer's lr and the clip setting in meta. The models and data
are those of the user-loop cases (bench/diagnosis_userloops.py): word_language_model's LSTM, a tiny
GPT-2 from a config (random init, no download), ReLU MLPs, Markov-chain tokens and two-class points.

Besides the labels, each case says which code its printed remedies must carry (`remedy_code`:
remedy id -> a text the code must contain, e.g. Lightning's `gradient_clip_val`), so a Lightning
user is not told to edit a loop they do not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import diagnosis_userloops as userloops

LM_HARMFUL = userloops.LM_HARMFUL


@dataclass(frozen=True)
class StackCase:
    """One labelled run through a framework's own Trainer."""

    id: str
    arch: str  # mlp | lstm-lm | gpt2
    group: str  # pathology or healthy
    stack: str  # lightning | transformers
    steps: int  # optimizer steps
    every: int
    lr: float
    expected: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    harmful: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    clip: float | None = None  # Lightning gradient_clip_val / HF max_grad_norm (0: off)
    accumulate: int = 1
    hidden_bias: float | None = None  # MLP hidden biases set to this (dead ReLU units)
    evaluations: int = 2
    warmup_steps: int = 0  # HF: linear warmup, then HF's default linear decay to 0
    remedy_code: dict = field(default_factory=dict)  # remedy id -> text its code must contain
    flag_near_step: dict = field(default_factory=dict)
    no_layers: dict = field(default_factory=dict)
    note: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expected


CASES: tuple[StackCase, ...] = (
    # ---- Lightning --------------------------------------------------------------------------
    StackCase("lightning-mlp", "mlp", "healthy", "lightning", steps=100, every=10, lr=0.05,
              note="ReLU MLP on two-class points, SGD + momentum"),
    StackCase("lightning-grad-accumulation", "mlp", "healthy", "lightning", steps=60, every=10, lr=0.05,
              accumulate=4, note="accumulate_grad_batches=4"),
    StackCase("lightning-dead-relu", "mlp", "pathology", "lightning", steps=80, every=5, lr=0.05, hidden_bias=-3.0,
              expected=("dead_units",), allowed=("underfitting", "learning_rate", "vanishing_gradient"),
              remedy_code={"leaky-relu": "LeakyReLU"}, note="hidden biases initialised to -3"),
    StackCase("lightning-lstm-lm-clip", "lstm-lm", "healthy", "lightning", steps=60, every=10, lr=20.0, clip=0.25,
              harmful=LM_HARMFUL + ("clipping",), no_layers={"vanishing_gradient": ("encoder",)},
              note="word_language_model's recipe: SGD lr 20, gradient_clip_val=0.25"),
    StackCase("lightning-lstm-lm-noclip", "lstm-lm", "pathology", "lightning", steps=40, every=10, lr=20.0,
              expected=("loss_divergence",), allowed=("exploding_gradient", "learning_rate", "nonfinite"),
              harmful=LM_HARMFUL, remedy_code={"clipping": "gradient_clip_val"},
              no_layers={"vanishing_gradient": ("encoder",)}, note="SGD lr 20 without clipping"),
    # ---- transformers -----------------------------------------------------------------------
    # HF clips at max_grad_norm=1.0 unless told otherwise, and its default schedule decays the lr
    # linearly to 0 at the last step: both are what a user of Trainer gets.
    StackCase("hf-gpt2", "gpt2", "healthy", "transformers", steps=80, every=10, lr=3e-3, clip=1.0,
              warmup_steps=8, harmful=LM_HARMFUL + ("clipping",),
              note="AdamW lr 3e-3, warmup 8 steps then linear decay to 0, max_grad_norm 1.0"),
    StackCase("hf-gpt2-accumulation", "gpt2", "healthy", "transformers", steps=40, every=10, lr=3e-3, clip=1.0,
              accumulate=4, harmful=LM_HARMFUL + ("clipping",), note="gradient_accumulation_steps=4"),
    # AdamW at lr 0.05: updates far too large although HF clips at 1.0 (so clipping is no remedy).
    StackCase("hf-gpt2-lr-high", "gpt2", "pathology", "transformers", steps=60, every=2, lr=0.05, clip=1.0,
              expected=("learning_rate",), allowed=("loss_divergence", "exploding_gradient", "underfitting"),
              harmful=LM_HARMFUL + ("clipping",), remedy_code={"lower-lr": "learning_rate="},
              note="AdamW lr 0.05, max_grad_norm 1.0 (HF's default)"),
    StackCase("hf-gpt2-lr1", "gpt2", "pathology", "transformers", steps=60, every=10, lr=1.0, clip=0.0,
              expected=("loss_divergence",), allowed=("exploding_gradient", "learning_rate", "nonfinite",
                                                      "underfitting"),
              harmful=LM_HARMFUL, remedy_code={"clipping": "max_grad_norm", "lower-lr": "learning_rate="},
              note="AdamW lr 1.0, max_grad_norm=0 (no clipping)"),
)
CASE_IDS = tuple(case.id for case in CASES)


def get_case(case_id: str) -> StackCase:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(f"unknown stack case {case_id!r}; known: {', '.join(CASE_IDS)}")


def train_stack_case(case: StackCase, logdir, seed: int = 0):
    """Train `case` with its framework's Trainer and gradwatch's callback; returns the run folder."""
    import torch

    torch.manual_seed(seed)
    logdir = logdir / case.id  # one folder per case, so the run is found without guessing
    train = _train_lightning if case.stack == "lightning" else _train_transformers
    train(case, logdir, seed)
    (folder,) = [p for p in logdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folder


# ---- data ---------------------------------------------------------------------------------------
def _samples(case: StackCase, seed: int, n_batches: int, batch_size: int, sample: int = 0):
    """(inputs, targets) tensors of the case's data, `n_batches` x `batch_size` samples (`sample`
    1: held out from the same task)."""
    import torch

    make = userloops.token_batches if case.arch in ("lstm-lm", "gpt2") else userloops.point_batches
    batches = make(seed, batch_size, n_batches, sample=sample)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _batch_size(case: StackCase) -> int:
    return 20 if case.arch in ("lstm-lm", "gpt2") else 64


def _train_batches(case: StackCase) -> int:
    """Micro-batches per epoch: the run's optimizer steps spread over two epochs."""
    return case.steps * case.accumulate // 2


# ---- Lightning ----------------------------------------------------------------------------------
def _train_lightning(case: StackCase, logdir, seed: int) -> None:
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from gradwatch.integrations.lightning import GradwatchCallback

    class Module(pl.LightningModule):
        def __init__(self, lr: float, optimizer: str):
            super().__init__()
            self.save_hyperparameters()
            if case.arch == "lstm-lm":
                self.net = userloops.lstm_lm()
            else:
                self.net = userloops.relu_mlp()
                if case.hidden_bias is not None:
                    for layer in [m for m in self.net if isinstance(m, nn.Linear)][:-1]:
                        nn.init.constant_(layer.bias, case.hidden_bias)

        def loss(self, batch):
            x, y = batch
            out = self.net(x)
            return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(batch))

        def configure_optimizers(self):
            momentum = 0.0 if case.arch == "lstm-lm" else 0.9
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=momentum)

    batch_size = _batch_size(case)
    x, y = _samples(case, seed, _train_batches(case), batch_size)
    vx, vy = _samples(case, seed, 4, batch_size, sample=1)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    val = DataLoader(TensorDataset(vx, vy), batch_size=batch_size)
    callback = GradwatchCallback(logdir=logdir, name=case.id, every=case.every)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, accelerator="cpu", devices=1,
        accumulate_grad_batches=case.accumulate, gradient_clip_val=case.clip, num_sanity_val_steps=0,
    )
    trainer.fit(Module(case.lr, "sgd"), train, val)


# ---- transformers -------------------------------------------------------------------------------
def _train_transformers(case: StackCase, logdir, seed: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainingArguments

    from gradwatch.integrations.transformers import GradwatchCallback

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, ids):
            self.ids = ids

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}  # GPT-2 shifts the labels itself

    batch_size = _batch_size(case)
    x, _ = _samples(case, seed, _train_batches(case), batch_size)
    vx, _ = _samples(case, seed, 4, batch_size, sample=1)
    config = GPT2Config(vocab_size=userloops.VOCAB, n_positions=userloops.SEQ_LEN, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    steps_per_epoch = _train_batches(case) // case.accumulate
    args = TrainingArguments(
        output_dir=str(logdir / ".hf"), num_train_epochs=2, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, gradient_accumulation_steps=case.accumulate, learning_rate=case.lr,
        max_grad_norm=case.clip if case.clip is not None else 1.0, warmup_steps=case.warmup_steps,
        logging_steps=1, eval_strategy="steps", eval_steps=max(1, 2 * steps_per_epoch // case.evaluations),
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=seed, dataloader_num_workers=0,
    )
    callback = GradwatchCallback(logdir=logdir, name=case.id, every=case.every)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(x), eval_dataset=Tokens(vx), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # disable_tqdm's stand-in prints every log line
    trainer.train()

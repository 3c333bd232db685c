"""Hugging Face transformers (github.com/huggingface/transformers, Apache-2.0): a
`BertForSequenceClassification` trained by the library's own `Trainer`, as its text-classification
examples (examples/pytorch/text-classification/run_glue.py) do, with the model built from a
`BertConfig` (random initialisation: nothing is downloaded).

The model and the training loop are the installed library's code, run as is: Trainer's defaults
(AdamW, linear decay to 0, `max_grad_norm` 1.0, loss averaged over `logging_steps` in its logs),
evaluation every epoch. Only the model's size is ours: 2 layers, 2 heads, 32 wide, a vocabulary of
120 tokens, sequences of 16. Data: data.keyword_sequences, 4 classes told by keyword tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.thirdparty_heldout import data
from bench.thirdparty_heldout.truth_probe import TruthProbe

NUM_LABELS = 4
DEFAULTS = dict(learning_rate=3e-3, epochs=5, train_size=512, batch_size=32, warmup_steps=6, max_grad_norm=1.0,
                weight_decay=0.0, logging_steps=10, label_noise=0.0, every=10, seed=42)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def train(options: dict, logdir, name: str) -> tuple[str, dict]:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from gradwatch.integrations.transformers import GradwatchCallback

    opt = {**DEFAULTS, **options}
    torch.manual_seed(opt["seed"])
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=NUM_LABELS)
    model = BertForSequenceClassification(config)
    train_data = _Examples(*data.keyword_sequences(0, opt["train_size"], label_noise=opt["label_noise"]))
    eval_data = _Examples(*data.keyword_sequences(0, 256, sample=1))
    probe = TruthProbe(model)
    probe.loss_from_output()

    class ValToProbe(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            probe.record_val(metrics["eval_loss"])

    logdir = Path(logdir) / name  # one folder per case: the callback names the run itself
    args = TrainingArguments(
        output_dir=str(logdir / ".hf"), learning_rate=opt["learning_rate"], num_train_epochs=opt["epochs"],
        per_device_train_batch_size=opt["batch_size"], per_device_eval_batch_size=256,
        warmup_steps=opt["warmup_steps"], max_grad_norm=opt["max_grad_norm"], weight_decay=opt["weight_decay"],
        logging_steps=opt["logging_steps"], eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, seed=opt["seed"], dataloader_num_workers=0,
    )
    # ---- gradwatch glue: one callback ----
    callback = GradwatchCallback(logdir=logdir, name=name, every=opt["every"])
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                      callbacks=[callback, ValToProbe()])
    trainer.remove_callback(PrinterCallback)
    with probe:
        trainer.train()
    (folder,) = [p for p in logdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return str(folder), {**probe.record(), "num_classes": NUM_LABELS, "step_offset": 1}

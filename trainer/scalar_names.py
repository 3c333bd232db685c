"""The scalar names gradwatch's diagnosis and dashboard read, from the names frameworks log.

One table for every integration and for TensorBoard imports: `loss`, `train/loss` or Lightning's `train_loss_step` is
`train_loss`; HF's `eval_loss` is `val_loss`; `learning_rate` is `lr`; HF's `grad_norm` (the
total norm before clipping) is `grad_norm_total`; a Lightning `*_epoch` aggregate of the training
loss is `epoch_train_loss`. TensorBoard-style tags name a split and a metric in any order (`Loss/train`, `val/accuracy`).
Other names pass through with '/' and '.' as '_'.
"""

from __future__ import annotations

import re

SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
          "eval": "val", "dev": "val", "test": "test"}
METRICS = {"loss": "loss", "acc": "acc", "accuracy": "acc"}

ALIASES = {
    "loss": "train_loss", "train_loss": "train_loss", "training_loss": "train_loss",
    "acc": "train_acc", "accuracy": "train_acc", "train_accuracy": "train_acc",
    "val_loss": "val_loss", "valid_loss": "val_loss", "validation_loss": "val_loss", "eval_loss": "val_loss",
    "val_acc": "val_acc", "val_accuracy": "val_acc", "valid_acc": "val_acc", "validation_acc": "val_acc",
    "eval_accuracy": "val_acc", "eval_acc": "val_acc",
    "learning_rate": "lr", "lr": "lr",
    "grad_norm": "grad_norm_total",
    "test_loss": "test_loss", "eval_test_loss": "test_loss",
}


def gradwatch_name(name: str) -> str:
    """gradwatch's name for a framework's scalar name (see the module docstring)."""
    tokens = [t for t in re.split(r"[/._\-\s]+", name.strip().lower()) if t]
    if len(tokens) == 2 and {SPLITS.get(t) for t in tokens} - {None} and {METRICS.get(t) for t in tokens} - {None}:
        split = next(SPLITS[t] for t in tokens if t in SPLITS)
        metric = next(METRICS[t] for t in tokens if t in METRICS)
        return f"{split}_{metric}"
    key = "_".join(tokens)
    if key.endswith("_step"):
        key = key[: -len("_step")]
    elif key.endswith("_epoch"):
        base = ALIASES.get(key[: -len("_epoch")], key[: -len("_epoch")])
        return "epoch_train_loss" if base == "train_loss" else base
    if key.startswith("lr_"):  # Lightning's LearningRateMonitor: lr-Adam
        return "lr"
    return ALIASES.get(key, key)

"""The lesson's training loop and its pieces: data from options, optimizer and regularisers, early
stopping, live diagnosis, metrics, progress, and `train` - one call per run."""

from .early_stopping import EarlyStopping
from .loop import NonFiniteLossError, Setup, Trainer, TrainOutcome, evaluate, prepare, resolve_device, seed_everything
from .regularization import build_optimizer, penalised_weights, weight_penalty
from .runner import train, train_setup

__all__ = [
    "EarlyStopping", "NonFiniteLossError", "Setup", "TrainOutcome", "Trainer", "build_optimizer", "evaluate",
    "penalised_weights", "prepare", "resolve_device", "seed_everything", "train", "train_setup", "weight_penalty",
]

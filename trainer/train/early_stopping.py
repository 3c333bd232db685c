"""Early stopping on validation loss: patience, min_delta and the best weights kept for restoring."""

from __future__ import annotations

import math

import torch
from torch import nn


class EarlyStopping:
    """Tracks the best validation loss; `update` says whether to stop (Keras semantics).

    An evaluation improves when loss < best - min_delta. Training stops after `patience`
    evaluations in a row without improvement (patience 0: at the first one). A NaN loss never
    improves. With keep_best, the weights of the best evaluation are copied (on their device) so
    `restore` can put them back.
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, keep_best: bool = True):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience = patience
        self.min_delta = min_delta
        self.keep_best = keep_best
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_loss: float, model: nn.Module | None = None) -> bool:
        """Record epoch's validation loss; True when training should stop now."""
        if math.isfinite(val_loss) and val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            if self.keep_best and model is not None:
                self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            return True
        return False

    @property
    def has_best(self) -> bool:
        return self._best_state is not None

    def restore(self, model: nn.Module) -> bool:
        """Load the best weights into `model`; False when none were kept."""
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)
        return True

"""The training loop: one run of one options dict, recorded into a run folder.

Per optimizer step it logs train_loss (the cross-entropy of the batch, without penalties),
grad_norm_total (the total gradient norm before clipping), grad_norm_clipped (after clipping, when
clipping is on), reg_loss (when L1/L2 is on) and lr. Per epoch, at the step of the epoch's last
optimizer step: epoch (1-based), epoch_train_loss (mean over the epoch's batches), train_acc,
val_loss, val_acc and epoch_time_s. Validation and test losses are plain cross-entropy too, so runs
with and without penalties compare on the same scale.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradwatch.data import PreparedDataset

from .. import derived
from ..models import build_model
from ..options import OptionsError
from .data import load_training_data
from .early_stopping import EarlyStopping
from .live import LiveMonitor
from .metrics import classification_report
from .progress import Progress
from .regularization import build_optimizer, penalised_weights, weight_penalty

EVAL_BATCH = 1024


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/Inf and halt_on_nonfinite is on."""


@dataclass
class TrainOutcome:
    """How a run ended. status: finished, failed (non-finite loss) or stopped (Ctrl-C / SIGTERM)."""

    run_path: Path | str  # LOGDIR_URL/RUN_ID for a run published to a remote logdir
    run_id: str
    status: str
    results: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class Setup:
    """Everything a run needs, built and checked before its run folder is created."""

    options: dict
    data: PreparedDataset
    model: nn.Module
    device: torch.device


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise OptionsError("invalid device 'cuda': CUDA is not available on this machine (use auto or cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch generators; deterministic cuDNN (the same seed gives the same run)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def prepare(options: dict, data: PreparedDataset | None = None) -> Setup:
    """Load the data and build the model (raises OptionsError, DatasetError or ModelError)."""
    device = resolve_device(options["device"])
    if options.get("threads"):
        torch.set_num_threads(options["threads"])
    if data is None:
        data = load_training_data(options)
    seed_everything(options["seed"])
    vocab_size = len(data.vocab) if data.vocab is not None else None
    model = build_model(options, data.input_shape, data.n_classes, vocab_size).to(device)
    return Setup(options, data, model, device)


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and predicted classes, in eval mode (dropout off, BatchNorm running stats)."""
    was_training = model.training
    model.eval()
    total, predictions = 0.0, []
    for start in range(0, len(y), EVAL_BATCH):
        logits = model(X[start:start + EVAL_BATCH])
        total += F.cross_entropy(logits, y[start:start + EVAL_BATCH], reduction="sum").item()
        predictions.append(logits.argmax(1).cpu())
    model.train(was_training)
    loss = total / max(len(y), 1)
    return loss, torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64)


def batch_slices(n: int, batch_size: int, drop_single: bool) -> list[slice]:
    """Batches over n shuffled examples; a last batch of one example is dropped when BatchNorm is
    used (batch statistics of one example are undefined)."""
    slices = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if drop_single and len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


class Trainer:
    """Runs the epochs of one Setup and logs into `run`; `fit` returns the results dict."""

    def __init__(self, setup: Setup, run, progress: Progress, live: LiveMonitor):
        self.options = opts = setup.options
        self.model, self.device, self.data = setup.model, setup.device, setup.data
        self.run, self.progress, self.live = run, progress, live
        device = setup.device
        self.X_train, self.y_train = _as_tensor(self.data.X_train, device), _as_tensor(self.data.y_train, device)
        self.X_val, self.y_val = _as_tensor(self.data.X_val, device), _as_tensor(self.data.y_val, device)
        self.optimizer = build_optimizer(self.model, opts)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.penalised = penalised_weights(self.model)
        self.clipping = opts["clip_norm"] is not None or opts["clip_value"] is not None
        has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        self.slices = batch_slices(len(self.y_train), opts["batch_size"], drop_single=has_batchnorm)
        self.generator = torch.Generator().manual_seed(opts["seed"])
        self.early = EarlyStopping(opts["patience"], opts["min_delta"], keep_best=opts["restore_best"]) \
            if opts["early_stopping"] else None
        self.step = 0  # optimizer steps done
        self.history: list[dict] = []  # per-epoch metrics
        self.stop_reason = "completed"
        self._nonfinite_seen = False

    # ---- one optimizer step ---------------------------------------------------------------
    def _clip(self) -> torch.Tensor | None:
        """Clip in place (value, then norm); the total norm after clipping, or None when off."""
        opts = self.options
        if not self.clipping:
            return None
        if opts["clip_value"] is not None:
            nn.utils.clip_grad_value_(self.params, opts["clip_value"])
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = nn.utils.get_total_norm(grads)
        if opts["clip_norm"] is not None:
            nn.utils.clip_grads_with_norm_(self.params, opts["clip_norm"], norm)
            norm = nn.utils.get_total_norm(grads)
        return norm

    def _train_step(self, index: torch.Tensor) -> dict:
        opts = self.options
        xb, yb = self.X_train[index], self.y_train[index]
        logits = self.model(xb)
        data_loss = F.cross_entropy(logits, yb)
        penalty = weight_penalty(self.penalised, opts["l1"], opts["l2"])
        loss = data_loss if penalty is None else data_loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm_total = nn.utils.get_total_norm(grads)
        norm_clipped = self._clip()
        correct = (logits.detach().argmax(1) == yb).sum()
        # One device->host copy per step for everything logged.
        parts = [data_loss.detach(), loss.detach(), norm_total, correct.to(norm_total.dtype)]
        if norm_clipped is not None:
            parts.append(norm_clipped)
        values = torch.stack([p.float() for p in parts]).tolist()
        scalars = {"train_loss": values[0], "grad_norm_total": values[2]}
        if norm_clipped is not None:
            scalars["grad_norm_clipped"] = values[4]
        if penalty is not None:
            scalars["reg_loss"] = values[1] - values[0]
        scalars["lr"] = self.optimizer.param_groups[0]["lr"]
        if not (math.isfinite(values[1]) and math.isfinite(values[2])):
            self._nonfinite(scalars)
        self.optimizer.step()
        self.run.log(self.step, **scalars)
        self._report(self.live.after_step(self.step))
        self.step += 1
        return {"loss": values[0], "correct": int(values[3]), "n": len(yb)}

    def _nonfinite(self, scalars: dict) -> None:
        """Flag the first NaN/Inf; with halt_on_nonfinite, log this step and stop the run."""
        what = "loss" if not math.isfinite(scalars["train_loss"]) else "gradient norm"
        halt = self.options["halt_on_nonfinite"]
        if halt:
            self.run.log(self.step, **scalars)
        if not self._nonfinite_seen or halt:
            self._nonfinite_seen = True
            self._report(self.live.on_nonfinite(self.step, scalars, halted=halt))
        if not halt:
            return
        self.stop_reason = f"non-finite {what}"
        value = scalars["train_loss"] if what == "loss" else scalars["grad_norm_total"]
        raise NonFiniteLossError(
            f"training halted at optimizer step {self.step}: the {what} became {value} (halt_on_nonfinite is on)"
        )

    def _report(self, flags: list[dict]) -> None:
        for flag in flags:
            self.progress.message(f"flag [{flag.get('severity')}] {flag.get('rule')}: {flag.get('explanation', '')}")

    # ---- epochs ---------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict:
        self.model.train()
        order = torch.randperm(len(self.y_train), generator=self.generator).to(self.device)
        loss_sum, correct, seen, batches = 0.0, 0, 0, 0
        started = time.perf_counter()
        for part in self.slices:
            out = self._train_step(order[part])
            loss_sum += out["loss"]
            correct += out["correct"]
            seen += out["n"]
            batches += 1
            self.progress.batch_done(out["loss"])
        val_loss, val_pred = evaluate(self.model, self.X_val, self.y_val)
        return {
            "epoch": epoch,
            "epoch_train_loss": loss_sum / max(batches, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": float(np.mean(val_pred == self.data.y_val)) if len(val_pred) else float("nan"),
            "epoch_time_s": time.perf_counter() - started,
        }

    def fit(self) -> dict:
        """Train; returns the results (test metrics with the final weights). Raises
        NonFiniteLossError (halt) or KeyboardInterrupt, after storing the partial results."""
        started = time.perf_counter()
        try:
            self._epochs()
            restored = self._restore_best()
            results = self._summary(time.perf_counter() - started)
            results.update(self._final_evaluation(), restored_best=restored)
            return results
        except (NonFiniteLossError, KeyboardInterrupt) as exc:
            if isinstance(exc, KeyboardInterrupt):
                self.stop_reason = "interrupted"
            self.run.set_meta(results=self._summary(time.perf_counter() - started))
            raise

    def _epochs(self) -> None:
        for epoch in range(1, self.options["epochs"] + 1):
            self.progress.start_epoch(epoch)
            metrics = self._train_epoch(epoch)
            self.history.append(metrics)
            last_step = self.step - 1
            self.run.log(last_step, **metrics)
            self.progress.end_epoch(epoch, {"loss": metrics["epoch_train_loss"], "acc": metrics["train_acc"],
                                            "val_loss": metrics["val_loss"], "val_acc": metrics["val_acc"]})
            self._report(self.live.after_epoch(last_step))
            if self.early is not None and self.early.update(epoch, metrics["val_loss"], self.model):
                self.stop_reason = "early stopping"
                return
            if self.options["stop_on_overfitting"] and self.live.overfitting_detected:
                self.stop_reason = "overfitting detected"
                return

    def _restore_best(self) -> bool:
        """Put back the best epoch's weights (early stopping with restore_best), unless the last
        epoch was the best."""
        if self.early is None or not self.options["restore_best"] or self.early.best_epoch is None:
            return False
        if self.history and self.early.best_epoch == self.history[-1]["epoch"]:
            return False
        return self.early.restore(self.model)

    def _summary(self, seconds: float) -> dict:
        """Training-curve facts (what is known even for an interrupted run)."""
        validation = derived.per_epoch_summary([m["val_loss"] for m in self.history])
        best_val = float("nan") if validation["best_val_loss"] is None else validation["best_val_loss"]
        last = self.history[-1] if self.history else {}
        return {
            "stop_reason": self.stop_reason,
            "epochs_run": len(self.history),
            "optimizer_steps": self.step,
            "best_val_loss": best_val,
            "best_epoch": validation["best_epoch"],
            "last_epoch_val_loss": last.get("val_loss"),
            "last_epoch_train_loss": last.get("epoch_train_loss"),
            "early_stopped": self.stop_reason == "early stopping",
            "train_seconds": round(seconds, 3),
        }

    def _final_evaluation(self) -> dict:
        """Losses of the final model on all three splits, and the test metrics."""
        data, device = self.data, self.device
        train_loss, train_pred = evaluate(self.model, self.X_train, self.y_train)
        val_loss, val_pred = evaluate(self.model, self.X_val, self.y_val)
        test_loss, test_pred = evaluate(self.model, _as_tensor(data.X_test, device), _as_tensor(data.y_test, device))
        report = classification_report(data.y_test, test_pred, data.class_names)
        return {
            "train_loss": train_loss,
            "train_accuracy": float(np.mean(train_pred == data.y_train)),
            "val_loss": val_loss,
            "val_accuracy": float(np.mean(val_pred == data.y_val)),
            "final_gap": val_loss - train_loss,
            "test_loss": test_loss,
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_f1"],
            "test_f1_per_class": report["f1_per_class"],
            "confusion_matrix": report["confusion_matrix"],
            "class_names": report["class_names"],
        }

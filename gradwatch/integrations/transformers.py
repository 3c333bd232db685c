"""Hugging Face transformers: `GradwatchCallback` records a `Trainer` run into a gradwatch run folder.

    from gradwatch.integrations.transformers import GradwatchCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[GradwatchCallback(logdir="logs", every=10)])
    trainer.train()

Steps are `state.global_step` as HF logs it (the first optimizer step is step 1). Gradients are the
ones the optimizer steps with: summed over `gradient_accumulation_steps`, unscaled under fp16/bf16,
after `max_grad_norm` clipping (HF's own `grad_norm`, recorded as `grad_norm_total`, is the norm
before clipping). `loss`, `eval_loss`, `learning_rate` and `grad_norm` become `train_loss`,
`val_loss`, `lr` and `grad_norm_total`; `epoch` is recorded as an integer at each epoch's end, not
HF's fractional epoch; the end-of-run summary (`train_runtime`, `total_flos`, mean `train_loss`, ...)
is stored as the run's results, not as series. World process zero only. The run ends finished
after `train()`; an uncaught exception marks it failed (stopped for Ctrl-C) at exit.
"""

from __future__ import annotations

import math
import numbers

import transformers
from transformers import TrainerCallback

from gradwatch.trainer.run import Run
from gradwatch.trainer.scalar_names import gradwatch_name

EPOCH_SLACK = 1e-6  # HF's epoch is steps / steps_per_epoch in floating point: 2.0000000001 is epoch 2
# Logged once by Trainer.train() at its end; they describe the run, not a step.
SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
                          "train_loss"})


class GradwatchCallback(TrainerCallback):
    """Records `Trainer.train()` into a gradwatch run: `Run`'s arguments, `Run.watch`'s options."""

    def __init__(self, logdir="logs", name: str = "run", config: dict | None = None, *, every: int = 10,
                 histograms: bool = True, activations: bool = True, update_ratio: bool = True,
                 dataset: dict | None = None, flush_interval_s: float | None = None):
        self.run_args = dict(logdir=logdir, name=name, config=config, dataset=dataset,
                             flush_interval_s=flush_interval_s)
        self.watch_args = dict(every=every, histograms=histograms, activations=activations,
                               update_ratio=update_ratio)
        self.run: Run | None = None
        self._last_epoch: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.run is not None or model is None:
            return
        self._last_epoch = None
        config = {**_training_config(args), **(self.run_args["config"] or {})}
        self.run = Run(**{**self.run_args, "config": config}, distributed=False)
        self.run.watch(model, step_offset=1, **self.watch_args)
        self.run.probe.set_step(state.global_step)
        self.run.set_meta(
            integration="transformers", transformers=transformers.__version__,
            grad_clip=float(args.max_grad_norm) if args.max_grad_norm and args.max_grad_norm > 0 else None,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            trainer_world_size=args.world_size,  # the run's own world_size is 1: process zero records alone
            model_config=model_config_summary(model),
        )

    def on_step_begin(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.probe.set_step(state.global_step)  # resumed from a checkpoint

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs:
            return
        numbers_only = {k: float(v) for k, v in logs.items()
                        if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        if "train_runtime" in numbers_only:  # the end-of-run summary
            self.run.set_meta(results={k: v for k, v in numbers_only.items() if k in SUMMARY_KEYS})
            numbers_only = {k: v for k, v in numbers_only.items() if k not in SUMMARY_KEYS}
        scalars = {gradwatch_name(k): v for k, v in numbers_only.items() if k != "epoch"}
        if scalars:
            self.run.log(state.global_step, **scalars)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.run is None or state.epoch is None:
            return
        # HF's epoch is fractional: a last epoch cut short by max_steps ends at 1.25, which rounds
        # to the 1 already logged. The epoch that ended is the one state.epoch is inside of (its
        # ceiling, with float slack), logged once.
        epoch = max(1, math.ceil(state.epoch - EPOCH_SLACK))
        if self._last_epoch is None or epoch > self._last_epoch:
            self._last_epoch = epoch
            self.run.log(state.global_step, epoch=epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            run, self.run = self.run, None
            run.finish("finished")


def _training_config(args) -> dict:
    keys = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
            "max_steps", "weight_decay", "max_grad_norm", "lr_scheduler_type", "warmup_steps", "seed", "optim")
    config = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    config["batch_size"] = args.per_device_train_batch_size
    return config


def model_config_summary(model) -> dict | None:
    """The model config's class and the sizes diagnosis reads (untrained level ln K, remedy code
    written for this config class): plain JSON."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    out = {"config_class": type(config).__name__, "model_class": type(model).__name__,
           "architectures": list(getattr(config, "architectures", None) or [type(model).__name__])}
    for key in ("model_type", "vocab_size", "num_labels", "problem_type", "initializer_range", "hidden_size",
                "n_embd", "num_hidden_layers", "n_layer"):
        value = getattr(config, key, None)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[key] = value
    return out


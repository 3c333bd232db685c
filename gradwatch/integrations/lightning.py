"""PyTorch Lightning: `GradwatchCallback` records a Lightning run into a gradwatch run folder.

    from gradwatch.integrations.lightning import GradwatchCallback
    trainer = lightning.Trainer(callbacks=[GradwatchCallback(logdir="logs", name="my-run", every=10)])
    trainer.fit(model, train_loader, val_loader)

Steps are `trainer.global_step` at the optimizer step (the first optimizer step is step 0, as
Lightning logs it). Gradients are measured in `on_before_optimizer_step`: accumulated over
`accumulate_grad_batches`, unscaled under mixed precision, before `gradient_clip_val` clips them.
Values logged with `self.log` reach gradwatch under its names (`train_loss`, `val_loss`, `val_acc`,
names.py), at Lightning's own steps, through a logger the callback adds for the fit; `epoch`
(1-based) is recorded at each epoch's last optimizer step. Rank zero only. The run ends finished,
failed (an exception, with its text) or stopped (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import traceback

import lightning.pytorch as pl
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from gradwatch.trainer.run import Run
from gradwatch.trainer.scalar_names import gradwatch_name

STOPPING_EXCEPTIONS = ("KeyboardInterrupt", "SIGTERMException")


class GradwatchCallback(pl.Callback):
    """Records the fit into a gradwatch run: `Run`'s arguments, `Run.watch`'s options."""

    def __init__(self, logdir="logs", name: str = "run", config: dict | None = None, *, every: int = 10,
                 histograms: bool = True, activations: bool = True, update_ratio: bool = True,
                 dataset: dict | None = None, flush_interval_s: float | None = None):
        self.run_args = dict(logdir=logdir, name=name, config=config, dataset=dataset,
                             flush_interval_s=flush_interval_s)
        self.watch_args = dict(every=every, histograms=histograms, activations=activations,
                               update_ratio=update_ratio)
        self.run: Run | None = None
        self._logger: _MetricsLogger | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.run is not None or not trainer.is_global_zero:
            return
        config = {**_hparams(pl_module), **(self.run_args["config"] or {})}
        self.run = Run(**{**self.run_args, "config": config}, distributed=False)
        self.run.watch(pl_module, **self.watch_args)
        clip = trainer.gradient_clip_val
        self.run.set_meta(
            integration="lightning", lightning=pl.__version__, grad_clip=float(clip) if clip else None,
            grad_clip_algorithm=trainer.gradient_clip_algorithm if clip else None,
            accumulate_grad_batches=trainer.accumulate_grad_batches, precision=str(trainer.precision),
            trainer_world_size=trainer.world_size,  # the run's own world_size is 1: rank zero records alone
        )

    def on_fit_start(self, trainer, pl_module) -> None:
        # Added after setup, so ModelCheckpoint has already chosen its folder from the user's loggers.
        if self.run is not None:
            self._logger = _MetricsLogger(self.run)
            trainer.loggers = [*trainer.loggers, self._logger]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.probe.set_step(trainer.global_step)  # resumed from a checkpoint

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.run is not None:
            probe = self.run.probe
            probe.set_step(trainer.global_step)
            probe.gradients_ready()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.run is not None and trainer.global_step > 0:
            self.run.log(trainer.global_step - 1, epoch=trainer.current_epoch + 1)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.run is None:
            return
        if type(exception).__name__ in STOPPING_EXCEPTIONS:
            self._end("stopped", f"interrupted ({type(exception).__name__})")
        else:
            text = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__)[-3:])
            self._end("failed", f"{type(exception).__name__}: {exception}\n{text.strip()}")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._end("stopped" if trainer.interrupted else "finished")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._end("finished")

    def _end(self, status: str, error: str | None = None) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        if self._logger is not None:
            self._logger.run = None
        run.finish(status, error=error)


class _MetricsLogger(Logger):
    """Hands what `self.log` logs to the run under gradwatch's names (Lightning's own steps)."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    @property
    def name(self) -> str:
        return "gradwatch"

    @property
    def version(self) -> str:
        return self.run.id if self.run is not None else ""

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None or step is None:
            return
        scalars = {gradwatch_name(k): v for k, v in metrics.items() if k != "epoch"}
        if scalars:
            self.run.log(int(step), **scalars)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the config is stored when the run is created


def _hparams(pl_module) -> dict:
    try:
        return dict(pl_module.hparams)
    except (AttributeError, TypeError):
        return {}

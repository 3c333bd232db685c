"""`train(options)`: prepare, open a Run, fit, store results - the one call the CLI and the lesson
suite make per run."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from gradwatch.data import PreparedDataset

from ..run import Run
from ..runlog.writer import RunWriteError
from .live import LiveMonitor
from .loop import NonFiniteLossError, Setup, Trainer, TrainOutcome, prepare
from .progress import Progress


def train(
    options: dict,
    *,
    preset: str | None = None,
    logdir: str | os.PathLike = "logs",
    name: str | None = None,
    job_id: str | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
    data: PreparedDataset | None = None,
    live: bool = True,
) -> TrainOutcome:
    """Train one run of validated `options` (see trainer.options.validate / presets.resolve).

    Data and model are built before the run folder is created, so bad input raises (OptionsError,
    data.DatasetError, trainer.models.ModelError, trainer.run.RunSetupError) and creates nothing.
    Once the run exists, the outcome says how it ended: finished; failed when halt_on_nonfinite
    stopped a NaN/Inf loss (records kept); stopped on Ctrl-C / KeyboardInterrupt (SIGTERM too, under
    the CLI). Other exceptions mark the run failed and propagate.
    """
    setup = prepare(options, data)
    return train_setup(setup, preset=preset, logdir=logdir, name=name, job_id=job_id, quiet=quiet,
                       stream=stream, live=live)


def train_setup(setup: Setup, *, preset: str | None = None, logdir: str | os.PathLike = "logs",
                name: str | None = None, job_id: str | None = None, quiet: bool = False,
                stream: TextIO | None = None, live: bool = True) -> TrainOutcome:
    """`train` for an already prepared Setup."""
    options = setup.options
    config = {**options, "preset": preset}
    run = Run(logdir, name=name or preset or "run", config=config, dataset=setup.data.descriptor.as_dict())
    monitor = LiveMonitor(run, enabled=live, every=options["every"])
    status, error, results = "finished", None, {}
    try:
        with run:
            extra = {"job_id": job_id} if job_id else {}
            run.set_meta(preparation=setup.data.preparation, device=str(setup.device), **extra)
            run.watch(setup.model, every=options["every"])
            progress = Progress(options["epochs"], len(_batches(setup)), quiet=quiet, stream=stream or sys.stderr,
                                label=name or preset or "")
            with progress:
                results = Trainer(setup, run, progress, monitor).fit()
            run.set_meta(results=results)
    except (NonFiniteLossError, RunWriteError) as exc:  # the run is marked failed with this one line
        status, error = "failed", str(exc)
    except KeyboardInterrupt:
        status, error = "stopped", "interrupted"
    finally:
        monitor.close()
    # A published run's spool is gone once it is out: its address is the logdir's URL/RUN_ID.
    return TrainOutcome(run.path if run.url is None else run.url, run.id, status, results, error)


def _batches(setup: Setup) -> range:
    n, size = len(setup.data.y_train), setup.options["batch_size"]
    return range(0, n, size)

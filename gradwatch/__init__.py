"""gradwatch: per-layer training diagnostics for PyTorch, a live dashboard and automatic diagnosis.

    from gradwatch import Run

    with Run(logdir="logs", name="my-experiment", config={"lr": 1e-3}) as run:
        run.watch(model, every=10)
        ...

Importing this package imports no torch (the dashboard imports the run-log reader and the diagnosis
rules through it); `Run` loads the capture code, and torch with it, on first access. The folders of the
source tree map into this namespace: `gradwatch.trainer` (capture, run log, diagnosis, training),
`gradwatch.dashboard` (the web app), `gradwatch.data` (datasets), `gradwatch.integrations` (adapters
for other training stacks).
"""

from ._version import __version__

__all__ = ["Run", "RunReader", "RunLogError", "diagnose_run", "__version__"]


def __getattr__(name):
    if name == "Run":
        from .trainer.run import Run

        return Run
    if name in ("RunReader", "RunLogError"):
        from .trainer import runlog

        return getattr(runlog, name)
    if name == "diagnose_run":
        from .trainer.diagnose import diagnose_run

        return diagnose_run
    raise AttributeError(f"module 'gradwatch' has no attribute {name!r}")

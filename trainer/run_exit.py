"""Runs left open when the script ends are still flushed and marked: at interpreter exit a run the
user never finished becomes "finished"; at an uncaught exception, "failed" with the exception (or
"stopped" for KeyboardInterrupt), as `with Run(...)` would have done. The user's or a framework's
own `sys.excepthook` still runs afterwards (chained, not replaced)."""

from __future__ import annotations

import atexit
import sys
import threading

_open_runs: list = []  # strong references: an open run is flushed even if the script dropped it
_lock = threading.Lock()
_installed = False
_previous_excepthook = None


def track(run) -> None:
    global _installed, _previous_excepthook
    with _lock:
        if not _installed:
            _installed = True
            _previous_excepthook = sys.excepthook
            sys.excepthook = _excepthook
            atexit.register(_finish_open_runs)
        _open_runs.append(run)


def untrack(run) -> None:
    with _lock:
        if run in _open_runs:
            _open_runs.remove(run)


def _take_open_runs() -> list:
    with _lock:
        runs = list(_open_runs)
        _open_runs.clear()
    return runs


def _excepthook(exc_type, exc, tb) -> None:
    for run in _take_open_runs():
        try:
            run.__exit__(exc_type, exc, tb)
        except Exception as error:  # a broken run folder must not hide the user's traceback
            print(f"gradwatch: could not mark run {run.id} failed: {error}", file=sys.stderr)
    (_previous_excepthook or sys.__excepthook__)(exc_type, exc, tb)


def _finish_open_runs() -> None:
    for run in _take_open_runs():
        try:
            run.finish("finished")
        except Exception as error:
            print(f"gradwatch: could not finish run {run.id}: {error}", file=sys.stderr)

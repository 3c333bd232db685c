"""Runs left open when the script ends are still flushed and marked: at interpreter exit a run the
user never finished becomes "finished"; at an uncaught exception, "failed" with the exception (or
"stopped" for KeyboardInterrupt), as `with Run(...)` would have done. The user's or a framework's
own `sys.excepthook` still runs afterwards (chained, not replaced).

SIGTERM (`kill`, a scheduler's preemption) ends a script like Ctrl-C where the script left SIGTERM
at its default: `RunTerminated` is raised in the main thread, the run is marked "stopped", and the
process then dies of SIGTERM as it would have (same exit status). Once Ctrl-C has stopped a run, a
second Ctrl-C during interpreter exit is absorbed, so torch's own exit handlers are not interrupted
into a traceback (a third one still ends the process at once)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

_open_runs: list = []  # strong references: an open run is flushed even if the script dropped it
_lock = threading.Lock()
_installed = False
_previous_excepthook = None


class RunTerminated(KeyboardInterrupt):
    """SIGTERM reached a script with an open run: handled like Ctrl-C (the run ends "stopped")."""


def _on_sigterm(signum, frame) -> None:
    if not _open_runs:  # nothing to mark: die of SIGTERM at once, as without gradwatch
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise RunTerminated("terminated (SIGTERM)")


def _install_sigterm() -> None:
    """Only where Python may set handlers and the script kept the default (a framework's own
    SIGTERM handling, e.g. Lightning's or the CLI's, is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main interpreter
        pass


def track(run) -> None:
    global _installed, _previous_excepthook
    with _lock:
        if not _installed:
            _installed = True
            _previous_excepthook = sys.excepthook
            sys.excepthook = _excepthook
            atexit.register(_finish_open_runs)
        _open_runs.append(run)
    _install_sigterm()


_quiet_registered = False


def quiet_ctrl_c_at_exit() -> None:
    """Called when Ctrl-C (or SIGTERM) stopped a run: registers, last so it runs first, an exit
    handler that absorbs further Ctrl-C while the interpreter shuts down (see the module docstring)."""
    global _quiet_registered
    with _lock:
        if _quiet_registered:
            return
        _quiet_registered = True
    atexit.register(_absorb_sigint)


def _absorb_sigint() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    presses = []

    def absorb(signum, frame):
        presses.append(signum)
        if len(presses) >= 2:  # the user insists: leave now
            os._exit(130)

    try:
        signal.signal(signal.SIGINT, absorb)
    except ValueError:
        pass


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
    if issubclass(exc_type, RunTerminated):
        # Not a bug in the script: one line, then the death SIGTERM would have given.
        print("gradwatch: terminated (SIGTERM); the run is marked stopped", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    (_previous_excepthook or sys.__excepthook__)(exc_type, exc, tb)


def _finish_open_runs() -> None:
    for run in _take_open_runs():
        try:
            run.finish("finished")
        except Exception as error:
            print(f"gradwatch: could not finish run {run.id}: {error}", file=sys.stderr)

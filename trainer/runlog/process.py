"""Is the process that wrote something still alive? Shared by run status (stale runs) and the
dashboard's job manager. Torch-free."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start_ticks(pid: int) -> int | None:
    """The clock tick the process started at (field 22 of /proc/PID/stat), or None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields are counted after the ")" that closes the command name (which may contain spaces).
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """True for a live, not-zombie process; with `start_ticks`, only if it is the same process
    that was recorded (guards against pid reuse)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        # No /proc (not Linux) or the process is gone: ask the kernel directly.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return start_ticks is None or int(stat[19]) == start_ticks


def current_process_identity() -> dict:
    """What a writer records so readers can tell whether it is still alive."""
    return {"pid": os.getpid(), "pid_start_ticks": process_start_ticks(os.getpid()), "host": socket.gethostname()}

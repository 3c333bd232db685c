"""The node-local spool: where a run whose logdir is remote (a URL, a network filesystem) keeps its
SQLite while segments of it are published. Torch-free.

    $GRADWATCH_SPOOL/<run id>-r<rank>/run.sqlite   the run as the writer writes it (WAL: local disk only)
                                     /outbox/       segments not yet published, oldest first
                                     /sent/         published segments kept until compacted
                                     /origin.json   logdir and writer process, for a later process to finish

A spool folder is removed once everything in it is published; one left by a process that could not
publish before it ended (the store was away) is published by the next run started on the host.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from . import segment
from .process import process_alive
from .publisher import ORIGIN_FILE, OUTBOX, Publisher

ENV_SPOOL = "GRADWATCH_SPOOL"


def spool_root() -> Path:
    """GRADWATCH_SPOOL, else a per-user local cache folder."""
    if os.environ.get(ENV_SPOOL):
        return Path(os.environ[ENV_SPOOL])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    if os.access(base if base.exists() else base.parent, os.W_OK):
        return base / "gradwatch" / "spool"
    return Path(tempfile.gettempdir()) / f"gradwatch-{os.getuid()}" / "spool"


def spool_dir(root: Path, run_id: str, rank: int) -> Path:
    return Path(root) / f"{run_id}-{segment.rank_dir(rank)}"


def leftovers(root: Path) -> list[tuple[Path, dict]]:
    """Spool folders of ended processes of this host with segments still to publish."""
    found = []
    try:
        children = list(Path(root).iterdir())
    except OSError:
        return found
    for child in children:
        try:
            origin = json.loads((child / ORIGIN_FILE).read_text())
            waiting = any(segment.parse_name(n) for n in os.listdir(child / OUTBOX))
        except (OSError, ValueError):
            continue
        import socket

        mine = origin.get("host") == socket.gethostname()
        if waiting and mine and not process_alive(origin.get("pid"), origin.get("pid_start_ticks")):
            found.append((child, origin))
    return found


def publish_leftovers(root: Path, open_store) -> threading.Thread | None:
    """Publish leftover spools in a background thread (`open_store(logdir)` gives each one's store)."""
    found = leftovers(root)
    if not found:
        return None

    def work():
        for folder, origin in found:
            try:
                store = open_store(origin["logdir"])
                # Only the outbox: what its SQLite gained after the last export has no sequence number
                # yet, and exporting it again from the start would repeat rows.
                Publisher(folder, store, origin["run_id"], int(origin["rank"]), interval_s=3600,
                          exporting=False).close()
            except Exception as exc:  # a leftover must never disturb the new run
                print(f"gradwatch: leftover spool {folder} not published: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=work, name="gradwatch-leftovers", daemon=True)
    thread.start()
    return thread

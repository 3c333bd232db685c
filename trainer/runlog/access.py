"""How a reader opens a run database: read-write where it may (WAL readers keep the shared-memory
index up to date), read-only (`mode=ro`) where the file cannot be written, and `immutable=1` where
not even the folder can (a read-only mount, an archive): SQLite then needs no -shm file. Torch-free.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 30000


def _uri(db_path: Path, **params: str) -> str:
    # as_uri() percent-encodes spaces, '?', '#' and non-ASCII, which SQLite's URI parser decodes.
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{Path(db_path).absolute().as_uri()}?{query}"


def _probe(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # fails now, not at the first query
    return conn


def writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def open_for_reading(db_path: Path) -> tuple[sqlite3.Connection, str]:
    """(connection, mode) with mode "rw", "ro" or "immutable". Raises sqlite3.Error if none works."""
    db_path = Path(db_path)
    folder = db_path.parent
    if writable(folder) and writable(db_path):
        conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # the reader's first query finds any problem
        return conn, "rw"
    errors = []
    for mode, params in (("ro", {"mode": "ro"}), ("immutable", {"mode": "ro", "immutable": "1"})):
        if mode == "ro" and not writable(folder) and not (folder / (db_path.name + "-shm")).exists():
            continue  # without a -shm file a WAL reader would have to create one: go straight to immutable
        try:
            conn = sqlite3.connect(_uri(db_path, **params), uri=True, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            errors.append(exc)
            continue
        try:
            return _probe(conn), mode
        except sqlite3.Error as exc:
            conn.close()
            errors.append(exc)
    raise errors[-1] if errors else sqlite3.OperationalError("unable to open database file")

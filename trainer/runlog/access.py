"""How a reader opens a run database: read-write where it may (WAL readers keep the shared-memory
index up to date), read-only (`mode=ro`) where the file cannot be written, and `immutable=1` where
not even the folder can (a read-only mount, an archive): SQLite then needs no -shm file.

`immutable=1` ignores a write-ahead log, so a run killed before its last checkpoint and then copied
to read-only media (run.sqlite + run.sqlite-wal, no -shm) would read as nearly empty. Such a folder
is recovered instead: the database and its log are copied to a private temporary folder, where
SQLite replays the log on open (`recovered_copy`). Torch-free.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
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


# (database path, sizes and mtimes of it and its log) -> the recovered copy; read-only media do not
# change, so one copy serves every later open in this process.
_recovered: dict[tuple, Path] = {}
_recovered_lock = threading.Lock()


def needs_recovery(db_path: Path) -> bool:
    """A write-ahead log with records that `immutable=1` would silently skip: the folder cannot be
    written (no -shm can be made) and there is none."""
    folder = db_path.parent
    wal = folder / (db_path.name + "-wal")
    try:
        has_log = wal.stat().st_size > 0
    except OSError:
        return False
    return has_log and not writable(folder) and not (folder / (db_path.name + "-shm")).exists()


def recovered_copy(db_path: Path) -> Path:
    """A private copy of the database with its write-ahead log replayed (see the module docstring)."""
    db_path = Path(db_path)
    wal = db_path.with_name(db_path.name + "-wal")
    key = tuple([str(db_path)] + [v for p in (db_path, wal) for v in (p.stat().st_size, p.stat().st_mtime_ns)])
    with _recovered_lock:
        found = _recovered.get(key)
        if found is not None and found.exists():
            return found
        folder = Path(tempfile.mkdtemp(prefix="gradwatch-recovered-"))
        atexit.register(shutil.rmtree, folder, True)
        copy = folder / db_path.name
        shutil.copyfile(db_path, copy)
        shutil.copyfile(wal, folder / wal.name)
        conn = sqlite3.connect(copy)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # replays the log into the copy
        finally:
            conn.close()
        _recovered[key] = copy
        return copy

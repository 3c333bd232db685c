"""Opening the runs of one log directory, and the on-disk cache that gunicorn workers share.

Results that are costly to compute and cannot change until a run's files change (summaries,
diagnoses, downsampled series) are cached in a diskcache private to the app, keyed by the database
files' size and mtime (`run_identity`), so nothing lives in one worker's memory. The live poll's
small, seconds-lived answers are shared between a process's viewers instead (shared_reads.py). Run
ids come from URLs and are validated before any path is built from them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gradwatch.trainer.runlog import RunLogError, RunReader, add_note, resolve_run_dir
from gradwatch.trainer.runlog import schema as log_schema

from .live_tail import LiveTails
from .shared_reads import SharedReads

CACHE_SIZE_LIMIT = 512 * 2**20
CACHE_EXPIRE_S = 7 * 24 * 3600


class RunNotFound(RunLogError):
    """A run id from a URL that names no readable run; the message says which and why."""


def run_identity(run_dir: Path) -> tuple:
    """(size, mtime) of the database and of a non-empty WAL: changes whenever anything is written.

    An empty WAL is ignored: readers of a WAL-mode database create it on open and remove it on close,
    which must not look like a change."""
    parts = []
    for suffix in ("", "-wal"):
        try:
            info = os.stat(run_dir / (log_schema.DB_FILENAME + suffix))
        except OSError:  # missing, or the entry is a plain file / broken link
            parts += [0, 0]
            continue
        parts += [info.st_size, info.st_mtime_ns] if info.st_size else [0, 0]
    return tuple(parts)


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class RunFolders:
    """The run folders of one log directory: validated ids, readers, notes and the shared cache."""

    def __init__(self, logdir: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.logdir = Path(logdir).resolve()
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._cache = None
        # The live poll's reads, shared by this process's viewers of a run (one read per change).
        self.shared = SharedReads()
        self.tails = LiveTails()  # the newest records of live runs, read once per change (live_tail.py)

    # ---- cache --------------------------------------------------------------------------------
    @property
    def cache(self):
        if self._cache is None and self._cache_dir is not None:
            import diskcache

            from .config import ensure_private_cache

            runs = ensure_private_cache(self._cache_dir / "runs")
            self._cache = diskcache.Cache(str(runs), size_limit=CACHE_SIZE_LIMIT,
                                          eviction_policy="least-recently-used")
        return self._cache

    def cached(self, key: tuple, compute, expire: float | None = CACHE_EXPIRE_S):
        cache = self.cache
        if cache is None:
            return compute()
        try:
            hit = cache.get(key, default=None)
        except Exception:  # a damaged cache entry is only a miss
            hit = None
        if hit is not None:
            return hit
        value = compute()
        with contextlib.suppress(Exception):
            cache.set(key, value, expire=expire)
        return value

    # ---- opening runs -------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        """The folder of a run id from a URL; RunNotFound with the reason when there is none."""
        if not run_id:
            raise RunNotFound("no run selected: open one from the Runs page")
        try:
            path = resolve_run_dir(self.logdir, run_id)
        except RunLogError as exc:
            raise RunNotFound(str(exc)) from None
        if not path.is_dir():
            raise RunNotFound(f"no run {run_id!r} in {self.logdir} (it may have been deleted or moved)")
        return path

    def open(self, run_id: str) -> RunReader:
        path = self.run_dir(run_id)
        try:
            return RunReader(path)
        except RunLogError as exc:
            raise RunNotFound(str(exc)) from None

    def run_ids(self) -> list[str]:
        if not self.logdir.is_dir():
            raise RunLogError(f"log directory {str(self.logdir)!r} does not exist or is not a directory")
        # Every entry, not only folders: a symlink or a stray file gets an error row (never hidden).
        return sorted(entry.name for entry in os.scandir(self.logdir) if not entry.name.startswith("."))

    # ---- notes ----------------------------------------------------------------------------------
    def notes(self, run_id: str) -> list[dict]:
        with self.open(run_id) as reader:
            notes, _ = reader.notes()
        return notes

    def add_note(self, run_id: str, text: str, *, author: str, step: int | None, layer: str | None) -> int:
        path = self.run_dir(run_id)
        return add_note(path, text, author=author, step=step, layer=layer)

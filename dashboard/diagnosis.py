"""Each run's flags: the post-hoc diagnosis (trainer.diagnose) merged with the flags the live
trainer stored, cached per database version, computed in a background thread for very large runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from gradwatch.trainer.diagnose.merge import merge_flags as merge_problem_flags
from gradwatch.trainer.runlog import RunLogError, RunReader

from .store import CACHE_EXPIRE_S, RunFolders, run_identity

DIAGNOSIS_TTL_LIVE_S = 10.0  # a running run's diagnosis is recomputed at most this often
LARGE_RUN_STATS_ROWS = 1_000_000  # beyond this, pages get the diagnosis from a background thread
BACKGROUND_DIAGNOSIS_TIMEOUT_S = 900.0


def severity_counts(flags: list[dict]) -> dict:
    counts = {"critical": 0, "warning": 0, "info": 0}
    for flag in flags:
        sev = flag.get("severity")
        if sev in counts:
            counts[sev] += 1
    return counts


def merge_flags(diagnosed: list[dict], stored: list[dict]) -> list[dict]:
    """One flag per problem: post-hoc diagnosis and stored live flags of the same rule with
    overlapping layers or steps merged, with how it evolved (trainer.diagnose.merge)."""
    return merge_problem_flags(diagnosed, stored)


def diagnose_folder(path: Path) -> dict:
    """The diagnosis of one run folder as plain data; a rule's failure is reported, never raised."""
    try:
        from gradwatch.trainer.diagnose import diagnose_run
    except ImportError as exc:  # the rules are optional for reading a run
        return {"flags": [], "error": f"diagnosis unavailable ({exc})", "note": None}
    try:
        result = diagnose_run(path)
    except RunLogError as exc:
        return {"flags": [], "error": str(exc), "note": None}
    except Exception as exc:  # a rule's bug must not take the run page down
        return {"flags": [], "error": f"diagnosis failed: {type(exc).__name__}: {exc}", "note": None}
    return {"flags": result.get("flags") or [], "error": None, "note": result.get("note"),
            "checked": result.get("checked") or [], "skipped": result.get("skipped") or {}}


class RunDiagnosis:
    """Each run's merged, cached flags (a part of RunStore; reads through its RunFolders)."""

    def __init__(self, folders: RunFolders):
        self.folders = folders

    # ---- diagnosis ------------------------------------------------------------------------------
    def flags(self, run_id: str, *, status: str | None = None, stored: list | None = None,
              path: Path | None = None, wait: bool = True) -> dict:
        """{"flags": merged diagnosis + stored flags, "note", "error", "pending", ...}.

        Finished runs are diagnosed once per database version; running runs at most every
        DIAGNOSIS_TTL_LIVE_S seconds (the trainer also stores its live flags, shown at once). Runs with
        more than LARGE_RUN_STATS_ROWS statistics rows are diagnosed in a background thread when
        wait=False: the answer is then the stored flags with pending=True until the result is cached.
        """
        path = path or self.folders.run_dir(run_id)
        with RunReader(path) as reader:
            if stored is None or status is None:
                stored, _ = reader.flags()
                status = reader.status()
            rows = reader.cursor("stats")
        if status == "running":
            key, expire = ("diagnosis-live", run_id), DIAGNOSIS_TTL_LIVE_S
        else:
            key, expire = ("diagnosis", run_id, run_identity(path)), CACHE_EXPIRE_S
        cache = self.folders.cache
        if wait or rows <= LARGE_RUN_STATS_ROWS or cache is None:
            result = self.folders.cached(key, lambda: diagnose_folder(path), expire=expire)
            return dict(result, flags=merge_flags(result.get("flags") or [], stored or []), pending=False)
        result = None
        with contextlib.suppress(Exception):
            result = cache.get(key)
        if result is not None:
            return dict(result, flags=merge_flags(result.get("flags") or [], stored or []), pending=False)
        self._diagnose_in_background(key, path, expire)
        return {"flags": merge_flags([], stored or []), "error": None, "pending": True,
                "note": f"diagnosing this large run ({rows:,} statistics rows) in the background"}

    def _diagnose_in_background(self, key: tuple, path: Path, expire: float) -> None:
        """Start one diagnosis per key across all workers (an expiring marker in the shared cache)."""
        marker = ("diagnosing",) + key
        if not self.folders.cache.add(marker, os.getpid(), expire=BACKGROUND_DIAGNOSIS_TIMEOUT_S):
            return  # another thread or worker is on it

        def work():
            try:
                self.folders.cache.set(key, diagnose_folder(path), expire=expire)
            finally:
                with contextlib.suppress(Exception):
                    self.folders.cache.delete(marker)

        threading.Thread(target=work, name=f"diagnose-{path.name}", daemon=True).start()

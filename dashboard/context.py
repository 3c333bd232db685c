"""What every page needs from the app: its settings, the run store and the job manager."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings, job_identity_dir
from .data import RunStore
from .jobs import JobManager


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    store: RunStore
    jobs: JobManager

    @classmethod
    def from_settings(cls, settings: Settings) -> AppContext:
        return cls(settings, RunStore(settings.logdir, settings.cache_dir),
                   JobManager(settings.logdir, settings.max_jobs, data_dirs=settings.data_dirs,
                              max_model_bytes=settings.max_model_mb * 2**20,
                              identity_dir=job_identity_dir(settings)))

"""The dashboard's data access: run folders in, plain Python/numpy/pandas out.

`RunStore` is what pages, views and the export use; it is composed of parts, one job per module:
- store.py: validated run ids, readers (trainer.runlog's RunReader, torch-free), notes, and the
  diskcache shared by gunicorn workers;
- diagnosis.py: each run's flags (post-hoc diagnosis merged with the live trainer's), cached;
- summaries.py: the Runs list (one summary per run, within a time budget);
- run_data.py: the per-run views the Run and Compare pages draw, each read in one snapshot.
Every SQL statement lives in trainer/runlog; every derived fact (a layer's norm, a run's best
epoch) in trainer/derived.py. Nothing here writes SQL.
"""

from __future__ import annotations

from gradwatch.trainer.runlog import RunLogError

from .diagnosis import RunDiagnosis, merge_flags, severity_counts
from .run_data import RunViews, ScalarSeries, scalar_display, tensor_records
from .store import RunFolders, RunNotFound, run_identity
from .summaries import RunList, capture_label, config_summary, dataset_label, duration_s

__all__ = [
    "RunFolders", "RunLogError", "RunNotFound", "RunStore", "ScalarSeries", "capture_label", "config_summary", "dataset_label",
    "duration_s", "merge_flags", "run_identity", "scalar_display", "severity_counts", "tensor_records",
]


class RunStore:
    """Access to the runs of one log directory, with a shared on-disk cache: composed of parts that
    share one RunFolders (ids, readers, caches), each with one job, and exposing their public
    methods as its own."""

    def __init__(self, logdir=None, cache_dir=None, *, folders: RunFolders | None = None):
        self.folders = folders if folders is not None else RunFolders(logdir, cache_dir)
        self.diagnosis = RunDiagnosis(self.folders)
        self.listing = RunList(self.folders, self.diagnosis)
        self.views = RunViews(self.folders, self.diagnosis)
        # The surface pages, views and the export use, part by part.
        for part, names in ((self.folders, ("run_dir", "open", "run_ids", "notes", "add_note", "cached")),
                            (self.diagnosis, ("flags",)),
                            (self.listing, ("summaries", "_compute_summary")),
                            (self.views, VIEW_METHODS)):
            for name in names:
                setattr(self, name, getattr(part, name))

    @property
    def logdir(self):
        return self.folders.logdir

    @property
    def cache(self):
        return self.folders.cache

    @property
    def shared(self):
        return self.folders.shared

    @shared.setter
    def shared(self, reads) -> None:  # one SharedReads for every part (tests size its lifetime)
        self.folders.shared = reads


VIEW_METHODS = ("run_info", "run_facts", "scalar_view", "scalar_delta", "layer_view", "layer_delta", "step_norm_view",
                "live_head",
                "shared_scalar_delta", "shared_layer_delta", "shared_histogram_delta", "gradient_flow",
                "histogram_view", "histogram_delta", "weights_by_epoch", "compare_runs")

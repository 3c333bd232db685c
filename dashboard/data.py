"""The dashboard's data access: run folders in, plain Python/numpy/pandas out.

`RunStore` is what pages, views and the export use; it is built in layers, one job per module:
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

from .diagnosis import merge_flags, severity_counts
from .run_data import LIVE_LAYER_QUANTITIES, RunViews, ScalarSeries, scalar_display, tensor_records
from .store import RunNotFound, run_identity
from .summaries import capture_label, config_summary, dataset_label, duration_s

__all__ = [
    "LIVE_LAYER_QUANTITIES", "RunLogError", "RunNotFound", "RunStore", "ScalarSeries", "capture_label", "config_summary", "dataset_label",
    "duration_s", "merge_flags", "run_identity", "scalar_display", "severity_counts", "tensor_records",
]


class RunStore(RunViews):
    """Access to the runs of one log directory, with a shared on-disk cache."""

"""Capture tests' shared fixture: the measuring path.

A GPU runs the accelerator path (flat device buffer, tensor-valued per-call activation
statistics, NaN/Inf counted on the device); the CPU runs the host path (tensors read in place,
values read on the host). CI has no GPU, so the reference tests run twice, the second time with
the accelerator path forced on the CPU (`Probe.use_accelerator_path`): both are value-checked.
"""

from __future__ import annotations

import pytest

from gradwatch.trainer.run import Run


@pytest.fixture(params=["host", "accelerator"])
def capture_path(request, monkeypatch):
    """Every probe `Run.watch` makes in the test measures on this path."""
    if request.param == "accelerator":
        watch = Run.watch

        def watch_on_accelerator_path(self, *args, **kwargs):
            probe = watch(self, *args, **kwargs)
            if probe is not None:
                probe.use_accelerator_path()
            return probe

        monkeypatch.setattr(Run, "watch", watch_on_accelerator_path)
    return request.param

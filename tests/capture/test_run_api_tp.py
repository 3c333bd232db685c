"""Tensor parallelism under Run (gloo, CPU processes via torchrun): `parallelize_module` with
ColwiseParallel and RowwiseParallel on a 1-D mesh of 2 ranks, and FSDP2 + TP on a 2-D (dp=2,
tp=2) mesh of 4: every parameter's recorded statistics equal a single-process reference under the
user's names, whether its DTensor is sharded by rows, by columns, replicated (the RowwiseParallel
bias, counted once) or a plain tensor beside them (the last layer); so do the every-step
per-parameter gradient norms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader

from .finite_stats import nan_statistics
from .test_run_api_ddp import free_port

pytestmark = pytest.mark.slow  # two or more processes under torchrun: out of the fast lane (pytest -m 'not slow')

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "tp_worker.py"
STEPS = 3
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


@pytest.mark.parametrize("mode, ranks", [("tp", 2), ("fsdp_tp", 4)])
def test_tensor_parallel_statistics_equal_the_single_process_reference(tmp_path, mode, ranks):
    out = tmp_path / "rank0.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
         str(free_port()), str(WORKER), mode, str(tmp_path / "logs"), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    with RunReader(result["path"]) as reader:
        assert reader.status() == "finished"
        stats, _ = reader.layer_stats()
        norms = reader.step_norms().exact()
    params = stats[stats["kind"] != "activation"]
    assert sorted(params["name"].unique()) == sorted(NAMES)
    assert len(params) == STEPS * len(NAMES) * 2
    for row in params.to_dict("records"):
        want = result["expected"][row["step"]][row["name"]][row["kind"]]
        for field, value in want.items():
            assert row[field] == pytest.approx(value, rel=1e-4, abs=1e-7), (row["step"], row["name"], row["kind"], field)
    assert nan_statistics(result["path"]) == []
    # Every step's per-parameter gradient norms, combined across ranks the same way.
    assert sorted(norms.names) == sorted(NAMES) and norms.steps.tolist() == list(range(STEPS))
    for step in range(STEPS):
        for j, name in enumerate(norms.names):
            want = result["expected"][step][name]["grad"]["norm"]
            assert norms.norm_max[step, j] == pytest.approx(want, rel=1e-5), (step, name)

"""Run under FSDP2 (`fully_shard`, gloo, two CPU processes via torchrun): the run finishes (it used to
hang), and the per-layer statistics of the sharded parameters equal a single-process reference,
combined from per-shard partial results with one gather per logged step and no full-tensor gather."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader

from .test_run_api_ddp import free_port

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "fsdp_worker.py"
STEPS = 4


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "rank0.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(tmp / "logs"), str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_sharded_statistics_equal_the_single_process_reference(fsdp_run):
    with RunReader(fsdp_run["path"]) as reader:
        assert reader.status() == "finished"
        stats, _ = reader.layer_stats()
    assert sorted(stats["step"].unique()) == list(range(STEPS))
    params = stats[stats["kind"] != "activation"]
    assert len(params) == STEPS * 6 * 2
    for row in params.to_dict("records"):
        expected = fsdp_run["expected"][row["step"]][row["name"]]
        if row["kind"] == "grad":
            assert row["norm"] == pytest.approx(expected["grad"], rel=1e-5)
            assert row["mean"] == pytest.approx(expected["grad_mean"], rel=1e-4, abs=1e-8)
            assert row["std"] == pytest.approx(expected["grad_std"], rel=1e-4)
            assert row["min"] == pytest.approx(expected["grad_min"], rel=1e-6)
            assert row["max"] == pytest.approx(expected["grad_max"], rel=1e-6)
        else:
            assert row["norm"] == pytest.approx(expected["weight"], rel=1e-5)
            assert row["update_ratio"] == pytest.approx(expected["ratio"], rel=1e-4)
    # Rank 0's activations are recorded as under DDP.
    assert set(stats[stats["kind"] == "activation"]["layer"]) == {"1", "3"}


def test_one_gather_per_logged_step_and_no_full_tensor(fsdp_run):
    counts = fsdp_run["counts"]
    assert counts.get("gather") == STEPS
    assert "full_tensor" not in counts and "redistribute" not in counts


def test_every_step_gradient_norms_of_whole_tensors(fsdp_run):
    with RunReader(fsdp_run["path"]) as reader:
        norms = reader.step_norms().exact()
    assert norms.steps.tolist() == list(range(STEPS))
    for step in range(STEPS):
        for j, name in enumerate(norms.names):
            assert norms.norm_max[step, j] == pytest.approx(fsdp_run["expected"][step][name]["grad"], rel=1e-5)

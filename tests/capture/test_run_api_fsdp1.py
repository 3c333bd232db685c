"""Run under FSDP1 (`FullyShardedDataParallel`, gloo, CPU processes via torchrun), with and without
`use_orig_params`, one unit or nested units, FULL_SHARD, SHARD_GRAD_OP, NO_SHARD and HYBRID_SHARD:
the per-layer statistics describe the user's whole tensors under their own names and equal a
single-process reference, combined from per-shard pieces with one gather per logged step (none
where every rank holds whole tensors); a setup whose pieces cannot be combined is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader

from .test_run_api_ddp import free_port

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "fsdp1_worker.py"
STEPS = 4
PARAMS = ["encoder.0.weight", "encoder.0.bias", "hidden.weight", "hidden.bias", "head.weight", "head.bias"]


def launch(tmp: Path, use_orig: str, wrap: str, strategy: str, nproc: int = 2) -> list[dict]:
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_port", str(free_port()), str(WORKER), str(tmp / "logs"), str(out), use_orig, wrap, strategy],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in range(nproc)]


CASES = {
    "orig-params-nested-full-shard": ("1", "nested", "FULL_SHARD", 2),
    "flat-params-one-unit-full-shard": ("0", "root", "FULL_SHARD", 2),
    "flat-params-nested-shard-grad-op": ("0", "nested", "SHARD_GRAD_OP", 2),
    "flat-params-one-unit-hybrid-4-ranks": ("0", "root", "HYBRID_SHARD", 4),
    "orig-params-no-shard": ("1", "root", "NO_SHARD", 2),
}


@pytest.fixture(scope="module", params=list(CASES))
def fsdp1_run(request, tmp_path_factory):
    use_orig, wrap, strategy, nproc = CASES[request.param]
    return strategy, launch(tmp_path_factory.mktemp("fsdp1"), use_orig, wrap, strategy, nproc)


def test_statistics_of_whole_tensors_equal_the_single_process_reference(fsdp1_run):
    _, ranks = fsdp1_run
    result = ranks[0]
    with RunReader(result["path"]) as reader:
        assert reader.status() == "finished"
        stats, _ = reader.layer_stats()
        tensors = reader.tensors()
    params = tensors[tensors["role"] == "param"]
    # The user's names and whole shapes, in forward order: no '_fsdp_wrapped_module' or '_flat_param'.
    assert params["name"].tolist() == PARAMS
    assert [list(s) for s in params["shape"]] == [result["shapes"][n] for n in PARAMS]
    assert sorted(stats["step"].unique()) == list(range(STEPS))
    recorded = stats[stats["kind"] != "activation"]
    assert len(recorded) == STEPS * len(PARAMS) * 2
    for row in recorded.to_dict("records"):
        expected = result["expected"][row["step"]][row["name"]]
        if row["kind"] == "grad":
            assert row["norm"] == pytest.approx(expected["grad"], rel=1e-5)
            assert row["mean"] == pytest.approx(expected["grad_mean"], rel=1e-4, abs=1e-8)
            assert row["std"] == pytest.approx(expected["grad_std"], rel=1e-4)
            assert row["min"] == pytest.approx(expected["grad_min"], rel=1e-6)
            assert row["max"] == pytest.approx(expected["grad_max"], rel=1e-6)
        else:
            assert row["norm"] == pytest.approx(expected["weight"], rel=1e-5)
            assert row["mean"] == pytest.approx(expected["weight_mean"], rel=1e-4, abs=1e-8)
            assert row["update_ratio"] == pytest.approx(expected["ratio"], rel=1e-4)
    # Rank 0's activations, under the user's module names.
    assert set(stats[stats["kind"] == "activation"]["layer"]) == {"encoder.1", "act"}


def test_one_gather_per_logged_step_only_where_tensors_are_sharded(fsdp1_run):
    strategy, ranks = fsdp1_run
    if strategy == "NO_SHARD":  # whole tensors everywhere: rank 0 records alone, as under DDP
        assert [r["watching"] for r in ranks] == [True, False]
        assert [r["counts"] for r in ranks] == [{}, {}]
    else:
        assert all(r["watching"] for r in ranks)
        assert all(r["counts"] == {"gather": STEPS} for r in ranks)


def test_units_with_different_strategies_are_refused_on_every_rank(tmp_path):
    ranks = launch(tmp_path, "0", "mixed", "FULL_SHARD")
    for r in ranks:
        assert r["refused"] == ("gradwatch records FSDP models whose units share one sharding strategy and "
                                "process group; got FULL_SHARD, NO_SHARD over 1 process group(s)")
    with RunReader(ranks[0]["path"]) as reader:
        assert reader.tensors().empty


def test_every_step_gradient_norms_of_whole_tensors(fsdp1_run):
    """Each rank's piece of every parameter, combined by one all-reduce per step into the whole
    tensor's norm, recorded by rank 0 under the user's names."""
    _, ranks = fsdp1_run
    result = ranks[0]
    with RunReader(result["path"]) as reader:
        norms = reader.step_norms().exact()
    assert norms.steps.tolist() == list(range(STEPS))
    assert list(norms.names) == PARAMS
    for step in range(STEPS):
        for j, name in enumerate(PARAMS):
            assert norms.norm_max[step, j] == pytest.approx(result["expected"][step][name]["grad"], rel=1e-5)

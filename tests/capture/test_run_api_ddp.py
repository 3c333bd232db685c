"""Run under torch.distributed: DDP with gloo in two CPU processes, Run and watch on both ranks.
One run folder; layer statistics from rank 0 only, named without DDP's 'module.' prefix; scalars
from both ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader, list_runs, schema
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR

pytestmark = pytest.mark.slow  # two or more processes under torchrun: out of the fast lane (pytest -m 'not slow')

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "ddp_worker.py"
STEPS = 4
PARAMS = ["0.weight", "0.bias", "2.weight", "2.bias"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    logdir = tmp / "logs"
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(logdir), str(tmp / f"rank{rank}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} failed:\n{outputs[rank][-3000:]}"
    results = [json.loads((tmp / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return logdir, results


def test_ddp_writes_exactly_one_run_folder(ddp_run):
    logdir, results = ddp_run
    assert results[0]["path"] == results[1]["path"]
    (entry,) = list_runs(logdir)
    assert entry.error is None and entry.status == "finished"
    assert str(entry.path) == results[0]["path"]
    assert entry.meta["world_size"] == 2


def test_ddp_layer_stats_come_from_rank_0_once_per_step_without_module_prefix(ddp_run):
    logdir, results = ddp_run
    assert results[0]["probe_is_none"] is False and results[1]["probe_is_none"] is True
    with RunReader(results[0]["path"]) as reader:
        steps, _ = reader.steps()
        tensors = reader.tensors()
        grads, _ = reader.layer_stats(kinds=("grad",))
        weights, _ = reader.layer_stats(kinds=("weight",))
    assert steps["step"].tolist() == list(range(STEPS))
    assert tensors[tensors["role"] == "param"]["name"].tolist() == PARAMS
    assert not any(name.startswith("module") for name in tensors["name"])
    assert len(grads) == len(weights) == STEPS * len(PARAMS)
    # After all-reduce both ranks hold the same gradients; the record equals them.
    for step in range(STEPS):
        for name in PARAMS:
            got = grads[(grads["step"] == step) & (grads["name"] == name)]["norm"].item()
            assert got == pytest.approx(results[0]["grads"][step][name], rel=1e-5)
            assert got == pytest.approx(results[1]["grads"][step][name], rel=1e-5)


def test_ddp_scalars_come_from_both_ranks(ddp_run):
    _, results = ddp_run
    with RunReader(results[0]["path"]) as reader:
        every, _ = reader.scalars(rank=None)
        rank0, _ = reader.scalars()
        rank0 = rank0[rank0["name"] != OPTIMIZER_LR]  # the capture's own lr records (rank 0 watches)
    assert sorted(set(every["rank"])) == [0, 1]
    for rank in (0, 1):
        mine = every[every["rank"] == rank]
        assert sorted(mine[mine["name"] == "train_loss"]["step"]) == list(range(STEPS))
        assert set(mine[mine["name"] == "rank_id"]["value"]) == {float(rank)}
    sentinels = rank0["name"].isin([schema.SENTINEL_GRAD_NORM, schema.SENTINEL_NONFINITE])
    assert set(rank0["rank"]) == {0} and len(rank0[~sentinels]) == 2 * STEPS
    assert sorted(rank0[rank0["name"] == schema.SENTINEL_GRAD_NORM]["step"]) == list(range(STEPS))  # rank 0's probe
    # two scalars per rank per step, rank 0's two sentinels and optimizer lr (every=1): seq has no gaps
    assert every["seq"].tolist() == list(range(1, 7 * STEPS + 1))


def test_ddp_rank_1_closing_last_keeps_rank_0_histogram_drop_count(ddp_run):
    """Rank 0 dropped every histogram; rank 1, which writes none and closes later, must not reset
    the run's 'dropped_histograms' to its own zero."""
    _, results = ddp_run
    with RunReader(results[0]["path"]) as reader:
        stats, _ = reader.layer_stats(kinds=("grad", "weight"))
        hist_rows = sum(len(reader.histograms(name, kind)[0]) for name in PARAMS for kind in ("grad", "weight"))
        dropped = reader.meta.get("dropped_histograms")
    assert hist_rows == 0  # every histogram was dropped ...
    assert dropped == len(stats) == 2 * STEPS * len(PARAMS)  # ... and the run says how many

"""GradwatchCallback in a real transformers Trainer run under torchrun (2 CPU processes, gloo
DDP): world process zero alone writes exactly one run folder, its gradients are the all-reduced
ones the optimizer steps with at HF's step numbers, HF's logs arrive, the run ends finished and
both processes exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader, list_runs

from ..capture.test_run_api_ddp import free_port

pytestmark = pytest.mark.slow  # two or more processes under torchrun: out of the fast lane (pytest -m 'not slow')

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "hf_ddp_worker.py"


@pytest.fixture(scope="module")
def hf_ddp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf-ddp")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(tmp / "logs"), str(tmp / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "logs", [json.loads((tmp / f"out.rank{rank}").read_text()) for rank in (0, 1)]


def test_process_zero_writes_the_only_run_folder_and_it_finishes(hf_ddp):
    logdir, ranks = hf_ddp
    assert [(r["rank"], r["world_size"], r["has_run"]) for r in ranks] == [(0, 2, True), (1, 2, False)]
    (entry,) = list_runs(logdir)
    assert entry.error is None and entry.status == "finished"
    assert entry.meta["trainer_world_size"] == 2


def test_gradients_are_the_all_reduced_ones_at_hf_steps(hf_ddp):
    logdir, ranks = hf_ddp
    (entry,) = list_runs(logdir)
    reference = ranks[0]["grads"]
    for step, norms in reference.items():  # all-reduced: the same on both ranks
        assert norms == pytest.approx(ranks[1]["grads"][step], rel=1e-6)
    with RunReader(entry.path) as reader:
        grads, _ = reader.layer_stats(kinds=("grad",))
        losses = reader.scalar_series("train_loss")
    steps = list(range(1, ranks[0]["global_step"] + 1))  # 16 samples, 2 ranks, batch 4, 2 epochs
    assert steps == [1, 2, 3, 4] and sorted(int(s) for s in reference) == steps
    assert sorted(grads["step"].unique()) == steps
    assert len(grads) == len(steps) * len(reference["1"])
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(reference[str(row["step"])][row["name"]], rel=1e-5)
    assert losses["step"].tolist() == steps

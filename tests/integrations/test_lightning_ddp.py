"""GradwatchCallback in a real multi-process Lightning fit (strategy="ddp", accelerator="cpu",
devices=2, gloo): rank zero alone writes exactly one run folder, its gradients are the all-reduced
ones the optimizer steps with at each global_step, `self.log` values arrive, the run ends finished
and both processes exit (no collective waits on a rank that does not record)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader, list_runs

pytestmark = pytest.mark.slow  # two or more processes under torchrun: out of the fast lane (pytest -m 'not slow')

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "lightning_ddp_worker.py"
STEPS = 8  # 64 samples, 2 ranks, batch 8: 4 steps an epoch, 2 epochs


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lightning-ddp")
    done = subprocess.run([sys.executable, str(WORKER), str(tmp / "logs"), str(tmp / "out"), "ddp"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp / f"out.rank{rank}").read_text()) for rank in (0, 1)]
    return tmp / "logs", ranks


def test_rank_zero_writes_the_only_run_folder_and_it_finishes(ddp_fit):
    logdir, ranks = ddp_fit
    assert [(r["rank"], r["world_size"], r["has_run"]) for r in ranks] == [(0, 2, True), (1, 2, False)]
    (entry,) = list_runs(logdir)
    assert entry.error is None and entry.status == "finished"
    assert entry.meta["trainer_world_size"] == 2


def test_gradients_are_the_all_reduced_ones_at_each_global_step(ddp_fit):
    logdir, ranks = ddp_fit
    (entry,) = list_runs(logdir)
    reference = ranks[0]["grads"]
    for step, norms in reference.items():  # all-reduced: the same on both ranks
        assert norms == pytest.approx(ranks[1]["grads"][step], rel=1e-6)
    with RunReader(entry.path) as reader:
        grads, _ = reader.layer_stats(kinds=("grad",))
        scalars, _ = reader.scalars(rank=None)
    assert sorted(grads["step"].unique()) == list(range(STEPS)) == sorted(int(s) for s in reference)
    assert set(grads["name"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(reference[str(row["step"])][row["name"]], rel=1e-5)
    losses = scalars[scalars["name"] == "train_loss"]
    assert sorted(losses["step"]) == list(range(STEPS)) and set(scalars["rank"]) == {0}

"""FSDP2 (2 ranks, gloo) into a file:// logdir: every rank spools and publishes; the imported run holds
rank 0's combined layer statistics, equal to the single-process reference, and every rank's segments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.trainer.runlog import RunReader
from gradwatch.trainer.runlog.importer import Importer
from gradwatch.trainer.runlog.stores import FolderStore

from .conftest import free_port

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "fsdp_worker.py"
STEPS = 4


@pytest.mark.slow
def test_fsdp_ranks_publish_into_one_run(tmp_path):
    shared = tmp_path / "shared"
    out = tmp_path / "rank0.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), shared.as_uri(), str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, GRADWATCH_SPOOL=str(tmp_path / "spool")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    (run_id,) = os.listdir(shared)
    assert sorted(os.listdir(shared / run_id / "segments")) == ["r00000", "r00001"]  # every rank published
    assert not list((tmp_path / "spool").iterdir())  # and its spool was cleared
    Importer(FolderStore(shared), tmp_path / "cache").poll()
    with RunReader(tmp_path / "cache" / run_id) as reader:
        assert reader.status() == "finished" and reader.meta["world_size"] == 2
        stats, _ = reader.layer_stats()
        imported = {r[0] for r in reader._query("SELECT rank FROM _gw_import")}
    assert imported == {0, 1}  # both ranks' segments are in the one run
    grads = stats[stats["kind"] == "grad"]
    assert len(grads) == STEPS * 6
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(result["expected"][row["step"]][row["name"]]["grad"], rel=1e-5)

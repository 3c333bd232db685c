"""kill -9 of a training process: what was flushed reads back whole, the run is reported stale,
and a reader polling from another process meanwhile saw every record once, in order."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gradwatch.trainer.inspect_run import summarize_run
from gradwatch.trainer.runlog import RunLogError, RunReader, list_runs, schema

TRAIN_LOOP = Path(__file__).resolve().parents[1] / "scripts" / "train_loop.py"
PER_RECORD = 4 * 2 + 1  # 4 parameter tensors x (grad, weight) + the Tanh output


def test_kill_9_leaves_a_readable_stale_run(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_LOOP), str(tmp_path), "0", "1", "0.05", "0.001"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = {"steps": [], "scalars": [], "stats": []}
    try:
        run_dir = Path(proc.stdout.readline().strip())
        assert run_dir.parent == tmp_path, proc.stderr.read() if proc.poll() is not None else run_dir
        cursors = {"steps": 0, "scalars": 0, "stats": 0}
        deadline = time.monotonic() + 60
        reader = None
        while time.monotonic() < deadline and len(seen["steps"]) < 40:
            assert proc.poll() is None, proc.stderr.read()
            if reader is None:
                try:
                    reader = RunReader(run_dir)
                except RunLogError:
                    time.sleep(0.02)
                    continue
            steps, cursors["steps"] = reader.steps(cursors["steps"])
            scalars, cursors["scalars"] = reader.scalars(cursors["scalars"])
            stats, cursors["stats"] = reader.layer_stats(cursors["stats"])
            seen["steps"] += steps.to_dict("records")
            seen["scalars"] += scalars.to_dict("records")
            seen["stats"] += stats.to_dict("records")
            time.sleep(0.02)
        assert len(seen["steps"]) >= 40, "the trainer never logged 40 steps"
        assert reader.status() == "running"
        reader.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The database is intact (the WAL is replayed by the next reader).
    conn = sqlite3.connect(run_dir / schema.DB_FILENAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    with RunReader(run_dir) as reader:
        assert reader.status() == "stale"
        assert reader.meta["status"] == "running"  # nobody wrote an end: derived, not stored
        steps, _ = reader.steps()
        scalars, _ = reader.scalars()
        stats, _ = reader.layer_stats()
        tensors = reader.tensors()
    n = len(steps)
    # Everything a reader saw before the kill is still there, unchanged.
    assert n >= len(seen["steps"]) >= 40
    assert [(r["seq"], r["step"], r["wall"]) for r in steps.to_dict("records")[: len(seen["steps"])]] == [
        (r["seq"], r["step"], r["wall"]) for r in seen["steps"]]
    assert scalars["seq"].tolist()[: len(seen["scalars"])] == [r["seq"] for r in seen["scalars"]]
    # While polling from another process, each record arrived once and in order.
    for kind in ("steps", "scalars", "stats"):
        assert [r["seq"] for r in seen[kind]] == list(range(1, len(seen[kind]) + 1)), kind
    # Whole records only: consecutive steps from 0, each with all its statistics.
    assert steps["step"].tolist() == list(range(n))
    assert steps["seq"].tolist() == list(range(1, n + 1))
    per_step = stats.groupby("step").size()
    assert per_step.index.tolist() == list(range(n))
    assert (per_step == PER_RECORD).all()
    assert len(tensors) == 4 + 1
    # Scalars are consistent: both names at every step up to the last one flushed, values intact.
    check = scalars[scalars["name"] == "check"]
    loss = scalars[scalars["name"] == "train_loss"]
    m = len(check)
    assert check["step"].tolist() == list(range(m)) and m >= n - 1
    assert loss["step"].tolist()[: m] == list(range(m)) and len(loss) in (m, m + 1)
    assert (check["value"] == 2 * check["step"] + 1).all()
    assert loss["value"].notna().all()

    summary = summarize_run(run_dir)
    assert summary["status"] == "stale"
    assert summary["steps_logged"] == n
    assert summary["last_step"] == max(n - 1, int(scalars["step"].max()))
    assert summary["scalars"]["check"]["count"] == m
    assert summary["scalars"]["check"]["max"] == 2 * (m - 1) + 1
    assert [layer["name"] for layer in summary["layers"]] == ["0", "2"]
    assert all(isinstance(layer["grad_norm"], float) for layer in summary["layers"])

    (entry,) = list_runs(tmp_path)
    assert entry.error is None and entry.status == "stale"

"""A full disk: training stops at once with the run marked failed and the cause "disk full" in one
line (or, with on_write_error="warn", goes on and counts what was lost); records flushed before the
failure are kept, other runs on the same disk are untouched, and nothing half-created is left."""

from __future__ import annotations

import warnings

import pytest

from gradwatch.trainer.run import Run, RunSetupError
from gradwatch.trainer.runlog import RunReader, list_runs
from gradwatch.trainer.runlog.writer import RunWriteError

from .conftest import IS_ROOT, gradwatch_cli, one_line

WIDE = 40  # scalars per step: fills a 1 MB disk in a few hundred steps


def _fill(run: Run, steps: int = 100_000) -> int:
    """Log until the disk is full; returns the last step known to be flushed."""
    flushed = -1
    for step in range(steps):
        run.log(step, **{f"metric_{i}": float(step) + i / 100 for i in range(WIDE)})
        if step % 10 == 9:
            run.flush()
            flushed = step
    return flushed


def _scalar_steps(run_dir) -> set:
    with RunReader(run_dir) as reader:
        df, _ = reader.scalars(names=["metric_0"])
    return set(df["step"].tolist())


def test_full_disk_stops_training_marks_the_run_failed_and_keeps_what_was_flushed(full_disk):
    kind, disk = full_disk
    with Run(disk, name="neighbour") as other:
        other.log(0, loss=1.0)
    flushed = -1
    with pytest.raises(RunWriteError) as raised:
        with Run(disk, name="big", flush_interval_s=0.05) as run:
            for step in range(100_000):
                run.log(step, **{f"metric_{i}": float(step) + i / 100 for i in range(WIDE)})
                if step % 10 == 9:
                    run.flush()
                    flushed = step
    message = str(raised.value)
    assert message.startswith("disk full") and "\n" not in message
    assert flushed >= 9  # it did train for a while before the disk filled
    with RunReader(run.path) as reader:
        assert reader.status() == "failed"
        assert reader.meta["error"].startswith("disk full") and "\n" not in reader.meta["error"]
    assert set(range(flushed + 1)) <= _scalar_steps(run.path)  # nothing flushed is lost
    entries = {e.meta["name"]: e for e in list_runs(disk) if e.meta}
    assert entries["neighbour"].status == "finished" and entries["neighbour"].error is None
    assert not [p.name for p in disk.iterdir() if p.name.startswith(".building-")]
    assert not (run.path / ".reserve").exists()


def test_warn_mode_goes_on_with_one_warning_and_counts_the_lost_records(full_disk):
    kind, disk = full_disk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Run(disk, name="warned", flush_interval_s=0.05, on_write_error="warn") as run:
            for step in range(1500):
                run.log(step, **{f"metric_{i}": float(step) for i in range(WIDE)})
                if step % 10 == 9:
                    run.flush()  # never raises in warn mode
    lost = run.lost_records
    assert lost > 0
    disk_warnings = [w for w in caught if "disk full" in str(w.message)]
    assert len(disk_warnings) >= 1 and "records are being lost" in str(disk_warnings[0].message)
    with RunReader(run.path) as reader:
        assert reader.status() == "finished"
        assert reader.meta["lost_records"] == lost
        logged = len(_scalar_steps(run.path))
    assert 0 < logged < 1500 and logged + lost // WIDE >= 1500 - 1  # every step either stored or counted


def test_full_disk_at_start_is_one_clear_error_and_leaves_no_hidden_folder(full_disk):
    kind, disk = full_disk
    if kind == "tmpfs":
        ballast = disk / "ballast"
        with open(ballast, "wb") as handle:  # take every free byte
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
    else:
        pytest.skip("a page cap cannot fill the disk before the database exists (tmpfs needs root)")
    with pytest.raises(RunSetupError) as raised:
        Run(disk, name="nospace")
    assert "disk full" in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in disk.iterdir()) == ["ballast"]


@pytest.mark.skipif(not IS_ROOT, reason="the CLI check needs a real full filesystem (tmpfs mount as root)")
def test_cli_train_on_a_full_disk_says_disk_full_in_one_line(full_disk):
    kind, disk = full_disk
    result = gradwatch_cli("train", "--preset", "vanishing", "--logdir", str(disk), "--epochs", "200",
                           "--every", "1", "--quiet")
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert "run failed: disk full" in line
    run_dir = result.stdout.strip().splitlines()[-1]
    with RunReader(run_dir) as reader:
        assert reader.status() == "failed" and reader.meta["error"].startswith("disk full")

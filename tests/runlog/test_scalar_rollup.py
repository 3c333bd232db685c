"""Scalar roll-up (schema 2): the writer's scalar_blocks summarise every block of a series exactly,
and the dashboard draws long series from them with the same extremes, non-finite markers and
counts as reading every record."""

from __future__ import annotations

import math
import sqlite3
import time

import numpy as np
import pytest

from gradwatch.dashboard.data import scalar_display
from gradwatch.trainer.runlog import RunReader, schema
from gradwatch.trainer.runlog.writer import RunWriter


def write_series(run_dir, values, *, name="train_loss", steps=None, other=True, flush_every=None):
    writer = RunWriter(run_dir)
    writer.set_meta(name="rollup", status="running")
    steps = range(len(values)) if steps is None else steps
    for i, (step, value) in enumerate(zip(steps, values)):
        row = {name: value}
        if other and i % 3 == 0:
            row["lr"] = 0.1
        writer.add_scalars(step, row, time.time())
        if flush_every and (i + 1) % flush_every == 0:
            writer.flush()
    writer.flush()
    return writer


def noisy_series(n, seed=0):
    rng = np.random.default_rng(seed)
    values = np.exp(-np.arange(n) / (n / 3)) + rng.normal(0, 0.05, n)
    values[[17, 900, 901]] = [float("nan"), float("inf"), float("-inf")]
    values[2000] = 9.0  # a spike the display must keep
    values[2500] = -4.0
    return values.tolist()


def blocks_of(run_dir, name):
    conn = sqlite3.connect(run_dir / schema.DB_FILENAME)
    rows = conn.execute("SELECT block, n, first_step, last_step, ordered, bad, first_value, last_value, min_value,"
                        " min_step, max_value, max_step FROM scalar_blocks WHERE name = ? ORDER BY block",
                        (name,)).fetchall()
    conn.close()
    return rows


def test_blocks_summarise_each_block_of_records_exactly_and_the_partial_one_grows(tmp_path):
    values = noisy_series(3000)
    # Flushing every 100 records: the partial last block is rewritten at every commit.
    writer = write_series(tmp_path, values[:2900], flush_every=100)
    assert blocks_of(tmp_path, "train_loss")[-1][1] == 2900 % schema.SCALAR_BLOCK  # the partial last block
    for step in range(2900, 3000):
        writer.add_scalars(step, {"train_loss": values[step]}, time.time())
    writer.flush()
    writer.close()
    rows = blocks_of(tmp_path, "train_loss")
    assert [r[0] for r in rows] == list(range(math.ceil(3000 / schema.SCALAR_BLOCK)))
    for block, n, first, last, ordered, bad, first_v, last_v, lo, lo_step, hi, hi_step in rows:
        chunk = np.array(values[block * schema.SCALAR_BLOCK:(block + 1) * schema.SCALAR_BLOCK])
        steps = np.arange(block * schema.SCALAR_BLOCK, block * schema.SCALAR_BLOCK + len(chunk))
        finite = np.isfinite(chunk)
        assert (n, first, last, ordered) == (len(chunk), steps[0], steps[-1], 1)
        assert bad == int((~finite).sum())
        assert (lo, hi) == (chunk[finite].min(), chunk[finite].max())
        assert chunk[lo_step - steps[0]] == lo and chunk[hi_step - steps[0]] == hi
        assert (first_v, last_v) == (chunk[finite][0], chunk[finite][-1])
    assert sum(r[1] for r in blocks_of(tmp_path, "lr")) == math.ceil(2900 / 3)  # each series has its own blocks


@pytest.fixture
def long_run(tmp_path):
    values = noisy_series(3000)
    write_series(tmp_path, values).close()
    return tmp_path, np.array(values)


@pytest.mark.parametrize("step_range", [(None, None), (100, 2700), (1000, None), (333, 2999)])
def test_display_from_blocks_keeps_extremes_markers_and_counts_of_the_records(long_run, step_range):
    run_dir, values = long_run
    lo, hi = step_range
    with RunReader(run_dir) as reader:
        assert reader.scalar_blocks("train_loss", 0, lo, hi) is not None  # the roll-up path is taken
        # 3,000 points make ~46 blocks: with a budget of 60 points the blocks are used.
        steps, shown, bad, total = scalar_display(reader, "train_loss", lo, hi, max_points=60)
    all_steps = np.arange(len(values))
    inside = (all_steps >= (lo or 0)) & (all_steps <= (len(values) - 1 if hi is None else hi))
    ref_steps, ref_values = all_steps[inside], values[inside]
    finite = np.isfinite(ref_values)
    assert total == inside.sum()
    assert bad.tolist() == ref_steps[~finite].tolist()
    assert np.all(np.diff(steps) >= 0) and len(steps) <= 60 + 4
    assert np.array_equal(shown, values[steps])  # every shown point is a real record
    assert shown.min() == ref_values[finite].min() and shown.max() == ref_values[finite].max()
    assert steps[0] == ref_steps[finite][0] and steps[-1] == ref_steps[finite][-1]


def test_version_1_runs_and_out_of_order_steps_read_every_record(tmp_path):
    values = noisy_series(3000)
    old = tmp_path / "old"
    old.mkdir()
    write_series(old, values).close()
    conn = sqlite3.connect(old / schema.DB_FILENAME)
    conn.execute("DROP TABLE scalar_blocks")  # what a schema-1 writer left
    conn.commit()
    conn.close()
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    steps = list(range(3000))
    steps[500], steps[501] = steps[501], steps[500]  # one step logged out of order
    write_series(shuffled, values, steps=steps).close()
    for run_dir in (old, shuffled):
        with RunReader(run_dir) as reader:
            assert reader.scalar_blocks("train_loss", 0, None, None) is None
            _, shown, bad, total = scalar_display(reader, "train_loss", None, None, max_points=60)
        assert total == 3000 and len(bad) == 3
        assert shown.max() == 9.0 and shown.min() == -4.0


def test_a_step_logged_twice_is_shown_once_with_its_later_value(tmp_path):
    """A re-logged step marks its block unordered, so the display reads the records (the later one
    wins), as for a short series."""
    rng = np.random.default_rng(1)
    first = (1 + rng.random(3000)).tolist()
    first[1500] = 100.0  # overwritten below: must not show
    writer = RunWriter(tmp_path)
    writer.set_meta(name="relog", status="running")
    for step in range(3000):
        writer.add_scalars(step, {"train_loss": first[step]}, time.time())
        writer.add_scalars(step, {"train_loss": 0.5}, time.time())
    writer.flush()
    writer.close()
    with RunReader(tmp_path) as reader:
        assert reader.scalar_blocks("train_loss", 0, None, None) is None
        _, shown, _, total = scalar_display(reader, "train_loss", None, None, max_points=60)
    assert total == 3000 and shown.max() == 0.5


def test_short_series_are_not_drawn_coarser_than_their_records_allow(tmp_path):
    write_series(tmp_path, noisy_series(3000)).close()
    with RunReader(tmp_path) as reader:
        steps, _, _, _ = scalar_display(reader, "train_loss", None, None, max_points=2000)
    assert len(steps) > 1500  # every record read and downsampled, not 2 points per 64-record block


def test_a_failed_batch_leaves_no_trace_in_the_roll_up(tmp_path):
    from gradwatch.trainer.runlog.writer import LayerRecord

    writer = RunWriter(tmp_path)
    writer.set_meta(name="failing", status="running")
    for step in range(10):
        writer.add_scalars(step, {"train_loss": float(step)}, time.time())

    def broken():
        raise OSError("disk went away")

    writer.add_layer_record(LayerRecord(10, time.time(), None, resolve=broken))
    with pytest.raises(RuntimeError, match="disk went away"):
        writer.flush()  # the error reaches the waiter at once
    writer._error = None
    for step in range(10, 15):
        writer.add_scalars(step, {"train_loss": float(step)}, time.time())
    writer.flush()
    writer.close()
    rows = blocks_of(tmp_path, "train_loss")
    conn = sqlite3.connect(tmp_path / schema.DB_FILENAME)
    kept = conn.execute("SELECT COUNT(*), MIN(step), MIN(value) FROM scalars WHERE name = 'train_loss'").fetchone()
    conn.close()
    assert [(r[1], r[2], r[8]) for r in rows] == [(kept[0], kept[1], kept[2])]

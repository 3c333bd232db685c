"""The per-layer roll-up (schema 4): one row per logged step holding every layer's key statistics,
written beside the statistics rows; read back it equals derived.layer_table over those rows, and an
all-layers read never touches the per-tensor `stats` table."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from gradwatch.testing import make_run, stat_row
from gradwatch.trainer import derived
from gradwatch.trainer.runlog import RunLogError, RunReader, schema
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter


def tensor(i: int, layer: str, param: str, ord_: int) -> dict:
    return {"id": i, "name": f"{layer}.{param}", "layer": layer, "param": param, "role": "param",
            "module_type": "Linear", "shape": [4, 4], "numel": 16, "ord": ord_, "trainable": True}


def grad(norm, nan=0, inf=0):
    return stat_row(norm=norm, mean=0.0, std=norm / 4, min=-norm, max=norm, nan_count=nan, inf_count=inf)


def weight(norm, ratio):
    return stat_row(norm=norm, mean=0.1, std=norm / 4, min=-1.0, max=1.0, nan_count=0, inf_count=0,
                    update_ratio=ratio)


@pytest.fixture
def written(tmp_path):
    """Two layers, then a third one appears at step 2; step 3's gradient is NaN in one layer and
    1e50 (beyond float32) in another; step 1 is written twice (the later record wins)."""
    run = tmp_path / "roll"
    run.mkdir()
    writer = RunWriter(run)
    writer.set_meta(name="roll", status="running", started=time.time())
    writer.add_tensors([tensor(1, "a", "weight", 0), tensor(2, "a", "bias", 0), tensor(3, "b", "weight", 1)])
    for step, scale in ((0, 1.0), (1, 2.0), (1, 3.0)):
        writer.add_layer_record(LayerRecord(step, time.time(), None, rows=[
            (1, schema.KIND_GRAD, grad(0.3 * scale), None), (2, schema.KIND_GRAD, grad(0.4 * scale), None),
            (3, schema.KIND_GRAD, grad(1e-9 * scale), None), (1, schema.KIND_WEIGHT, weight(2.0, 1e-3), None),
            (3, schema.KIND_WEIGHT, weight(5.0, 2e-3), None)]))
    writer.add_tensors([tensor(4, "c", "weight", 2)])
    writer.add_layer_record(LayerRecord(2, time.time(), None, rows=[
        (1, schema.KIND_GRAD, grad(0.5), None), (4, schema.KIND_GRAD, grad(7.0), None)]))
    writer.add_layer_record(LayerRecord(3, time.time(), None, rows=[
        (1, schema.KIND_GRAD, grad(float("nan"), nan=3), None), (3, schema.KIND_GRAD, grad(1e50), None),
        (4, schema.KIND_GRAD, grad(2.0, inf=1), None)]))
    writer.flush()
    writer.close()
    return run


def test_the_roll_up_reads_as_layer_table_over_the_statistics_rows(written):
    with RunReader(written) as reader:
        assert reader.has_layer_rollup() and reader.rollup_layers() == ["a", "b", "c"]
        steps = reader.logged_steps()
        order = reader.forward_layers()
        stats = reader.stats_at_steps(steps)
        rolled = reader.rollup_at_steps(steps, order=order)
    # Step 1 was recorded twice: the statistics frame keeps both, the roll-up the later one.
    stats = stats.drop_duplicates(["step", "tensor_id", "kind"], keep="last")
    for field in schema.ROLLUP_FIELDS:
        expected = derived.layer_table(stats, field, order)
        if expected.empty:
            assert rolled[field].empty, field
        else:
            pd.testing.assert_frame_equal(rolled[field], expected, check_exact=True)
    norms = rolled["grad_norm"]
    assert np.isnan(norms.loc[3, "a"]) and norms.loc[3, "b"] == 1e50  # kept, not lost to float32
    assert norms.loc[1, "a"] == pytest.approx(np.hypot(0.9, 1.2))
    assert rolled["grad_nonfinite"].loc[3].tolist() == [3.0, 0.0, 1.0]
    assert list(rolled["update_ratio"].columns) == ["a", "b"]


def test_an_all_layers_read_is_one_row_per_step_and_never_reads_the_stats_table(tmp_path):
    run = make_run(tmp_path, "wide", steps=40, layers=30, every=2)
    with RunReader(run) as reader:
        (rows,), = reader._query("SELECT COUNT(*) FROM layer_rollup")
        assert rows == len(reader.logged_steps()) == 20
        statements = []
        reader._conn.set_trace_callback(statements.append)
        tables = reader.rollup_at_steps(reader.logged_steps()[::4], ("grad_norm", "weight_std"),
                                        reader.forward_layers())
        reader._conn.set_trace_callback(None)
    assert tables["grad_norm"].shape == (5, 30) and tables["weight_std"].shape == (5, 30)
    assert statements and not any("FROM stats" in s for s in statements)


def test_a_corrupt_roll_up_blob_is_a_one_line_run_error(written):
    conn = sqlite3.connect(written / schema.DB_FILENAME)
    conn.execute("UPDATE layer_rollup SET stats = x'0102' WHERE step = 2")
    conn.commit()
    conn.close()
    with RunReader(written) as reader:
        with pytest.raises(RunLogError, match=r"run 'roll': layer roll-up record \d+ at step 2: corrupt roll-up blob"):
            reader.rollup_at_steps([2])
        assert not reader.rollup_at_steps([0])["grad_norm"].empty  # the other steps still read


def test_encode_rollup_checks_its_shape():
    values = np.arange(len(schema.ROLLUP_FIELDS) * 3, dtype=float).reshape(-1, 3)
    assert np.array_equal(schema.decode_rollup(schema.encode_rollup(values), 3), values)
    with pytest.raises(ValueError, match="a roll-up has 9 rows"):
        schema.encode_rollup(np.zeros((2, 3)))

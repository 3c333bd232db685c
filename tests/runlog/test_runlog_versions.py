"""The stats field table (schema 3), the per-layer roll-up (schema 4) and older folders: a run rewritten
the way schema-1, 2 and 3 writers left it (no layer roll-up; schemas 1-2 with one overloaded `extra`
column; schema 1 also without scalar_blocks and the stats_hist index) reads exactly like the
schema-4 original, through the reader, the dashboard and the diagnosis."""

from __future__ import annotations

import shutil
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from gradwatch.dashboard.data import RunStore
from gradwatch.testing import make_run, stat_row
from gradwatch.trainer.diagnose import diagnose_run
from gradwatch.trainer.runlog import RunReader, schema
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter

# The stats table as schema 1 and 2 defined it (weights' update ratio and activations' saturated
# fraction shared `extra`).
OLD_STATS_DDL = """
CREATE TABLE stats (
    seq       INTEGER PRIMARY KEY,
    step      INTEGER NOT NULL,
    tensor_id INTEGER NOT NULL REFERENCES tensors(id),
    kind      INTEGER NOT NULL,
    norm REAL, mean REAL, std REAL, min REAL, max REAL,
    nan_count INTEGER, inf_count INTEGER,
    zero_frac REAL,
    extra     REAL,
    dead_frac REAL,
    hist      BLOB
);
"""
OLD_STATS_INDEXES = """
CREATE INDEX stats_tensor_step ON stats(tensor_id, kind, step);
CREATE INDEX stats_step ON stats(step);
"""


def downgrade(run_dir, version: int) -> None:
    """Rewrite a schema-4 folder in place as a schema-`version` writer would have left it."""
    conn = sqlite3.connect(run_dir / schema.DB_FILENAME)
    conn.executescript("DROP TABLE layer_rollup; DROP TABLE rollup_layers;")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.commit()
    if version == 3:
        conn.close()
        return
    conn.executescript(
        "ALTER TABLE stats RENAME TO stats_v3;"
        + OLD_STATS_DDL
        + "INSERT INTO stats SELECT seq, step, tensor_id, kind, norm, mean, std, min, max, nan_count, inf_count,"
        " zero_frac, COALESCE(update_ratio, saturated_frac), dead_frac, hist FROM stats_v3;"
        "DROP TABLE stats_v3;"
        + OLD_STATS_INDEXES
    )
    if version >= 2:
        conn.execute("CREATE INDEX stats_hist ON stats(tensor_id, kind, step) WHERE hist IS NOT NULL")
    else:
        conn.execute("DROP TABLE scalar_blocks")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same sigmoid run (saturated activations, update ratios) at schema 4, 3, 2 and 1."""
    root = tmp_path_factory.mktemp("versions")
    current = make_run(root, "v4", steps=120, pathology="vanishing", layers=4)
    out = {4: current}
    for version in (3, 2, 1):
        copy = root / f"v{version}"
        shutil.copytree(current, copy)
        downgrade(copy, version)
        out[version] = copy
    return out


def test_a_new_folder_has_the_field_tables_columns_in_order(runs):
    conn = sqlite3.connect(runs[4] / schema.DB_FILENAME)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(stats)")]
    conn.close()
    assert columns == ["seq", "step", "tensor_id", "kind", *schema.STAT_FIELDS, "hist"]
    assert "extra" not in columns and {"update_ratio", "saturated_frac"} <= set(columns)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_old_folders_read_like_the_new_one(runs, version):
    with RunReader(runs[4]) as new, RunReader(runs[version]) as old:
        assert old.schema_version == version and new.schema_version == schema.SCHEMA_VERSION
        new_stats, new_cursor = new.layer_stats()
        old_stats, old_cursor = old.layer_stats()
        pd.testing.assert_frame_equal(old_stats, new_stats)
        assert old_cursor == new_cursor
        # The overloaded column landed where its kind says, and nowhere else.
        weights = old_stats[old_stats["kind"] == "weight"]
        acts = old_stats[old_stats["kind"] == "activation"]
        assert weights["update_ratio"].notna().all() and weights["saturated_frac"].isna().all()
        assert acts["saturated_frac"].notna().all() and acts["update_ratio"].isna().all()
        assert old_stats.loc[old_stats["kind"] == "grad", ["update_ratio", "saturated_frac"]].isna().all().all()
        steps = [0, 50, 119]
        pd.testing.assert_frame_equal(old.stats_at_steps(steps), new.stats_at_steps(steps))
        pd.testing.assert_frame_equal(old.layer_values_at_steps(steps), new.layer_values_at_steps(steps))
        old_delta, _ = old.layer_values_after(0)
        new_delta, _ = new.layer_values_after(0)
        pd.testing.assert_frame_equal(old_delta, new_delta)
        old_steps, old_counts, _ = old.sampled_hists("net.0.weight", "grad", None, None, 30)
        new_steps, new_counts, _ = new.sampled_hists("net.0.weight", "grad", None, None, 30)
        assert np.array_equal(old_steps, new_steps) and np.array_equal(old_counts, new_counts)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_old_folders_chart_and_diagnose_the_same(runs, version, tmp_path):
    """Schema 4 draws from the layer roll-up, older folders from the statistics rows: the same tables."""
    store = RunStore(runs[4].parent)
    with RunReader(runs[4]) as new, RunReader(runs[version]) as old:
        assert new.has_layer_rollup() and not old.has_layer_rollup()
    quantities = ("grad_norm", "update_ratio", "saturated_frac", "dead_frac")
    new_view, old_view = store.layer_view("v4", quantities), store.layer_view(f"v{version}", quantities)
    for quantity, table in new_view["tables"].items():
        if table.empty:
            assert old_view["tables"][quantity].empty, quantity
            continue
        pd.testing.assert_frame_equal(old_view["tables"][quantity], table)
    assert not new_view["tables"]["saturated_frac"].empty and not new_view["tables"]["update_ratio"].empty
    for step in (None, 0, 57):
        assert store.gradient_flow(f"v{version}", step) == store.gradient_flow("v4", step)
    assert len(store.gradient_flow("v4", None)["layers"]) == 4
    new_epochs, old_epochs = store.weights_by_epoch("v4"), store.weights_by_epoch(f"v{version}")
    assert not new_epochs["mean"].empty
    for key in ("mean", "std"):
        pd.testing.assert_frame_equal(old_epochs[key], new_epochs[key])
    new_flags = [(f["rule"], f["layers"]) for f in diagnose_run(runs[4])["flags"]]
    old_flags = [(f["rule"], f["layers"]) for f in diagnose_run(runs[version])["flags"]]
    assert old_flags == new_flags and {"saturated_units", "vanishing_gradient"} <= {rule for rule, _ in new_flags}


def test_every_field_round_trips_by_name(tmp_path):
    """Each statistic written in the field table's order reads back under its own name."""
    writer = RunWriter(tmp_path)
    writer.add_tensors([dict(id=1, name="fc.weight", layer="fc", param="weight", role="param",
                             module_type="Linear", shape=[2, 2], numel=4, ord=0, trainable=True)])
    values = {name: float(i + 1) / 8 for i, name in enumerate(schema.STAT_FIELDS)}
    values.update(nan_count=3, inf_count=5)
    writer.add_layer_record(LayerRecord(7, time.time(), None, rows=[(1, schema.KIND_WEIGHT, stat_row(**values), None)]))
    writer.close()
    with RunReader(tmp_path) as reader:
        stats, _ = reader.layer_stats()
    row = stats.iloc[0]
    assert {name: row[name] for name in schema.STAT_FIELDS} == pytest.approx(values)
    with pytest.raises(ValueError, match="unknown statistics"):
        stat_row(extra=1.0)

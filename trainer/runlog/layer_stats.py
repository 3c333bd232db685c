"""Per-tensor statistics read by step: the rows a chart or a diagnosis needs, via the step index.

Mixed into RunReader. Every column list comes from schema.STAT_TABLE, so the SELECTs here, the
writer's INSERT and the frames handed out cannot disagree on order, and folders of older schema
versions read through the field table's `legacy` expressions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema, validate

# SQLite's default limit on bound parameters is 999; steps are bound in chunks below it.
_CHUNK = 900
# What the per-layer charts draw: a third of the statistics and no per-row strings.
LAYER_VALUE_FIELDS = ("norm", "update_ratio", "saturated_frac", "dead_frac")
LAYER_VALUE_COLUMNS = ("seq", "step", "tensor_id", "layer", "kind", *LAYER_VALUE_FIELDS)


def stats_frame(rows: list, *, by_step: bool = False) -> pd.DataFrame:
    """Rows in schema.STATS_FRAME_COLUMNS order -> a statistics frame (kind as its name, NULL as
    NaN); with by_step, sorted by step then arrival."""
    df = pd.DataFrame(rows, columns=list(schema.STATS_FRAME_COLUMNS))
    for column in schema.REAL_FIELDS:
        df[column] = df[column].astype(float)
    df["kind"] = df["kind"].map(schema.KIND_NAMES)
    if by_step:
        df = df.sort_values(["step", "seq"], kind="stable").reset_index(drop=True)
    return df


def step_chunks(steps) -> list[list[int]]:
    """Distinct steps, ascending, in chunks small enough to bind."""
    unique = [int(s) for s in np.unique(np.asarray(list(steps), dtype=np.int64))]
    return [unique[i:i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


class LayerStatsQueries:
    """Statistics rows at chosen steps (RunReader mixin: uses its _query and schema_version)."""

    def stats_select(self, table: str = "s") -> str:
        """SELECT ... FROM stats joined with tensors, giving schema.STATS_FRAME_COLUMNS."""
        return (f"SELECT {table}.seq, {table}.step, {table}.tensor_id, t.name, t.layer, t.param, {table}.kind, "
                f"{schema.stat_select_columns(self.schema_version, table)}"
                f" FROM stats {table} JOIN tensors t ON t.id = {table}.tensor_id")

    @validate.typed_records('stats')
    def stats_at_steps(self, steps, kinds: tuple[str, ...] | None = None) -> pd.DataFrame:
        """layer_stats() rows of the given steps only (any number of steps, via the step index),
        sorted by step."""
        kind_sql, kind_params = "", []
        if kinds:
            codes = [schema.KIND_CODES[k] for k in kinds]
            kind_sql = f" AND s.kind IN ({','.join('?' * len(codes))})"
            kind_params = codes
        rows = []
        for chunk in step_chunks(steps):
            rows += self._query(f"{self.stats_select()} WHERE s.step IN ({','.join('?' * len(chunk))}){kind_sql}",
                                chunk + kind_params)
        return stats_frame(rows, by_step=True)

    def _layer_value_sql(self) -> str:
        fields = schema.stat_select_columns(self.schema_version, names=LAYER_VALUE_FIELDS)
        return f"SELECT seq, step, tensor_id, kind, {fields} FROM stats"

    def layer_values_at_steps(self, steps) -> pd.DataFrame:
        """The columns per-layer charts need (LAYER_VALUE_COLUMNS) at the given steps: tensor ids are
        mapped to layers afterwards, ~3x faster than stats_at_steps on a cold 12,000-row read."""
        rows = []
        for chunk in step_chunks(steps):
            rows += self._query(f"{self._layer_value_sql()} WHERE step IN ({','.join('?' * len(chunk))})", chunk)
        return self._layer_values_frame(rows)

    def layer_values_after(self, after_seq: int) -> tuple[pd.DataFrame, int]:
        """layer_values_at_steps' columns for the statistics rows with seq > after_seq, and the new
        cursor (what the live poll extends the per-layer charts with)."""
        rows = self._query(f"{self._layer_value_sql()} WHERE seq > ? ORDER BY seq", (int(after_seq),))
        cursor = int(rows[-1][0]) if rows else int(after_seq)
        return self._layer_values_frame(rows), cursor

    def _layer_values_frame(self, rows: list) -> pd.DataFrame:
        if not rows:
            return pd.DataFrame(columns=list(LAYER_VALUE_COLUMNS))
        arr = np.array(rows, dtype=float)  # NULL -> NaN
        layers = dict(self._query("SELECT id, layer FROM tensors"))
        columns = {
            "seq": arr[:, 0].astype(np.int64), "step": arr[:, 1].astype(np.int64),
            "tensor_id": arr[:, 2].astype(np.int64),
            "layer": [layers.get(int(t), str(int(t))) for t in arr[:, 2]],
            "kind": pd.Series(arr[:, 3].astype(np.int64)).map(schema.KIND_NAMES).to_numpy(dtype=object),
        }
        columns.update({name: arr[:, 4 + i] for i, name in enumerate(LAYER_VALUE_FIELDS)})
        return pd.DataFrame(columns).sort_values(["step", "seq"], kind="stable").reset_index(drop=True)

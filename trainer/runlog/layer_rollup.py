"""The per-layer roll-up (schema 4): every layer's key statistics at a logged step in one row.

The writer side (`RollupWriter`) turns a logged step's statistics rows into one layer_rollup row with
trainer.derived.layer_table - the one place a layer's gradient norm, update ratio or weight spread is
computed - so a chart of all layers reads O(steps) rows instead of O(steps x tensors). The reader
side (`LayerRollupQueries`, mixed into RunReader) hands the rows back as the same step x layer tables.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd

from .. import derived
from . import schema, validate
from .layer_stats import step_chunks

# A NaN gradient norm is news (layer_table keeps it): whether a layer had gradient rows at a step is
# read from its NaN/Inf count, which is 0, not NaN, wherever it had any.
_PRESENCE = {"grad_norm": "grad_nonfinite", "grad_max_abs": "grad_nonfinite"}


def rollup_values(steps: np.ndarray, layers: np.ndarray, kinds: np.ndarray, params: np.ndarray,
                  stats: np.ndarray, slots: list[str]) -> list[tuple[int, np.ndarray]]:
    """[(step, [len(ROLLUP_FIELDS), len(slots)] array)] for each step of statistics rows (one entry
    per row; kinds by name; stats in STAT_FIELDS columns): each field as derived.layer_arrays
    computes it, NaN where it does not apply. Plain arrays, no frame: this runs on the writer
    thread for every logged step."""
    unique = np.unique(steps)
    out = np.full((len(unique), len(schema.ROLLUP_FIELDS), len(slots)), np.nan)
    slot_of = {layer: i for i, layer in enumerate(slots)}
    for i, field in enumerate(schema.ROLLUP_FIELDS):
        result = derived.layer_arrays(steps, layers, kinds, params, lambda name: stats[:, _FIELD_INDEX[name]],
                                      field, slots)
        if result is None:
            continue
        at, columns, table = result
        rows = np.searchsorted(unique, at)
        cols = np.asarray([slot_of[c] for c in columns], dtype=np.int64)
        out[rows[:, None], i, cols[None, :]] = table
    return list(zip(unique.tolist(), out))


_FIELD_INDEX = {name: j for j, name in enumerate(schema.STAT_FIELDS)}


class RollupWriter:
    """The writer thread's half: tensor -> layer names and the slot list, kept in step with the folder.

    Records are gathered over one writer transaction and rolled up together (`write_pending`, before
    the commit): derived.layer_table works on many steps at once, and its fixed cost per call (a few
    pandas operations per field) paid once per flush instead of once per logged step keeps the
    roll-up a small part of capture at every=1."""

    def __init__(self):
        self._tensors: dict[int, tuple[str, str]] = {}  # tensor id -> (layer, param)
        self._slots: list[str] | None = None
        self._pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def forget_tensors(self) -> None:
        """New tensors were written: the next roll-up reloads the names from the folder."""
        self._tensors = {}

    def write(self, conn: sqlite3.Connection, step: int, tensor_ids: np.ndarray, kinds: np.ndarray,
              stats: np.ndarray) -> None:
        """Queue one logged step's rows for the roll-up of this transaction. A step seen again
        (a record repeated at one step: the later one wins) first rolls up what is queued."""
        if any(queued == int(step) for queued, *_ in self._pending):
            self.write_pending(conn)
        self._pending.append((int(step), np.asarray(tensor_ids), np.asarray(kinds), np.asarray(stats)))

    def write_pending(self, conn: sqlite3.Connection) -> None:
        """Append the layer_rollup rows of the queued steps (inside the writer's open transaction)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._tensors:
            self._tensors = {int(i): (layer, param) for i, layer, param in
                             conn.execute("SELECT id, layer, param FROM tensors")}
        if self._slots is None:
            self._slots = [layer for (layer,) in conn.execute("SELECT layer FROM rollup_layers ORDER BY slot")]
        steps, names, kinds, stats = [], [], [], []
        for step, tensor_ids, step_kinds, step_stats in pending:
            known = np.fromiter((int(t) in self._tensors for t in tensor_ids), dtype=bool, count=len(tensor_ids))
            if not known.any():
                continue
            names += [self._tensors[int(t)] for t in tensor_ids[known]]
            steps.append(np.full(int(known.sum()), step, dtype=np.int64))
            kinds.append(step_kinds[known])
            stats.append(step_stats[known])
        if not steps:
            return
        layers = np.asarray([layer for layer, _ in names], dtype=object)
        known_slots = set(self._slots)
        new = [layer for layer in dict.fromkeys(layers.tolist()) if layer not in known_slots]
        if new:
            conn.executemany("INSERT INTO rollup_layers(slot, layer) VALUES (?, ?)",
                             [(len(self._slots) + i, layer) for i, layer in enumerate(new)])
            self._slots = self._slots + new
        kind_names = np.asarray([schema.KIND_NAMES.get(int(k)) for k in np.concatenate(kinds)], dtype=object)
        rolled = rollup_values(np.concatenate(steps), layers, kind_names,
                               np.asarray([param for _, param in names], dtype=object),
                               np.concatenate(stats).astype(float, copy=False), self._slots)
        conn.executemany("INSERT INTO layer_rollup(step, layers, stats) VALUES (?, ?, ?)",
                         [(step, len(self._slots), schema.encode_rollup(values)) for step, values in rolled])

    def rolled_back(self) -> None:
        """The transaction was discarded: slots it added and the records it held are gone too."""
        self._slots = None
        self._pending = []


class LayerRollupQueries:
    """Roll-up reads (RunReader mixin: uses its _query, schema_version and run_id)."""

    def has_layer_rollup(self) -> bool:
        """Whether this folder's roll-up covers every logged step (schema 4 on)."""
        return self.schema_version >= schema.ROLLUP_SINCE

    def forward_layers(self) -> list[str]:
        """Layer (module path) names in forward order, from the tensors table's names alone (no
        shapes decoded: what an all-layers chart needs to order its rows)."""
        return list(dict.fromkeys(layer for (layer,) in self._query("SELECT layer FROM tensors ORDER BY ord, id")))

    def rollup_layers(self) -> list[str]:
        """Layer names in slot order."""
        return [layer for (layer,) in self._query("SELECT layer FROM rollup_layers ORDER BY slot")]

    @validate.typed_records('layer_rollup')
    def rollup_at_steps(self, steps, fields: tuple[str, ...] = schema.ROLLUP_FIELDS,
                        order: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """{field: step x layer table} at the given logged steps (a later row for a step wins),
        columns in forward order `order` (then any other layer), as derived.layer_table gives them."""
        rows = []
        for chunk in step_chunks(steps):
            rows += self._query(f"SELECT seq, step, layers, stats FROM layer_rollup WHERE step IN "
                                f"({','.join('?' * len(chunk))}) ORDER BY step, seq", chunk)
        return self._rollup_tables(rows, fields, order)

    def rollup_after(self, after_seq: int, fields: tuple[str, ...] = schema.ROLLUP_FIELDS,
                     order: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """rollup_at_steps' tables of the layer_rollup rows with seq > after_seq."""
        rows = self._query("SELECT seq, step, layers, stats FROM layer_rollup WHERE seq > ? ORDER BY step, seq",
                           (int(after_seq),))
        return self._rollup_tables(rows, fields, order)

    def _rollup_tables(self, rows: list, fields: tuple[str, ...], order: list[str] | None) -> dict[str, pd.DataFrame]:
        unknown = [f for f in fields if f not in schema.ROLLUP_INDEX]
        if unknown:
            raise ValueError(f"unknown roll-up field(s) {unknown}; known: {', '.join(schema.ROLLUP_FIELDS)}")
        empty = {f: pd.DataFrame(index=pd.Index([], dtype=np.int64, name="step")) for f in fields}
        if not rows:
            return empty
        slots = self.rollup_layers()
        last = {}
        for seq, step, layers, blob in rows:  # a later row for a step wins
            last[int(step)] = (int(layers), blob, seq)
        steps = sorted(last)
        values = np.full((len(steps), len(schema.ROLLUP_FIELDS), len(slots)), np.nan)
        for i, step in enumerate(steps):
            layers, blob, seq = last[step]
            try:
                values[i, :, :layers] = schema.decode_rollup(blob, layers)
            except ValueError as exc:
                from .errors import RunLogError

                raise RunLogError(f"run {self.run_id!r}: layer roll-up record {seq} at step {step}: {exc}") from None
        slot_of = {layer: i for i, layer in enumerate(slots)}
        ordered = set(order or [])
        columns = [c for c in dict.fromkeys(order or []) if c in slot_of] + [c for c in slots if c not in ordered]
        picks = [slot_of[c] for c in columns]
        index = pd.Index(np.array(steps, dtype=np.int64), name="step")
        out = {}
        for field in fields:
            table = values[:, schema.ROLLUP_INDEX[field], :][:, picks]
            has = ~np.isnan(values[:, schema.ROLLUP_INDEX[_PRESENCE.get(field, field)], :][:, picks])
            keep_cols = has.any(axis=0)
            keep_rows = has.any(axis=1)
            # Like derived.layer_table: only the steps and layers that have values of the field.
            out[field] = pd.DataFrame(table[keep_rows][:, keep_cols], index=index[keep_rows],
                                      columns=[c for c, k in zip(columns, keep_cols) if k])
        return out

"""Histograms of one tensor over steps, sampled for a heatmap of bounded width.

Mixed into RunReader. Every lookup is an index range scan on stats(tensor_id, kind, step); rows
whose histogram was dropped under load (hist NULL) are skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import schema, validate
from .layer_stats import step_chunks
from .steps import step_range


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros((0, schema.HIST_LEN), dtype=np.int64)


class HistogramQueries:
    """Sampled histograms (RunReader mixin: uses its _query)."""

    def tensor_id(self, name: str) -> int | None:
        rows = self._query("SELECT id FROM tensors WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def sampled_hists(self, name: str, kind: str, step_min: int | None, step_max: int | None,
                      max_columns: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Histograms of one tensor at up to max_columns steps: the last stored histogram in each of
        max_columns equal step ranges (index range scans; dropped histograms are skipped), and
        whether they are a sample."""
        tensor = self.tensor_id(name)
        if tensor is None:
            return (*_empty(), False)
        code = schema.KIND_CODES[kind]
        (first, last, count), = self._query(
            "SELECT MIN(step), MAX(step), COUNT(*) FROM stats WHERE tensor_id = ? AND kind = ?"
            " AND step >= ? AND step <= ?",
            (tensor, code, -1 if step_min is None else int(step_min), 2**62 if step_max is None else int(step_max)))
        if first is None:
            return (*_empty(), False)
        if count <= max_columns:
            found, counts = self.hists_at_steps(name, kind, self.hist_steps(name, kind, first, last))
            return found, counts, False
        edges = np.linspace(first, last + 1, max_columns + 1).astype(np.int64)
        out_steps, blobs = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi <= lo:
                continue
            rows = self._query(
                "SELECT step, hist FROM stats WHERE tensor_id = ? AND kind = ? AND step >= ? AND step < ?"
                " AND hist IS NOT NULL ORDER BY step DESC, seq DESC LIMIT 1", (tensor, code, int(lo), int(hi)))
            if rows:
                out_steps.append(rows[0][0])
                blobs.append(rows[0][1])
        if not blobs:
            return (*_empty(), False)
        counts = np.stack([validate.decode_hist(b, f"{name} ({kind}) at step {s}", self.run_id)
                           for s, b in zip(out_steps, blobs)])
        return np.array(out_steps, dtype=np.int64), counts, True

    def hist_steps(self, name: str, kind: str, step_min: int | None, step_max: int | None) -> np.ndarray:
        """Steps at which `name` has a stored histogram of `kind` (dropped ones left out)."""
        range_sql, range_params = step_range("s.step", step_min, step_max)
        rows = self._query(
            "SELECT s.step FROM stats s JOIN tensors t ON t.id = s.tensor_id"
            f" WHERE t.name = ? AND s.kind = ? AND s.hist IS NOT NULL{range_sql} ORDER BY s.step",
            [name, schema.KIND_CODES[kind], *range_params])
        return np.unique(np.array([r[0] for r in rows], dtype=np.int64))

    def hists_at_steps(self, name: str, kind: str, steps) -> tuple[np.ndarray, np.ndarray]:
        """(steps, counts) of `name`'s stored histograms at the given steps; a later record for a step wins."""
        out_steps: list[int] = []
        blobs: list[Any] = []
        for chunk in step_chunks(steps):
            rows = self._query(
                "SELECT s.step, s.hist FROM stats s JOIN tensors t ON t.id = s.tensor_id"
                f" WHERE t.name = ? AND s.kind = ? AND s.hist IS NOT NULL AND s.step IN ({','.join('?' * len(chunk))})"
                " ORDER BY s.step, s.seq",
                [name, schema.KIND_CODES[kind], *chunk],
            )
            for step, blob in rows:
                if out_steps and out_steps[-1] == step:
                    blobs[-1] = blob  # a later record for a step wins
                else:
                    out_steps.append(step)
                    blobs.append(blob)
        if not blobs:
            return _empty()
        counts = np.stack([validate.decode_hist(b, f"{name} ({kind}) at step {s}", self.run_id)
                           for s, b in zip(out_steps, blobs)])
        return np.array(out_steps, dtype=np.int64), counts

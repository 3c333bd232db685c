"""Diagnosis during training: read only the new records, re-run the rules, report new findings."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from .data import LayerViews, RunData
from .engine import diagnose, resolve_rules
from .flags import SEVERITY_RANK, Flag
from .rule import Rule


class LiveDiagnoser:
    """The training loop calls `check(reader)` every K logged steps; it returns only new findings.

    Each call reads the records added since the previous call (by cursor) and extends per-layer
    tables and per-scalar series, so a call costs the rules' time plus the new rows, however long
    the run already is.

    A finding counts as raised before when earlier flags of the same rule, at the same or a higher
    severity, together covered all its layers: a vanishing gradient that spreads to another layer,
    or an exploding gradient that turns critical, is reported again; the same finding seen again at
    a later check is not. The trainer stores each
    returned flag with the step it was raised at (RunWriter.add_flag(step, flag.to_dict())).

    A failure inside the rules never stops training: the call warns once and returns []; the
    message stays in `last_error`.
    """

    def __init__(self, rules: Iterable[Rule | str] | None = None):
        self.rules = resolve_rules(rules)
        self.raised: list[Flag] = []
        self.last_error: str | None = None
        self._series: dict[str, pd.Series] = {}
        self._views = LayerViews.empty()
        self._scalar_cursor = 0
        self._stats_cursor = 0

    def check(self, reader) -> list[Flag]:
        """New flags for the run that `reader` (a RunReader kept open by the trainer) reads."""
        try:
            data = self._read_new(reader)
            return self._new_flags(diagnose(data, self.rules))
        except Exception as exc:  # diagnosis must never stop training
            if self.last_error is None:
                warnings.warn(f"gradwatch live diagnosis failed and is skipped: {exc}", RuntimeWarning, stacklevel=2)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return []

    def check_data(self, data: RunData) -> list[Flag]:
        """New flags for a RunData built elsewhere (tests, replays)."""
        return self._new_flags(diagnose(data, self.rules))

    # ---- internals -------------------------------------------------------------------------
    def _read_new(self, reader) -> RunData:
        scalars, self._scalar_cursor = reader.scalars(after_seq=self._scalar_cursor)
        for name, group in scalars.groupby("name", sort=False):
            new = pd.Series(group["value"].to_numpy(dtype=float), index=group["step"].to_numpy(dtype=np.int64))
            old = self._series.get(name)
            series = new if old is None else pd.concat([old, new])
            series = series[~series.index.duplicated(keep="last")].sort_index()
            series.index.name = "step"
            self._series[name] = series
        stats, self._stats_cursor = reader.layer_stats(after_seq=self._stats_cursor)
        tensors = reader.tensors()
        if len(stats):
            order = list(dict.fromkeys(tensors["layer"]))
            self._views = self._views.extend(LayerViews.from_stats(stats, order), order)
        return RunData(
            None, None, tensors, dict(reader.meta), reader.run_id, views=self._views, scalar_series=dict(self._series)
        )

    def _new_flags(self, flags: list[Flag]) -> list[Flag]:
        fresh = []
        for flag in flags:
            earlier = [
                old for old in self.raised
                if old.rule == flag.rule and SEVERITY_RANK[old.severity] <= SEVERITY_RANK[flag.severity]
            ]
            covered = set().union(*(old.layers for old in earlier))
            if earlier and set(flag.layers) <= covered:
                continue
            fresh.append(flag)
            self.raised.append(flag)
        return fresh

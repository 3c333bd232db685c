"""The Run page's live updates: the poll, its extendData payloads and the header's running duration.

Live protocol (see docs/dashboard.md): each live chart (views/run_charts.py: its channel) has a
store holding the cursor its figure was built at, a revision token and the figure's trace keys. A
poll computes "records after that cursor" as extendData payloads tagged with the cursor and revision
they extend; a clientside callback applies a payload only if the store still holds that cursor and
revision, then advances it. A repeated or overlapping tick therefore returns the same
payload for the same cursor and is applied at most once: no point is duplicated or dropped.
"""

from __future__ import annotations

import time

import numpy as np

from .. import components, figures
from ..data import RunLogError, RunStore, run_identity
from ..figures import scalar_group
from .run_charts import BY_ID, LAYER_QUANTITIES

# A chart is redrawn (downsampled again) once this many points were appended to it live.
APPEND_LIMIT = {"scalars": 8000, "layers": 12000, "hist": 300}
REDRAW_TICKS = 5  # the downsampled all-layers heatmaps: redrawn every N slow ticks while stats arrive
FLAGS_REFRESH_TICKS = 40  # running runs: re-diagnose (cached for 10 s) every N polls
IDLE_CHECK_TICKS = 20  # a poll that finds the files unchanged still reads the status every N ticks


# ---- live polling ----------------------------------------------------------------------------------
def _extend_payload(columns: dict[int, tuple[list, list]]) -> list | None:
    """{trace index: (x, y)} -> [data, indices] for dcc.Graph.extendData."""
    if not columns:
        return None
    indices = sorted(columns)
    return [{"x": [columns[i][0] for i in indices], "y": [columns[i][1] for i in indices]}, indices]


def scalar_extend(rows: dict, keys: list, chart_groups: tuple[str, ...]) -> tuple[list | None, bool, int]:
    """One chart's extendData payload for new scalar rows {name: (steps, values)} of its groups;
    reset=True when it must be redrawn (a new scalar name, or NaN/Inf values that need markers)."""
    cols: dict[int, tuple[list, list]] = {}
    reset, added = False, 0
    for name, (steps, values) in rows.items():
        if scalar_group(name) not in chart_groups:
            continue
        key = f"scalar:{name}"
        if scalar_group(name) is None and key not in keys:
            continue  # a hidden scalar a chart reads but does not draw (the loss chart's epoch)
        values = np.asarray(values, dtype=float)
        if key not in keys or not np.all(np.isfinite(values)):
            reset = True
            continue
        cols[keys.index(key)] = ([int(s) for s in steps], [float(v) for v in values])
        added += len(values)
    return _extend_payload(cols), reset, added


def _rows_by_name(rows, after: int) -> dict:
    """{name: (steps, values)} of the rows after `after` (a frame or numpy columns seq, step, name,
    value), names in first-seen order (numpy masks over a handful of names: a pandas groupby costs
    more than the rest of a live poll)."""
    newer = np.asarray(rows["seq"]) > after
    names = np.asarray(rows["name"], dtype=object)[newer]
    steps = np.asarray(rows["step"], dtype=np.int64)[newer]
    values = np.asarray(rows["value"], dtype=float)[newer]
    out = {}
    for name in dict.fromkeys(names.tolist()):
        mask = names == name
        out[str(name)] = (steps[mask], values[mask])
    return out


def layer_extend(tables: dict, keys: list, plan: tuple) -> tuple[list | None, bool, int]:
    """One chart's extendData payload for new per-layer rows: the traces it draws get their new
    points, layers it does not draw (a big model's chart draws a chosen few) are skipped;
    reset=True when it draws no layer yet (it was drawn before the first statistics)."""
    cols: dict[int, tuple[list, list]] = {}
    reset, added = False, 0
    for quantity, prefix, log_axis in plan:
        table = tables.get(quantity)
        if table is None or table.empty:
            continue
        if not any(str(k).startswith(f"{prefix}:") for k in keys if k):
            reset = True
            continue
        steps = table.index.to_numpy()
        for layer in table.columns:
            key = f"{prefix}:{layer}"
            if key not in keys:
                continue
            values = table[layer].to_numpy(dtype=float)
            present = np.isfinite(values) & ((values > 0) if log_axis else True)
            if not present.any():
                continue
            cols[keys.index(key)] = ([int(s) for s in steps[present]], [float(v) for v in values[present]])
            added += int(present.sum())
    return _extend_payload(cols), reset, added


def hist_extend(steps, counts, keys: list, band: tuple[int, int] | list | None) -> tuple[list | None, bool]:
    """extendData for new heatmap columns (rows of the bins in `band`); reset=True when the chart has
    no heatmap yet or a new histogram has counts outside the band the chart shows."""
    if len(steps) == 0:
        return None, False
    if "hist" not in keys or not band:
        return None, True
    lo, hi = int(band[0]), int(band[1])
    counts = np.asarray(counts)
    if counts[:, :lo].any() or counts[:, hi + 1:].any():
        return None, True
    index = keys.index("hist")
    return [{"x": [[int(s) for s in steps]], "z": [figures.hist_rows(counts[:, lo:hi + 1])]}, [index]], False


def _shared(store: RunStore, key: tuple, compute):
    """compute() once for every viewer asking with the same key (RunStore.shared); a key a crafted
    request made unhashable is computed for that request alone."""
    try:
        hash(key)
    except TypeError:
        return compute()
    return store.shared.get(key, compute)


def poll_impl(store: RunStore, run_id: str, live: dict | None, meta: dict | None, slow_every: int = 1) -> dict:
    """One live tick over the page's charts. live: {chart id: its channel store}. Returns
    {"delta": {chart id: payload tagged with the cursor/revision it extends}, "refresh": chart ids to
    redraw (plus "flags", "notes"), "meta": the run's status and extent}.

    Scalar charts (the loss curve: what a viewer watches) update every tick; the heavier per-layer
    charts, heatmaps and histograms every `slow_every`-th tick (about once a second), the downsampled
    all-layers heatmaps every REDRAW_TICKS-th of those, so the browser is not redrawing twenty charts
    four times a second."""

    meta = dict(meta or {})
    out = {"delta": {}, "refresh": set(), "meta": meta}
    ticks = int(meta.get("ticks", 0)) + 1
    slow = ticks % max(1, slow_every) == 0
    try:
        # The change check: two stat() calls. Unchanged files mean nothing new, so no query is run;
        # every IDLE_CHECK_TICKS-th tick still reads the status (a writer can die without writing).
        ident = list(run_identity(store.run_dir(run_id)))
    except RunLogError:
        ident = None
    if ident is not None and meta.get("ident") == ident and ticks % IDLE_CHECK_TICKS != 0:
        out["meta"] = dict(meta, ticks=ticks)
        return out
    try:
        head = store.live_head(run_id, ident)  # one read per change for all of this process's viewers
    except RunLogError:
        out["meta"] = dict(meta, status="missing", running=False)
        return out
    status, cursors, last_logged = head["status"], head["cursors"], head["last_logged"]
    states = {chart_id: state for chart_id, state in (live or {}).items()
              if chart_id in BY_ID and state and state.get("run") == run_id and state.get("range_to") is None}
    by_channel: dict[str, dict] = {}
    for chart_id, state in states.items():
        by_channel.setdefault(BY_ID[chart_id].channel, {})[chart_id] = state

    def emit(chart_id, state, payload, to, added, reset):
        if reset or state.get("appended", 0) + added > APPEND_LIMIT[BY_ID[chart_id].channel]:
            out["refresh"].add(chart_id)
        else:
            out["delta"][chart_id] = {"base": state.get("cursor"), "rev": state.get("rev"), "to": to,
                                      "extend": payload, "added": added}

    scalar_states = {c: s for c, s in by_channel.get("scalars", {}).items() if cursors["scalars"] > s.get("cursor", 0)}
    if scalar_states:
        delta = store.shared_scalar_delta(run_id, min(s.get("cursor", 0) for s in scalar_states.values()), head)
        for chart_id, state in scalar_states.items():
            if delta["reset"]:
                out["refresh"].add(chart_id)
                continue
            after, keys = state.get("cursor", 0), state.get("keys") or []

            def scalar_payload(after=after, keys=keys, chart_id=chart_id):
                rows = _rows_by_name(delta["rows"], after)
                return (*scalar_extend(rows, keys, BY_ID[chart_id].scalar_groups), "epoch" in rows)

            # Rows after `after` up to the delta's cursor: the same for every viewer at that point.
            payload, reset, added, new_epoch = _shared(
                store, ("scalar-extend", run_id, chart_id, after, delta["cursor"], tuple(keys)), scalar_payload)
            emit(chart_id, state, payload, delta["cursor"], added, reset)
            if new_epoch:
                meta["epochs_pending"] = True
    if slow:
        layer_deltas: dict[int, dict] = {}
        for chart_id, state in by_channel.get("layers", {}).items():
            if cursors["stats"] <= state.get("cursor", 0):
                continue
            cursor = int(state["cursor"])
            if cursor not in layer_deltas:
                layer_deltas[cursor] = store.shared_layer_delta(run_id, cursor, head, LAYER_QUANTITIES)
            delta = layer_deltas[cursor]
            keys = state.get("keys") or []
            payload, reset, added = _shared(
                store, ("layer-extend", run_id, chart_id, cursor, delta["cursor"], tuple(keys)),
                lambda delta=delta, keys=keys, chart_id=chart_id: layer_extend(delta["tables"], keys,
                                                                            BY_ID[chart_id].layer_extend))
            emit(chart_id, state, payload, delta["cursor"], added, reset or delta["reset"])
        for chart_id, state in by_channel.get("hist", {}).items():
            after = state.get("cursor", -1)
            if not state.get("tensor") or last_logged is None or last_logged <= after:
                continue
            delta = store.shared_histogram_delta(run_id, state["tensor"], state["kind"], after, head)
            payload, reset = hist_extend(delta["steps"], delta["counts"], state.get("keys") or [], state.get("band"))
            if payload or reset or delta["reset"]:
                to = int(delta["steps"][-1]) if len(delta["steps"]) else after
                emit(chart_id, state, payload, to, len(delta["steps"]), reset or delta["reset"])
        if (ticks // max(1, slow_every)) % REDRAW_TICKS == 0:
            for chart_id, state in by_channel.get("redraw", {}).items():
                if cursors["stats"] > state.get("cursor", 0):
                    out["refresh"].add(chart_id)
        if meta.pop("epochs_pending", False):
            out["refresh"].update(chart.id for chart in BY_ID.values() if chart.channel == "epochs")
    if cursors["flags"] != meta.get("flags_cursor") or (status == "running" and ticks % FLAGS_REFRESH_TICKS == 0) \
            or status != meta.get("status"):
        out["refresh"].add("flags")
    if cursors["notes"] != meta.get("notes_cursor"):
        out["refresh"].add("notes")
    shown_last = last_logged if slow or meta.get("last_logged") is None else meta.get("last_logged")
    out["meta"] = dict(meta, status=status, running=status == "running", last_logged=shown_last, ticks=ticks,
                       flags_cursor=cursors["flags"], notes_cursor=cursors["notes"],
                       ident=ident if slow else meta.get("ident"))
    return out


def live_duration(started, live: bool, now: float | None = None) -> str | None:
    """The Run page header's duration text while the run is live (None: leave it as it is)."""
    if not live or isinstance(started, bool) or not isinstance(started, (int, float)):
        return None
    return components.fmt_duration(max(0.0, (time.time() if now is None else now) - float(started)))

"""The Run page's logic: URL state, the view reducer, figure builds and the live-update protocol.

Live protocol (see docs/dashboard.md): each live chart (views/run_charts.py: its channel) has a
store holding the cursor its figure was built at, a revision token and the figure's trace keys. A
poll computes "records after that cursor" as extendData payloads tagged with the cursor and revision
they extend; a clientside callback applies a payload only if the store still holds that cursor and
revision, then advances it. A repeated or overlapping tick therefore returns the same
payload for the same cursor and is applied at most once: no point is duplicated or dropped.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlencode

import numpy as np

from gradwatch.trainer.runlog.validate import clamp_step

from .. import components, figures
from ..data import RunLogError, RunStore, run_identity
from ..figures import scalar_group

LAYER_PATTERN = re.compile(r"^[\w.\-:/\[\] ]{1,200}$")
ROW_FILTER_PATTERN = re.compile(r"^[\w.\-:/\[\]*?, ]{1,200}$")
# A chart is redrawn (downsampled again) once this many points were appended to it live.
APPEND_LIMIT = {"scalars": 8000, "layers": 12000, "hist": 300}
REDRAW_TICKS = 5  # the downsampled all-layers heatmaps: redrawn every N slow ticks while stats arrive
FLAGS_REFRESH_TICKS = 40  # running runs: re-diagnose (cached for 10 s) every N polls
IDLE_CHECK_TICKS = 20  # a poll that finds the files unchanged still reads the status every N ticks


@dataclass
class RunView:
    """What a Run page shows; the URL query string carries it (run, layer, param, step, from, to)."""

    run: str = ""
    layer: str | None = None
    param: str | None = None
    step: int | None = None
    follow: bool = True
    range_from: int | None = None
    range_to: int | None = None
    row_filter: str = ""  # per-layer charts: layer name filter (substring or glob)
    collapse: bool | None = None  # per-layer charts: group repeated blocks (None: when there are many)

    def as_dict(self) -> dict:
        return asdict(self)


def _int_or_none(value) -> int | None:
    """A step from a URL, a form or a callback: an int clamped to 0..MAX_STEP, None if no number
    (`1e400` and `99999999999999999999` mean "the end", never an OverflowError)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and value < 0:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return None
    return clamp_step(value)


def step_bounds(rng: dict | None) -> tuple[int | None, int | None]:
    """(from, to) of a step-range store, each sanitised (a crafted callback may send anything)."""
    rng = rng if isinstance(rng, dict) else {}
    lo, hi = _int_or_none(rng.get("from")), _int_or_none(rng.get("to"))
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo
    return lo, hi


def step_selection(value) -> dict:
    """A step-selection store ({"step", "follow", "latest"}) sanitised: a crafted callback may send
    NaN, inf, 2**70, strings or dicts; every step comes back an int in [0, 2**62] or None."""
    value = value if isinstance(value, dict) else {}
    return {"step": _int_or_none(value.get("step")), "follow": value.get("follow") is True,
            "latest": _int_or_none(value.get("latest"))}


def parse_run_query(query: dict) -> RunView:
    """The view from URL query values; malformed values are ignored (the page then shows defaults)."""
    layer = query.get("layer")
    layer = layer if isinstance(layer, str) and LAYER_PATTERN.match(layer) else None
    param = query.get("param")
    param = param if isinstance(param, str) and re.match(r"^[\w.\-]{1,100}$", param) else None
    step = _int_or_none(query.get("step"))
    lo, hi = _int_or_none(query.get("from")), _int_or_none(query.get("to"))
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo
    row_filter = query.get("filter")
    row_filter = row_filter if isinstance(row_filter, str) and ROW_FILTER_PATTERN.match(row_filter) else ""
    collapse = {"1": True, "0": False}.get(str(query.get("group")))
    return RunView(run=str(query.get("run") or ""), layer=layer, param=param, step=step, follow=step is None,
                   range_from=lo, range_to=hi, row_filter=row_filter, collapse=collapse)


def view_query_string(run_id: str, layer: dict | None, step: dict | None, rng: dict | None,
                      rows: dict | None = None) -> str:
    """'?run=..&layer=..&step=..&from=..&to=..&filter=..&group=..' for the stores' current values
    (omitting defaults)."""
    items = [("run", run_id)]
    if layer and layer.get("layer"):
        items.append(("layer", layer["layer"]))
        if layer.get("param"):
            items.append(("param", layer["param"]))
    # Store values may come from a crafted request: sanitised like every other step bound.
    step_value = _int_or_none(step.get("step")) if isinstance(step, dict) and not step.get("follow") else None
    if step_value is not None:
        items.append(("step", step_value))
    lo, hi = step_bounds(rng)
    if lo is not None and hi is not None:
        items += [("from", lo), ("to", hi)]
    if rows and rows.get("filter"):
        items.append(("filter", rows["filter"]))
    if rows and rows.get("collapse") is not None:
        items.append(("group", int(bool(rows["collapse"]))))
    return "?" + urlencode(items)


# ---- page --------------------------------------------------------------------------------------------
def run_page_impl(store: RunStore, view: RunView) -> dict:
    """Run info and the normalised view; {"error": message} for a bad or unreadable run id."""
    try:
        info = store.run_info(view.run)
    except RunLogError as exc:
        return {"error": str(exc), "info": None, "view": view}
    layers = info["layers"]
    if view.layer and view.layer not in layers:
        view.layer = None
    if view.layer is None and info["param_layers"]:
        view.layer = info["param_layers"][0]
    params = layer_params(info, view.layer)
    if view.param not in params:
        view.param = "weight" if "weight" in params else (params[0] if params else None)
    if view.step is not None and info["last_logged_step"] is not None:
        view.step = min(view.step, info["last_logged_step"])
    if info["status"] != "running" and view.step is None:
        view.follow = True  # "latest" of a finished run: its last logged step
    return {"error": None, "info": info, "view": view}


def layer_params(info: dict, layer: str | None) -> list[str]:
    """The parameters with histograms that the heatmaps can show for `layer`: its own, or for a module
    without parameters (an activation) those of the closest preceding layer that has some."""
    tensors = info.get("tensors") or []
    own = [t["param"] for t in tensors if t["layer"] == layer and t["role"] == "param"]
    if own:
        return own
    return [t["param"] for t in tensors if t["layer"] == histogram_layer(info, layer) and t["role"] == "param"]


def histogram_layer(info: dict, layer: str | None) -> str | None:
    param_layers = info.get("param_layers") or []
    if layer in param_layers or not param_layers:
        return layer if layer in param_layers else None
    order = info.get("layers") or []
    if layer not in order:
        return param_layers[0]
    position = order.index(layer)
    before = [p for p in param_layers if order.index(p) < position] if all(p in order for p in param_layers) else []
    return before[-1] if before else param_layers[0]


def layer_options(info: dict) -> list[dict]:
    types = {}
    for t in info.get("tensors") or []:
        types.setdefault(t["layer"], t["module_type"])
    return [{"label": f"{layer} ({types.get(layer, '')})", "value": layer} for layer in info.get("layers") or []]


def slider_marks(first: int | None, last: int | None, count: int = 5) -> dict:
    if first is None or last is None:
        return {}
    if last <= first:
        return {str(first): str(first)}
    return {str(int(v)): f"{int(v):,}" for v in np.unique(np.linspace(first, last, count).round())}


# ---- the view reducer ------------------------------------------------------------------------------
def parse_relayout(relayout: dict | None) -> tuple[str, tuple | None] | None:
    """A chart zoom -> ("range", (lo, hi)); a reset -> ("reset", None); anything else -> None."""
    if not relayout:
        return None
    lo = hi = None
    for key, value in relayout.items():
        if re.fullmatch(r"xaxis\d*\.range\[0\]", key):
            lo = value
        elif re.fullmatch(r"xaxis\d*\.range\[1\]", key):
            hi = value
        elif re.fullmatch(r"xaxis\d*\.range", key) and isinstance(value, (list, tuple)) and len(value) == 2:
            lo, hi = value
        elif re.fullmatch(r"xaxis\d*\.autorange", key) and value:
            return ("reset", None)
    if lo is None or hi is None:
        return None
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    lo, hi = sorted((lo, hi))
    return ("range", (max(0, math.floor(lo)), max(0, math.ceil(hi))))


def flag_focus(flag: dict, first_step: int | None, last_step: int | None) -> dict:
    """Where a flag points: its first layer, its first step, and a range around its steps."""
    layers = flag.get("layers") or []
    start, end = flag.get("first_step"), flag.get("last_step")
    focus = {"layer": layers[0] if layers else None, "step": start, "from": None, "to": None}
    if start is not None:
        end = end if end is not None else start
        span = max(end - start, 1)
        pad = max(int(span * 0.25), 5)
        lo = max(start - pad, first_step or 0)
        hi = end + pad if last_step is None else min(end + pad, last_step)
        focus.update({"from": int(lo), "to": int(max(hi, lo + 1))})
    return focus


def reduce_view(state: dict, event: str, value, *, flags: list | None = None, info: dict | None = None,
                slider_max: int | None = None) -> dict:
    """The next view after one UI event. state/result: {"layer", "param", "step", "follow", "from", "to",
    "filter", "collapse", "flag"}. Events: layer, param, step, follow, from, to, range-reset, zoom,
    filter, collapse, flag."""
    view = dict(state)
    info = info or {}
    if event == "layer" and value:
        view["layer"] = value
        params = layer_params(info, value)
        if view.get("param") not in params:
            view["param"] = "weight" if "weight" in params else (params[0] if params else None)
    elif event == "param" and value:
        view["param"] = value
    elif event == "step" and _int_or_none(value) is not None:
        value = _int_or_none(value)
        slider_max = _int_or_none(slider_max)
        at_end = slider_max is not None and value >= slider_max
        view["follow"] = bool(at_end)
        view["step"] = None if at_end else value
    elif event == "follow":
        view["follow"] = bool(value)
        if view["follow"]:
            view["step"] = None
        elif view.get("step") is None:
            view["step"] = slider_max
    elif event in ("from", "to"):
        number = _int_or_none(value)
        view["from" if event == "from" else "to"] = number
        if view.get("from") is not None and view.get("to") is not None and view["to"] < view["from"]:
            view["from"], view["to"] = view["to"], view["from"]
    elif event == "range-reset":
        view["from"] = view["to"] = None
    elif event == "filter":
        text = str(value or "").strip()
        view["filter"] = text if not text or ROW_FILTER_PATTERN.match(text) else view.get("filter", "")
    elif event == "collapse":
        view["collapse"] = None if value is None else bool(value)
    elif event == "zoom":
        parsed = parse_relayout(value)
        if parsed is None:
            return view
        kind, rng = parsed
        view["from"], view["to"] = (None, None) if kind == "reset" else rng
    elif event == "flag" and flags is not None and value is not None and 0 <= value < len(flags):
        focus = flag_focus(flags[value], info.get("first_step"), info.get("last_logged_step"))
        if focus["layer"] and focus["layer"] in (info.get("layers") or [focus["layer"]]):
            view = reduce_view(view, "layer", focus["layer"], info=info)
        if focus["step"] is not None:
            view["step"], view["follow"] = int(focus["step"]), False
        view["from"], view["to"] = focus["from"], focus["to"]
        view["flag"] = value
    return view


# ---- flags and overfitting marks ------------------------------------------------------------------
def overfitting_marks(flags: list[dict] | None) -> dict | None:
    """Best epoch and overfitting stretch from the overfitting flag's evidence (keys read defensively)."""
    for flag in flags or []:
        if flag.get("rule") != "overfitting":
            continue
        evidence = flag.get("evidence") or {}
        best = evidence.get("best_step", evidence.get("onset_step", flag.get("first_step")))
        onset = evidence.get("rising_since_step") or evidence.get("onset_step") or flag.get("first_step")
        return {"best_step": best, "best_epoch": evidence.get("best_epoch"), "onset_step": onset,
                "last_step": flag.get("last_step") or evidence.get("last_step")}
    return None


def flags_impl(store: RunStore, run_id: str, wait: bool = True) -> dict:
    """The flags panel's data; with wait=False a large run's diagnosis runs in the background and
    "pending" says to ask again."""
    result = store.flags(run_id, wait=wait)
    return {"flags": result["flags"], "note": result.get("note"), "error": result.get("error"),
            "pending": bool(result.get("pending"))}


def add_note_impl(store: RunStore, *, read_only: bool, run_id: str, text: str | None, author: str | None,
                  step, layer: str | None) -> dict:
    """Store a team note; {"ok", "message"} with the refusal or validation message on failure."""
    if read_only:
        return {"ok": False, "message": "This dashboard is read-only: notes cannot be added."}
    step_value = _int_or_none(step)
    if step not in (None, "") and step_value is None:
        return {"ok": False, "message": f"step must be a non-negative integer, got {step!r}"}
    try:
        seq = store.add_note(run_id, text or "", author=(author or "").strip() or "anonymous", step=step_value,
                             layer=(layer or None))
    except (ValueError, RunLogError) as exc:
        return {"ok": False, "message": str(exc)}
    return {"ok": True, "message": "Note added.", "seq": seq}


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
    from .run_charts import BY_ID

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
                layer_deltas[cursor] = store.shared_layer_delta(run_id, cursor, head)
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

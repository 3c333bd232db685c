"""Run page (/run?run=ID&layer=..&param=..&step=..&from=..&to=..): one run, live while it is written.

Layout and thin callbacks only; the logic is in dashboard.views.run (unit-tested without a server).
"""

from __future__ import annotations

import dash
from dash import ALL, ClientsideFunction, Input, Output, Patch, State, dcc, html, no_update

from .. import components, figures, ids
from ..context import AppContext
from ..data import RunLogError, capture_label, config_summary, dataset_label, duration_s
from ..layer_groups import should_collapse
from ..views import run as logic
from ..views.run_charts import CHARTS, LIVE_CHARTS, ChartArgs, render

PATH = "/run"
STEP_CHARTS = tuple(chart for chart in CHARTS if chart.step_axis)
# Where each declared input of a chart comes from (views/run_charts.Chart.inputs).
CHART_INPUTS = {"range": ids.SEL_RANGE, "layer": ids.SEL_LAYER, "step": ids.SEL_STEP, "rows": ids.SEL_ROWS,
                "flags": ids.FLAGS_DATA}


def chart_args(run_id: str, values: dict, notes=None, shape=None, info=None) -> ChartArgs:
    """ChartArgs from the page's store values (any may be missing: defaults)."""
    rng, layer = values.get("range") or {}, values.get("layer") or {}
    layer = layer if isinstance(layer, dict) else {}
    rows = values.get("rows") if isinstance(values.get("rows"), dict) else {}
    flags = values.get("flags")
    range_from, range_to = logic.step_bounds(rng)  # a crafted callback may send any value
    return ChartArgs(run_id=run_id, range_from=range_from, range_to=range_to, layer=layer.get("layer"),
                     param=layer.get("param"), step=logic.step_selection(values.get("step")), row_filter=rows.get("filter") or "",
                     collapse=rows.get("collapse"), notes=tuple(notes or ()),
                     flags=tuple(flags if isinstance(flags, list) else ()), shape=shape or {}, info=info or {})


def _run_shape(info: dict) -> dict:
    return {"layers": len(info["layers"]),
            "activations": sum(1 for t in info["tensors"] if t["role"] != "param"),
            "running": info["status"] == "running"}


def _browser_info(info: dict) -> dict:
    """What the page's callbacks need of the run's tensors (layer_params: each parameter's layer and
    name), not every tensor's shape, type and size: this store travels with every view change."""
    out = {k: info[k] for k in ("run_id", "layers", "param_layers", "first_step", "last_logged_step")}
    out["tensors"] = [{"layer": t["layer"], "param": t["param"], "role": t["role"]}
                      for t in info["tensors"] if t["role"] == "param"]
    return out


def _chart_card(chart, figure=None, *, hidden: bool = False, wide: bool = False):
    graph = components.graph(chart.id, figure)
    if chart.first_paint:
        graph.className = "chart first-paint"
    classes = " ".join(c for c in ("wide" if chart.wide or wide else "", "scroll-card" if chart.scroll else "") if c)
    # A hidden card keeps its graph in the page: its callbacks and live store stay wired.
    return components.card(None, graph, class_name=classes, hidden=hidden)


def _nothing_to_show(drawn: dict, chart_id: str) -> bool:
    """A first-paint chart drawn as the empty placeholder ("no accuracy logged yet")."""
    figure = (drawn.get(chart_id) or {}).get("figure")
    return figure is not None and not any(trace.meta not in (None, figures.NOTES_KEY) for trace in figure.data)


def layout(ctx: AppContext, **query) -> html.Div:
    view = logic.parse_run_query(query)
    page = logic.run_page_impl(ctx.store, view)
    if page["error"]:
        return _error_page(page["error"])
    try:
        return _run_layout(ctx, page)
    except RunLogError as exc:  # a corrupt record found while drawing: the run's error, not a crash
        return _error_page(str(exc))


def _error_page(message: str) -> html.Div:
    return html.Div(className="page", children=[
        html.Div(className="page-title", children=[html.H2("Run")]),
        components.error_box(message, "This run cannot be shown"),
        dcc.Link("← all runs", href="/"),
    ])


def _run_layout(ctx: AppContext, page: dict) -> html.Div:
    info, view = page["info"], page["view"]
    meta = info["meta"]
    running = info["status"] == "running"
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    first, last = info["first_step"], info["last_logged_step"]
    slider_value = last if view.follow or view.step is None else view.step
    params = logic.layer_params(info, view.layer)
    read_only = ctx.settings.read_only
    sel_step = {"step": None if view.follow else view.step, "follow": view.follow, "latest": last}
    sel_range = {"from": view.range_from, "to": view.range_to}
    live_meta = {"status": info["status"], "running": running, "last_logged": last, "ticks": 0,
                 "flags_cursor": info["cursors"]["flags"], "notes_cursor": info["cursors"]["notes"]}
    sel_rows = {"filter": view.row_filter, "collapse": view.collapse}
    shape = _run_shape(info)
    # The first charts (loss, accuracy, gradient flow) come with the page itself, so they paint
    # without waiting for a callback round trip queued behind every other chart's.
    notes = ctx.store.notes(info["run_id"])
    args = chart_args(info["run_id"], {"range": sel_range, "layer": {"layer": view.layer, "param": view.param},
                                       "step": sel_step, "rows": sel_rows}, notes, shape)
    drawn = {chart.id: render(chart, ctx.store, args) for chart in CHARTS if chart.first_paint}
    # A finished run that logged no accuracy will never have any: no empty half-row for it (the
    # loss chart takes the whole row). A live run keeps the card: its accuracy may come at epoch end.
    unused = {ids.FIG_ACC} if not running and _nothing_to_show(drawn, ids.FIG_ACC) else set()
    header_bits = [b for b in (dataset_label(meta.get("dataset")), f"preset {config['preset']}" if config.get("preset")
                               else "", config_summary(config), capture_label(meta)) if b]
    return html.Div(className="page", children=[
        # state
        dcc.Store(id=ids.RUN_ID, data=info["run_id"]),
        dcc.Store(id=ids.RUN_STARTED, data=meta.get("started") if isinstance(meta.get("started"), (int, float)) else None),
        dcc.Store(id="run-info", data=_browser_info(info)),
        dcc.Store(id=ids.RUN_SHAPE, data=shape),
        dcc.Store(id=ids.SEL_LAYER, data={"layer": view.layer, "param": view.param}),
        dcc.Store(id=ids.SEL_STEP, data=sel_step),
        dcc.Store(id=ids.SEL_RANGE, data=sel_range),
        dcc.Store(id=ids.SEL_ROWS, data=sel_rows),
        dcc.Store(id="view-search", data=None),
        html.Div(id=ids.VIEW_URL_SYNC, hidden=True),
        dcc.Store(id=ids.NOTES_DATA, data=notes),
        dcc.Store(id=ids.LIVE_CHARTS, data=[chart.id for chart in LIVE_CHARTS]),
        *[dcc.Store(id=ids.live_store(chart.id), data=(drawn.get(chart.id) or {}).get("live")) for chart in LIVE_CHARTS],
        *[dcc.Store(id=ids.refresh_store(chart.id), data=0) for chart in CHARTS],
        dcc.Store(id=ids.LIVE_META, data=live_meta), dcc.Store(id=ids.DELTA), dcc.Store(id=ids.POLL_TICK),
        *[dcc.Store(id=i, data=0) for i in (ids.REFRESH_FLAGS, ids.REFRESH_NOTES)],
        dcc.Store(id=ids.FLAGS_DATA, data=[]),
        dcc.Store(id=ids.NOTE_AUTHOR_MEMORY, storage_type="local"),
        dcc.Interval(id=ids.POLL_INTERVAL, interval=ctx.settings.poll_ms, disabled=not running),
        dcc.Interval(id="flags-interval", interval=2000, disabled=True),
        dcc.Store(id=ids.FIRST_PAINT_STAGE, data=0), dcc.Store(id=ids.ZOOM_EVENT),
        dcc.Interval(id=ids.FIRST_PAINT_TIMER, interval=100, max_intervals=40),
        dcc.Download(id=ids.EXPORT_DOWNLOAD),
        # header
        html.Div(className="page-title", children=[
            html.H2(str(meta.get("name") or info["run_id"]), title=info["run_id"]),
            html.Span(id=ids.RUN_STATUS, children=components.status_badge(info["status"])),
            html.Span(" · ".join(header_bits), className="muted"),
            html.Span([f"started {components.fmt_time(meta.get('started'))} · ",
                       html.Span(components.fmt_duration(duration_s(meta, info["status"])), id=ids.RUN_DURATION)],
                      className="muted small"),
            html.Button("Export HTML report", id=ids.EXPORT_BUTTON, className="button secondary",
                        title="Download this run's report as one self-contained HTML file"),
            dcc.Link("compare with other runs →", href=f"/compare?runs={info['run_id']}", className="small"),
        ]),
        components.card("Flags", html.Div(id=ids.FLAGS_PANEL, children=html.P("Diagnosing…", className="muted")),
                        class_name="flags-card"),
        components.card(None, class_name="controls-card", children=html.Div(className="controls", children=[
            html.Div([html.Label("Layer", className="ctl", htmlFor=ids.RUN_LAYER),
                      dcc.Dropdown(id=ids.RUN_LAYER, options=logic.layer_options(info), value=view.layer,
                                   clearable=False, searchable=True)]),
            html.Div([html.Label("Histogram parameter", className="ctl", htmlFor=ids.RUN_PARAM),
                      dcc.Dropdown(id=ids.RUN_PARAM, options=params, value=view.param, clearable=False)]),
            html.Div([html.Label("Gradient-flow step", className="ctl"),
                      dcc.Checklist(id=ids.RUN_FOLLOW, options=[{"label": " follow latest", "value": "follow"}],
                                    value=["follow"] if view.follow else [])]),
            html.Div([dcc.Slider(id=ids.RUN_STEP_SLIDER, min=first or 0, max=last if last is not None else 0,
                                 step=info["every"] or 1, value=slider_value if slider_value is not None else 0,
                                 marks=logic.slider_marks(first, last), updatemode="mouseup",
                                 tooltip={"placement": "bottom", "always_visible": False})]),
            html.Div([html.Label("Layers shown (filter: substring or glob, comma-separated)", className="ctl",
                                 htmlFor=ids.RUN_ROW_FILTER),
                      html.Div(className="range-inputs", children=[
                          dcc.Input(id=ids.RUN_ROW_FILTER, type="search", value=view.row_filter, debounce=True,
                                    placeholder="e.g. attn or *.mlp.*", className="row-filter", maxLength=200),
                          dcc.Checklist(id=ids.RUN_ROW_GROUP, options=[{"label": " group blocks", "value": "group"}],
                                        inline=True, labelStyle={"whiteSpace": "nowrap"},
                                        value=["group"] if should_collapse(info["layers"], view.collapse) else []),
                      ])]),
            html.Div([html.Label("Step range (zoom any chart)", className="ctl"), html.Div(className="range-inputs", children=[
                dcc.Input(id=ids.RUN_RANGE_FROM, type="number", min=0, placeholder="from", value=view.range_from,
                          debounce=True),
                dcc.Input(id=ids.RUN_RANGE_TO, type="number", min=0, placeholder="to", value=view.range_to,
                          debounce=True),
                html.Button("all", id=ids.RUN_RANGE_RESET, className="button secondary", title="Show all steps"),
            ])]),
        ])),
        html.Div(className="side-layout", children=[
            html.Div(className="grid2 charts", children=[
                _chart_card(chart, (drawn.get(chart.id) or {}).get("figure"), hidden=chart.id in unused,
                            wide=chart.id == ids.FIG_LOSS and ids.FIG_ACC in unused) for chart in CHARTS]),
            html.Div(children=[
                components.card("Team notes", [
                    html.Div(className="note-form", children=[
                        dcc.Textarea(id=ids.NOTE_TEXT, placeholder="A note for your team (plain text)",
                                     maxLength=2000, disabled=read_only),
                        html.Div(className="row", children=[
                            dcc.Input(id=ids.NOTE_AUTHOR, type="text", placeholder="your name", maxLength=64,
                                      disabled=read_only or ctx.settings.auth_enabled),
                            dcc.Input(id=ids.NOTE_STEP, type="number", min=0, placeholder="step",
                                      value=slider_value, disabled=read_only),
                        ]),
                        html.Div(className="row", children=[
                            dcc.Input(id=ids.NOTE_LAYER, type="text", placeholder="layer (optional)",
                                      value=view.layer, maxLength=200, disabled=read_only),
                            html.Button("Add note", id=ids.NOTE_ADD, className="button", disabled=read_only,
                                        title="read-only dashboard" if read_only else "Add this note to the run"),
                        ]),
                        html.Div(id=ids.NOTE_MESSAGE, className="small"),
                    ]),
                    html.Div(id=ids.NOTES_LIST, children=components.notes_list(notes)),
                ]),
                components.card("Run details", html.Div(id=ids.META_PANEL, children=components.meta_panel(info))),
            ]),
        ]),
    ])


def _notes(ctx: AppContext, run_id: str) -> list:
    try:
        return ctx.store.notes(run_id)
    except RunLogError:
        return []


def _flags_now(flags_data) -> list:
    return flags_data if isinstance(flags_data, list) else []


def _register_chart(app: dash.Dash, ctx: AppContext, chart) -> None:
    """One callback per declared chart: its inputs from the page's stores, one read, one figure."""
    live = chart in LIVE_CHARTS
    names = [name for name in chart.inputs if name in CHART_INPUTS]
    inputs = [Input(CHART_INPUTS[name], "data") for name in names] + [Input(ids.refresh_store(chart.id), "data")]
    if not chart.first_paint:
        inputs.append(Input(ids.FIRST_PAINT_STAGE, "data"))  # drawn once the first charts are
    states = [State(ids.RUN_ID, "data"), State(ids.NOTES_DATA, "data"), State(ids.RUN_SHAPE, "data")]
    if "info" in chart.inputs:
        states.append(State("run-info", "data"))
    outputs = [Output(chart.id, "figure")] + ([Output(ids.live_store(chart.id), "data")] if live else [])

    @app.callback(*outputs, *inputs, *states, prevent_initial_call=True)
    def draw(*values):
        named = dict(zip(names, values))
        run_id, notes, shape, *info = values[len(inputs):]
        info = dict(info[0] or {}, run_id=run_id) if info else None
        try:
            result = render(chart, ctx.store, chart_args(run_id, named, notes, shape, info))
        except RunLogError as exc:
            result = {"figure": figures.empty_figure(str(exc)), "live": None}
        return (result["figure"], result["live"]) if live else result["figure"]

    draw.__name__ = f"draw_{chart.id.replace('-', '_')}"


def register(app: dash.Dash, ctx: AppContext) -> None:
    store = ctx.store

    # ---- view state: one reducer for every control that moves the view --------------------------
    app.clientside_callback(ClientsideFunction("gradwatch", "zoomEvent"), Output(ids.ZOOM_EVENT, "data"),
                            *[Input(chart.id, "relayoutData") for chart in STEP_CHARTS], prevent_initial_call=True)

    @app.callback(
        Output(ids.SEL_LAYER, "data"), Output(ids.SEL_STEP, "data"), Output(ids.SEL_RANGE, "data"),
        Output(ids.SEL_ROWS, "data"),
        Output(ids.RUN_LAYER, "value"), Output(ids.RUN_PARAM, "options"), Output(ids.RUN_PARAM, "value"),
        Output(ids.RUN_STEP_SLIDER, "value"), Output(ids.RUN_FOLLOW, "value"),
        Output(ids.RUN_RANGE_FROM, "value"), Output(ids.RUN_RANGE_TO, "value"), Output("view-search", "data"),
        Input(ids.RUN_LAYER, "value"), Input(ids.RUN_PARAM, "value"), Input(ids.RUN_STEP_SLIDER, "value"),
        Input(ids.RUN_FOLLOW, "value"), Input(ids.RUN_RANGE_FROM, "value"), Input(ids.RUN_RANGE_TO, "value"),
        Input(ids.RUN_RANGE_RESET, "n_clicks"), Input({"type": "flag-card", "index": ALL}, "n_clicks"),
        Input(ids.ZOOM_EVENT, "data"), Input(ids.RUN_ROW_FILTER, "value"), Input(ids.RUN_ROW_GROUP, "value"),
        State(ids.SEL_LAYER, "data"), State(ids.SEL_STEP, "data"), State(ids.SEL_RANGE, "data"),
        State(ids.SEL_ROWS, "data"),
        State(ids.FLAGS_DATA, "data"), State("run-info", "data"), State(ids.RUN_STEP_SLIDER, "max"),
        State(ids.RUN_ID, "data"),
        prevent_initial_call=True,
    )
    def update_view(layer, param, slider, follow, range_from, range_to, _reset, flag_clicks, zoom, row_filter,
                    row_group, *rest):
        sel_layer, sel_step, sel_range, sel_rows, flags, info, slider_max, run_id = rest
        # Stores come back from the browser: a crafted request may put anything in them.
        sel_layer, sel_range, sel_rows = (v if isinstance(v, dict) else {} for v in (sel_layer, sel_range, sel_rows))
        trigger = dash.ctx.triggered_id
        state = {"layer": (sel_layer or {}).get("layer"), "param": (sel_layer or {}).get("param"),
                 "step": logic.step_selection(sel_step)["step"], "follow": logic.step_selection(sel_step)["follow"],
                 "from": (sel_range or {}).get("from"), "to": (sel_range or {}).get("to"),
                 "filter": (sel_rows or {}).get("filter") or "", "collapse": (sel_rows or {}).get("collapse"),
                 "flag": None}
        if isinstance(trigger, dict) and trigger.get("type") == "flag-card":
            if not dash.ctx.triggered or not dash.ctx.triggered[0].get("value"):
                raise dash.exceptions.PreventUpdate  # a freshly drawn card (n_clicks 0), not a click
            new = logic.reduce_view(state, "flag", trigger.get("index"), flags=_flags_now(flags), info=info,
                                    slider_max=slider_max)
        elif trigger == ids.ZOOM_EVENT:
            new = logic.reduce_view(state, "zoom", (zoom or {}).get("data"), info=info)
        else:
            event, value = {
                ids.RUN_LAYER: ("layer", layer), ids.RUN_PARAM: ("param", param), ids.RUN_STEP_SLIDER: ("step", slider),
                ids.RUN_FOLLOW: ("follow", bool(follow)), ids.RUN_RANGE_FROM: ("from", range_from),
                ids.RUN_RANGE_TO: ("to", range_to), ids.RUN_RANGE_RESET: ("range-reset", None),
                ids.RUN_ROW_FILTER: ("filter", row_filter), ids.RUN_ROW_GROUP: ("collapse", bool(row_group)),
            }.get(trigger, (None, None))
            if event is None:
                raise dash.exceptions.PreventUpdate
            new = logic.reduce_view(state, event, value, info=info, slider_max=slider_max)
        new_layer = {"layer": new["layer"], "param": new["param"]}
        new_step = {"step": new["step"], "follow": new["follow"], "latest": slider_max}
        new_range = {"from": new["from"], "to": new["to"]}
        new_rows = {"filter": new["filter"], "collapse": new["collapse"]}

        def changed(old, value):
            return no_update if old == value else value

        params = logic.layer_params(info or {}, new["layer"])
        return (
            changed(sel_layer, new_layer), changed(sel_step, new_step), changed(sel_range, new_range),
            changed(sel_rows, new_rows),
            changed(layer, new["layer"]), params if new["layer"] != state["layer"] else no_update,
            changed(param, new["param"]),
            changed(slider, slider_max if new["follow"] else new["step"]),
            changed(follow, ["follow"] if new["follow"] else []),
            changed(range_from, new["from"]), changed(range_to, new["to"]),
            logic.view_query_string(run_id, new_layer, new_step, new_range, new_rows),
        )

    app.clientside_callback(ClientsideFunction("gradwatch", "firstPaintStage"),
                            Output(ids.FIRST_PAINT_STAGE, "data"), Output(ids.FIRST_PAINT_TIMER, "disabled"),
                            Input(ids.FIRST_PAINT_TIMER, "n_intervals"), State(ids.FIRST_PAINT_STAGE, "data"),
                            prevent_initial_call=True)

    app.clientside_callback(ClientsideFunction("gradwatch", "syncUrl"), Output(ids.VIEW_URL_SYNC, "children"),
                            Input("view-search", "data"), prevent_initial_call=True)

    # ---- charts: one callback each, from the registry -------------------------------------------
    for chart in CHARTS:
        _register_chart(app, ctx, chart)

    # ---- flags and details -------------------------------------------------------------------------
    @app.callback(
        Output(ids.FLAGS_PANEL, "children"), Output(ids.FLAGS_DATA, "data"), Output(ids.META_PANEL, "children"),
        Output("flags-interval", "disabled"),
        Input(ids.REFRESH_FLAGS, "data"), Input("flags-interval", "n_intervals"), State(ids.RUN_ID, "data"),
        State(ids.FLAGS_DATA, "data"),
    )
    def draw_flags(_refresh, _tick, run_id, shown):
        try:
            result = logic.flags_impl(store, run_id, wait=False)
            info = store.run_info(run_id)
        except RunLogError as exc:
            return components.error_box(str(exc)), [], no_update, True
        if dash.ctx.triggered_id == "flags-interval" and result["pending"]:
            return no_update, no_update, no_update, False  # still diagnosing
        config = info["meta"].get("config") if isinstance(info["meta"].get("config"), dict) else {}
        panel = components.flags_panel(result["flags"], config, result.get("note"), result.get("error"))
        if result["pending"]:
            panel = [html.P(f"{result['note']}…", className="muted")] + panel
        # Six charts take the flags as an Input, and the browser redraws them whenever the store is
        # set, changed or not: a periodic re-diagnosis that found the same flags must not set it.
        flags = result["flags"] if result["flags"] != shown else no_update
        return panel, flags, components.meta_panel(info), not result["pending"]

    # ---- notes ------------------------------------------------------------------------------------
    @app.callback(
        Output(ids.NOTE_AUTHOR, "value"),
        Input(ids.NOTE_AUTHOR_MEMORY, "data"), State(ids.NOTE_AUTHOR, "value"),
    )
    def remember_author(saved, current):
        if ctx.settings.auth_enabled:
            return ctx.settings.auth_user
        if current or not saved:
            raise dash.exceptions.PreventUpdate
        return saved

    note_outputs = [Output(chart.id, "figure", allow_duplicate=True) for chart in LIVE_CHARTS]

    @app.callback(
        Output(ids.NOTES_LIST, "children"), Output(ids.NOTE_MESSAGE, "children"), Output(ids.NOTE_TEXT, "value"),
        Output(ids.NOTE_AUTHOR_MEMORY, "data"), Output(ids.NOTES_DATA, "data"), *note_outputs,
        Input(ids.NOTE_ADD, "n_clicks"), Input(ids.REFRESH_NOTES, "data"),
        State(ids.RUN_ID, "data"), State(ids.NOTE_TEXT, "value"), State(ids.NOTE_AUTHOR, "value"),
        State(ids.NOTE_STEP, "value"), State(ids.NOTE_LAYER, "value"),
        *[State(ids.live_store(chart.id), "data") for chart in LIVE_CHARTS],
        prevent_initial_call=True,
    )
    def notes(n_clicks, _refresh, run_id, text, author, step, layer, *live_stores):
        message, clear, remember = no_update, no_update, no_update
        if dash.ctx.triggered_id == ids.NOTE_ADD:
            if ctx.settings.auth_enabled:
                author = ctx.settings.auth_user
            result = logic.add_note_impl(store, read_only=ctx.settings.read_only, run_id=run_id, text=text,
                                         author=author, step=step, layer=layer)
            if not result["ok"]:
                return (no_update, html.Span(result["message"], className="error-text"), no_update, no_update,
                        no_update, *[no_update] * len(LIVE_CHARTS))
            message, clear, remember = html.Span(result["message"], className="muted"), "", author or no_update
        all_notes = _notes(ctx, run_id)
        values = figures.notes_trace_values(all_notes)
        patches = []
        for live in live_stores:  # trace 0 of a step chart is its notes trace (figures._add_notes_trace)
            if ((live or {}).get("keys") or [None])[0] != figures.NOTES_KEY:
                patches.append(no_update)
                continue
            patch = Patch()
            patch["data"][0]["x"] = values["x"]
            patch["data"][0]["y"] = values["y"]
            patch["data"][0]["hovertext"] = values["hovertext"]
            patch["data"][0]["showlegend"] = bool(values["x"])
            patches.append(patch)
        return components.notes_list(all_notes), message, clear, remember, all_notes, *patches

    # ---- live updates -----------------------------------------------------------------------------
    app.clientside_callback(ClientsideFunction("gradwatch", "gate"), Output(ids.POLL_TICK, "data"),
                            Input(ids.POLL_INTERVAL, "n_intervals"), State(ids.LIVE_META, "data"),
                            State(ids.POLL_TICK, "data"), prevent_initial_call=True)

    slow_every = max(1, round(1000 / ctx.settings.poll_ms))
    refresh_ids = [(chart.id, ids.refresh_store(chart.id)) for chart in CHARTS] + [
        ("flags", ids.REFRESH_FLAGS), ("notes", ids.REFRESH_NOTES)]

    @app.callback(
        Output(ids.DELTA, "data"), Output(ids.LIVE_META, "data"),
        *[Output(store_id, "data") for _, store_id in refresh_ids],
        Output(ids.RUN_STEP_SLIDER, "max"), Output(ids.RUN_STEP_SLIDER, "marks"),
        Output(ids.RUN_STEP_SLIDER, "value", allow_duplicate=True),
        Output(ids.RUN_STATUS, "children"), Output(ids.POLL_INTERVAL, "disabled"), Output(ids.RUN_DURATION, "children"),
        Input(ids.POLL_TICK, "data"),
        State(ids.RUN_ID, "data"), State(ids.LIVE_META, "data"), State(ids.SEL_STEP, "data"), State(ids.RUN_STARTED, "data"),
        State(ids.RUN_DURATION, "children"),
        State(ids.RUN_STEP_SLIDER, "min"),
        *[State(ids.live_store(chart.id), "data") for chart in LIVE_CHARTS],
        *[State(store_id, "data") for _, store_id in refresh_ids],
        prevent_initial_call=True,
    )
    def poll(tick, run_id, live_meta, sel_step, started, shown_duration, first, *rest):
        live = dict(zip([chart.id for chart in LIVE_CHARTS], rest[:len(LIVE_CHARTS)]))
        counters = rest[len(LIVE_CHARTS):]
        result = logic.poll_impl(store, run_id, live, live_meta, slow_every=slow_every)
        meta = dict(result["meta"], answered=(tick or {}).get("n") if isinstance(tick, dict) else tick)
        bumps = [(counter or 0) + 1 if name in result["refresh"] else no_update
                 for (name, _), counter in zip(refresh_ids, counters)]
        last = meta.get("last_logged")
        grew = last is not None and last != (live_meta or {}).get("last_logged")
        slider_max = last if grew else no_update
        marks = logic.slider_marks(first or 0, last) if grew else no_update
        follow_value = last if grew and logic.step_selection(sel_step)["follow"] else no_update
        status_changed = meta.get("status") != (live_meta or {}).get("status")
        badge = components.status_badge(meta.get("status")) if status_changed else no_update
        disabled = no_update if meta.get("running") else True
        # The header's duration goes on while the run is live (and takes its last value as it ends).
        live_duration = logic.live_duration(started, meta.get("running") or status_changed)
        duration = live_duration if live_duration is not None and live_duration != shown_duration else no_update
        return (result["delta"] or no_update, meta, *bumps, slider_max, marks, follow_value, badge, disabled, duration)

    # The browser applies each chart's payload (assets/gradwatch.js); it reads the chart ids from the
    # page (ids.LIVE_CHARTS), in the order of these outputs and states.
    app.clientside_callback(
        ClientsideFunction("gradwatch", "applyDelta"),
        *[Output(chart.id, "extendData") for chart in LIVE_CHARTS],
        *[Output(ids.live_store(chart.id), "data", allow_duplicate=True) for chart in LIVE_CHARTS],
        Input(ids.DELTA, "data"), State(ids.LIVE_CHARTS, "data"),
        *[State(ids.live_store(chart.id), "data") for chart in LIVE_CHARTS],
        prevent_initial_call=True,
    )

    # ---- export -----------------------------------------------------------------------------------
    @app.callback(
        Output(ids.EXPORT_DOWNLOAD, "data"), Input(ids.EXPORT_BUTTON, "n_clicks"), State(ids.RUN_ID, "data"),
        prevent_initial_call=True,
    )
    def export(_clicks, run_id):
        from ..export import render_report

        try:
            report = render_report(store, run_id)
        except RunLogError:
            raise dash.exceptions.PreventUpdate from None
        return {"content": report, "filename": f"{run_id}-report.html", "type": "text/html", "base64": False}

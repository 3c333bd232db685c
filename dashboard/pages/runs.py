"""Runs page (/): every run in the log directory; sort, filter, select several to compare.

New runs and status changes appear without a reload (a light refresh that only re-sends the table
when what it shows has changed).
"""

from __future__ import annotations

from urllib.parse import urlencode

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, dcc, html, no_update

from .. import ids
from ..context import AppContext
from ..views import runs as logic

PATH = "/"
REFRESH_MS = 3000


def layout(ctx: AppContext, **query) -> html.Div:
    view = logic.parse_runs_query(query)
    result = logic.runs_table_impl(ctx.store, view, [])
    return html.Div(className="page", children=[
        dcc.Store(id="runs-view", data=view),
        dcc.Store(id=ids.RUNS_SELECTED, data=[]),
        dcc.Store(id=ids.RUNS_SIGNATURE, data=result["signature"]),
        dcc.Store(id="runs-search"), dcc.Store(id="runs-tick"),
        html.Div(id=ids.RUNS_URL_SYNC, hidden=True),
        dcc.Interval(id=ids.RUNS_INTERVAL, interval=REFRESH_MS if not result["pending"] else 800),
        html.Div(className="page-title", children=[
            html.H2("Runs"),
            html.Span(result["summary"], id=ids.RUNS_SUMMARY, className="muted"),
            html.Span(["in ", html.Code(str(ctx.settings.source or ctx.settings.logdir))], className="muted small"),
        ]),
        html.Div(className="toolbar", children=[
            dcc.Input(id=ids.RUNS_FILTER, type="search", value=view["q"], debounce=0.3,
                      placeholder="filter: words, lr=0.01, lr<0.1, flag:overfitting, sweep:NAME, tag:NAME…"),
            dcc.Input(id="runs-group", type="text", value=view.get("group", ""), debounce=True,
                      placeholder="group by: sweep, tag or a config key", className="group-input"),
            dcc.Checklist(id=ids.RUNS_STATUS, className="status-filter", inline=True, value=view["status"],
                          options=[{"label": f" {s}", "value": s} for s in logic.STATUSES]),
            dcc.Link("Compare selected", id=ids.RUNS_COMPARE_LINK, href="/compare", className="button disabled"),
            html.Button("clear selection", id=ids.RUNS_CLEAR_SELECTION, className="button secondary"),
        ]),
        html.Div(id=ids.RUNS_TABLE, children=result["table"]),
        html.Div(className="pager", children=[
            html.Button("‹ previous", id="runs-prev", className="button secondary"),
            html.Span(f"page {result['page']} of {result['pages']}", id=ids.RUNS_PAGER, className="muted"),
            html.Button("next ›", id="runs-next", className="button secondary"),
        ]),
    ])


def register(app: dash.Dash, ctx: AppContext) -> None:
    @app.callback(
        Output("runs-view", "data"), Output("runs-search", "data"),
        Input(ids.RUNS_FILTER, "value"), Input(ids.RUNS_STATUS, "value"),
        Input({"type": "runs-sort-header", "column": ALL}, "n_clicks"),
        Input("runs-prev", "n_clicks"), Input("runs-next", "n_clicks"), Input("runs-group", "value"),
        State("runs-view", "data"),
        prevent_initial_call=True,
    )
    def update_view(q, statuses, _sorts, _prev, _next, group, view):
        view = dict(view or logic.parse_runs_query({}))
        trigger = dash.ctx.triggered_id
        if trigger == ids.RUNS_FILTER:
            view.update(q=(q or "")[:200], page=1)
        elif trigger == ids.RUNS_STATUS:
            view.update(status=[s for s in statuses or [] if s in logic.STATUSES], page=1)
        elif isinstance(trigger, dict) and trigger.get("type") == "runs-sort-header":
            if not dash.ctx.triggered[0].get("value"):
                raise dash.exceptions.PreventUpdate  # a header redrawn with the table, not a click
            column = trigger["column"]
            if view.get("sort") == column:
                view["desc"] = not view.get("desc")
            else:
                view.update(sort=column, desc=column in ("started", "steps", "flags", "duration"))
        elif trigger == "runs-group":
            view.pop("group", None)
            if logic.GROUP_PATTERN.fullmatch((group or "").strip()):
                view["group"] = group.strip()
            view["page"] = 1
        elif trigger == "runs-prev":
            view["page"] = max(1, view.get("page", 1) - 1)
        elif trigger == "runs-next":
            view["page"] = view.get("page", 1) + 1
        else:
            raise dash.exceptions.PreventUpdate
        return view, logic.runs_query_string(view) or "?"

    app.clientside_callback(ClientsideFunction("gradwatch", "syncUrl"), Output(ids.RUNS_URL_SYNC, "children"),
                            Input("runs-search", "data"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("gradwatch", "visibleTick"), Output("runs-tick", "data"),
                            Input(ids.RUNS_INTERVAL, "n_intervals"), prevent_initial_call=True)

    @app.callback(
        Output(ids.RUNS_TABLE, "children"), Output(ids.RUNS_SUMMARY, "children"), Output(ids.RUNS_PAGER, "children"),
        Output(ids.RUNS_SIGNATURE, "data"), Output(ids.RUNS_INTERVAL, "interval"),
        Input("runs-tick", "data"), Input("runs-view", "data"),
        State(ids.RUNS_SELECTED, "data"), State(ids.RUNS_SIGNATURE, "data"),
        prevent_initial_call=True,
    )
    def refresh(_n, view, selected, signature):
        result = logic.runs_table_impl(ctx.store, view or {}, selected)
        interval = 800 if result["pending"] else REFRESH_MS
        if result["signature"] == signature:
            return no_update, no_update, no_update, no_update, interval
        return (result["table"], result["summary"], f"page {result['page']} of {result['pages']}",
                result["signature"], interval)

    @app.callback(
        Output(ids.RUNS_SELECTED, "data"),
        Input({"type": "run-select", "run": ALL}, "value"), Input(ids.RUNS_CLEAR_SELECTION, "n_clicks"),
        State(ids.RUNS_SELECTED, "data"),
        prevent_initial_call=True,
    )
    def select(values, _clear, selected):
        if dash.ctx.triggered_id == ids.RUNS_CLEAR_SELECTION:
            return []
        shown = {spec["id"]["run"]: bool(value) for spec, value in zip(dash.ctx.inputs_list[0], values)}
        keep = [run for run in selected or [] if run not in shown]  # selections on other pages
        new = keep + [run for run, on in shown.items() if on]
        if new == (selected or []):
            raise dash.exceptions.PreventUpdate
        return new

    @app.callback(
        Output(ids.RUNS_COMPARE_LINK, "href"), Output(ids.RUNS_COMPARE_LINK, "className"),
        Output(ids.RUNS_COMPARE_LINK, "children"),
        Input(ids.RUNS_SELECTED, "data"),
    )
    def compare_link(selected):
        selected = selected or []
        enabled = len(selected) >= 2
        href = "/compare?" + urlencode({"runs": ",".join(selected)}) if selected else "/compare"
        return href, "button" if enabled else "button disabled", f"Compare selected ({len(selected)})"

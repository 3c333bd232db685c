"""Compare page (/compare?runs=A,B,C&step=N): runs overlaid, gradient flow at one step, final metrics."""

from __future__ import annotations

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update

from .. import components, ids
from ..context import AppContext
from ..views import compare as logic

PATH = "/compare"
REFRESH_MS = 5000


def layout(ctx: AppContext, **query) -> html.Div:
    view = logic.parse_compare_query(query)
    options = logic.run_options(ctx.store)
    known = {o["value"] for o in options}
    missing = [r for r in view["runs"] if r not in known]
    return html.Div(className="page", children=[
        dcc.Store(id="cmp-search"),
        html.Div(id=ids.CMP_URL_SYNC, hidden=True),
        dcc.Store(id=ids.CMP_SIGNATURE), dcc.Store(id="cmp-tick"),
        dcc.Interval(id=ids.CMP_INTERVAL, interval=REFRESH_MS, disabled=True),
        html.Div(className="page-title", children=[html.H2("Compare runs")]),
        components.card(None, html.Div(className="toolbar", children=[
            html.Div(style={"flex": "1", "minWidth": "420px"}, children=[
                html.Label("Runs", className="ctl"),
                dcc.Dropdown(id=ids.CMP_RUNS, options=options + [{"label": m, "value": m} for m in missing],
                             value=view["runs"], multi=True, placeholder="pick two or more runs"),
            ]),
            html.Div(style={"width": "160px"}, children=[
                html.Label("Gradient-flow step", className="ctl"),
                dcc.Input(id=ids.CMP_STEP, type="number", min=0, value=view["step"], debounce=True,
                          placeholder="last common"),
            ]),
        ])),
        html.Div(id=ids.CMP_MESSAGE),
        components.card(None, components.graph(ids.CMP_CURVES)),
        components.card(None, components.graph(ids.CMP_FLOW)),
        components.card("Final metrics", html.Div(id=ids.CMP_TABLE)),
    ])


def register(app: dash.Dash, ctx: AppContext) -> None:
    @app.callback(
        Output(ids.CMP_CURVES, "figure"), Output(ids.CMP_FLOW, "figure"), Output(ids.CMP_TABLE, "children"),
        Output(ids.CMP_MESSAGE, "children"), Output(ids.CMP_SIGNATURE, "data"), Output(ids.CMP_INTERVAL, "disabled"),
        Output("cmp-search", "data"), Output(ids.CMP_STEP, "placeholder"),
        Input(ids.CMP_RUNS, "value"), Input(ids.CMP_STEP, "value"), Input("cmp-tick", "data"),
        State(ids.CMP_SIGNATURE, "data"),
    )
    def draw(run_ids, step, _n, signature):
        run_ids = [r for r in (run_ids or []) if isinstance(r, str)][: logic.MAX_RUNS]
        step = step if isinstance(step, (int, float)) and step >= 0 else None
        result = logic.compare_impl(ctx.store, run_ids, int(step) if step is not None else None)
        if dash.ctx.triggered_id == "cmp-tick" and result["signature"] == signature:
            return (no_update,) * 5 + (not result["running"], no_update, no_update)
        messages = [components.error_box("; ".join(result["errors"]), "Some runs cannot be compared")] \
            if result["errors"] else []
        messages += [html.P(m, className="muted") for m in result["notes"]]
        if len(run_ids) == 1:
            messages.append(html.P("Add at least one more run to compare.", className="muted"))
        placeholder = f"≤ {result['max_step']}" if result["max_step"] is not None else "last common"
        return (result["curves"], result["flow"], result["table"], messages, result["signature"],
                not result["running"], logic.compare_query_string(run_ids, step), placeholder)

    app.clientside_callback(ClientsideFunction("gradwatch", "syncUrl"), Output(ids.CMP_URL_SYNC, "children"),
                            Input("cmp-search", "data"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("gradwatch", "visibleTick"), Output("cmp-tick", "data"),
                            Input(ids.CMP_INTERVAL, "n_intervals"), prevent_initial_call=True)

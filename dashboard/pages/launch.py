"""Launch page (/launch?preset=NAME&<option>=<value>...): start a run from a preset, watch, stop it.

Runs started here are separate processes (dashboard.jobs): they keep running when the page closes and
every viewer sees them. Read-only dashboards refuse launching and stopping on the server.
"""

from __future__ import annotations

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, dcc, html, no_update

from gradwatch.trainer.options import OPTIONS_BY_NAME
from gradwatch.trainer.presets import PRESETS

from .. import components, ids
from ..context import AppContext
from ..views import launch as logic

PATH = "/launch"
JOBS_REFRESH_MS = 2000


def layout(ctx: AppContext, **query) -> html.Div:
    preset = query.get("preset") if query.get("preset") in PRESETS else logic.DEFAULT_PRESET
    values = logic.form_values(preset, {k: v for k, v in query.items() if k in OPTIONS_BY_NAME})
    read_only = ctx.settings.read_only
    return html.Div(className="page", children=[
        dcc.Interval(id=ids.JOBS_INTERVAL, interval=JOBS_REFRESH_MS), dcc.Store(id="jobs-tick"),
        dcc.Store(id="jobs-signature"),
        html.Div(className="page-title", children=[
            html.H2("Launch a training run"),
            html.Span(f"at most {ctx.settings.max_jobs} at a time", className="muted"),
        ]),
        components.error_box("This dashboard is read-only: launching and stopping runs is disabled.",
                             "Read-only") if read_only else None,
        html.Div(className="launch-layout", children=[
            components.card("Preset and options", [
                html.Label("Preset", className="ctl", htmlFor=ids.LAUNCH_PRESET),
                dcc.Dropdown(id=ids.LAUNCH_PRESET, options=logic.preset_choices(), value=preset, clearable=False),
                html.P(PRESETS[preset].summary, id=ids.LAUNCH_PRESET_SUMMARY, className="muted"),
                html.Label("Run name", className="ctl", htmlFor=ids.LAUNCH_NAME),
                dcc.Input(id=ids.LAUNCH_NAME, type="text", value=preset, maxLength=64, style={"width": "100%"}),
                html.Div(id=ids.LAUNCH_VALIDATION, className="validation"),
                html.Div(className="toolbar", children=[
                    html.Button("Launch", id=ids.LAUNCH_BUTTON, className="button", disabled=read_only,
                                title="read-only dashboard" if read_only else "Start this run in the background"),
                    html.Button("Reset to preset", id=ids.LAUNCH_RESET, className="button secondary"),
                ]),
                html.Div(id=ids.LAUNCH_RESULT),
                html.P("Options (changed ones in bold; hover a name for help):", className="muted small"),
                html.Div(id=ids.LAUNCH_OPTIONS, children=logic.options_form(preset, values, read_only)),
            ]),
            components.card("Runs launched here", [
                html.Div(id=ids.JOBS_MESSAGE),
                html.Div(id=ids.JOBS_TABLE, children=logic.jobs_table(ctx.jobs.list(), read_only)),
            ]),
        ]),
    ])


def _form_values(values, specs) -> dict:
    return {spec["id"]["name"]: value for spec, value in zip(specs, values)}


def register(app: dash.Dash, ctx: AppContext) -> None:
    read_only = ctx.settings.read_only

    @app.callback(
        Output(ids.LAUNCH_OPTIONS, "children"), Output(ids.LAUNCH_PRESET_SUMMARY, "children"),
        Output(ids.LAUNCH_NAME, "value"),
        Input(ids.LAUNCH_PRESET, "value"), Input(ids.LAUNCH_RESET, "n_clicks"),
        State(ids.LAUNCH_NAME, "value"),
        prevent_initial_call=True,
    )
    def choose_preset(preset, _reset, name):
        if preset not in PRESETS:
            raise dash.exceptions.PreventUpdate
        new_name = preset if (not name or name in PRESETS) else no_update
        return logic.options_form(preset, logic.form_values(preset), read_only), PRESETS[preset].summary, new_name

    @app.callback(
        Output(ids.LAUNCH_VALIDATION, "children"),
        Input(ids.LAUNCH_PRESET, "value"), Input({"type": "launch-option", "name": ALL}, "value"),
    )
    def validate(preset, values):
        result = logic.validate_impl(preset, _form_values(values, dash.ctx.inputs_list[1]))
        box = "ok-box" if result["ok"] else "error-box"
        return html.Div(result["message"], className=box, role="status")

    @app.callback(
        Output(ids.LAUNCH_RESULT, "children"), Output(ids.JOBS_TABLE, "children", allow_duplicate=True),
        Input(ids.LAUNCH_BUTTON, "n_clicks"),
        State(ids.LAUNCH_PRESET, "value"), State(ids.LAUNCH_NAME, "value"),
        State({"type": "launch-option", "name": ALL}, "value"),
        prevent_initial_call=True,
    )
    def launch(_clicks, preset, name, values):
        result = logic.launch_impl(ctx.jobs, read_only=read_only, preset=preset, name=name,
                                   values=_form_values(values, dash.ctx.states_list[2]))
        if not result["ok"]:
            return components.error_box(result["message"], "Not launched"), no_update
        return (html.Div(result["message"] + " It appears in the table when its run folder exists.",
                         className="ok-box"), logic.jobs_table(ctx.jobs.list(), read_only))

    @app.callback(
        Output(ids.JOBS_MESSAGE, "children"), Output(ids.JOBS_TABLE, "children", allow_duplicate=True),
        Input({"type": "job-stop", "job": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def stop(_clicks):
        trigger = dash.ctx.triggered_id
        if not isinstance(trigger, dict) or not dash.ctx.triggered[0].get("value"):
            raise dash.exceptions.PreventUpdate
        result = logic.stop_impl(ctx.jobs, read_only=read_only, job_id=trigger["job"])
        box = html.Div(result["message"], className="ok-box") if result["ok"] else \
            components.error_box(result["message"], "Not stopped")
        return box, logic.jobs_table(ctx.jobs.list(), read_only)

    @app.callback(
        Output(ids.JOBS_TABLE, "children"), Output("jobs-signature", "data"),
        Input("jobs-tick", "data"), State("jobs-signature", "data"),
        prevent_initial_call=True,
    )
    def refresh_jobs(_n, signature):
        jobs = ctx.jobs.list()
        new = logic.jobs_signature(jobs)
        if new == signature:
            return no_update, no_update  # nothing changed: do not redraw (a Stop click stays put)
        return logic.jobs_table(jobs, read_only), new

    app.clientside_callback(ClientsideFunction("gradwatch", "visibleTick"), Output("jobs-tick", "data"),
                            Input(ids.JOBS_INTERVAL, "n_intervals"), prevent_initial_call=True)

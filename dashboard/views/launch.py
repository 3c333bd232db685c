"""The Launch page's logic: preset + editable options -> a validated training job; the jobs table.

Options are validated by trainer.presets.resolve, the code the CLI uses, so the page shows exactly the
CLI's messages. The URL can prefill the form: /launch?preset=dropout&lr=0.0003 (remedy links do this).
"""

from __future__ import annotations

from dash import dcc, html

from gradwatch.trainer.options import OPTIONS, OPTIONS_BY_NAME, OptionsError
from gradwatch.trainer.presets import PRESETS, resolve

from .. import components, ids
from ..jobs import Job, JobError, JobManager

OPTION_GROUPS = (
    ("Model", ("model", "depth", "width", "activation", "dropout", "batchnorm", "init", "init_std", "embedding_dim")),
    ("Optimisation", ("optimizer", "lr", "momentum", "batch_size", "epochs", "l1", "l2", "weight_decay", "clip_norm",
                      "clip_value", "early_stopping", "patience", "min_delta", "restore_best", "stop_on_overfitting",
                      "halt_on_nonfinite")),
    ("Data", ("dataset", "data", "representation", "max_vocab", "min_freq", "max_len", "stopwords", "augment_rate",
              "augment_copies", "limit")),
    ("Logging and device", ("every", "seed", "device")),
)
DEFAULT_PRESET = "overfit"
OPTION_TEXT_MAX_CHARS = 200  # server-side: the longest option value (a data path) a form may send


def grouped_option_names() -> list[tuple[str, list[str]]]:
    listed = {name for _, names in OPTION_GROUPS for name in names}
    groups = [(title, [n for n in names if n in OPTIONS_BY_NAME]) for title, names in OPTION_GROUPS]
    rest = [o.name for o in OPTIONS if o.name not in listed]
    if rest:
        groups.append(("Other", rest))
    return groups


def preset_choices() -> list[dict]:
    order = sorted(PRESETS.values(), key=lambda p: (p.group != "regularisation", list(PRESETS).index(p.name)))
    return [{"label": f"{p.name} — {p.group}", "value": p.name} for p in order]


def to_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def form_values(preset: str | None, query: dict | None = None) -> dict[str, str]:
    """Every option's value as text: defaults <- preset <- URL overrides (unparsed: the form shows
    what the URL said, and validation reports it)."""
    preset = preset if preset in PRESETS else DEFAULT_PRESET
    resolved = resolve(preset, {})
    values = {name: to_text(value) for name, value in resolved.items()}
    for name, raw in (query or {}).items():
        if name in OPTIONS_BY_NAME and isinstance(raw, str):
            values[name] = raw[:200]
    return values


def normalise_form(values: dict) -> dict[str, str]:
    """Form widget values -> text: checklists (bool options) become 'true'/'false'."""
    out = {}
    for name, value in values.items():
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            continue
        if option.kind is bool and isinstance(value, list):
            out[name] = "true" if value else "false"
        else:
            out[name] = "" if value is None else str(value)
    return out


def overrides_from_form(preset: str, values: dict[str, str]) -> dict[str, str]:
    """The options whose text differs from the preset's value (what goes on the command line)."""
    base = {name: to_text(v) for name, v in resolve(preset, {}).items()}
    out = {}
    for name, text in values.items():
        if name not in OPTIONS_BY_NAME:
            continue
        if text.strip() == base.get(name):
            continue
        try:
            if OPTIONS_BY_NAME[name].parse(text) == resolve(preset, {})[name]:
                continue
        except OptionsError:
            pass
        out[name] = text.strip()
    return out


def validate_impl(preset: str | None, values: dict) -> dict:
    """{"ok", "message", "overrides", "options"}: the message is the CLI's for invalid options."""
    if preset not in PRESETS:
        return {"ok": False, "message": f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}",
                "overrides": {}, "options": None}
    text = normalise_form(values)
    too_long = next((name for name, value in text.items() if len(value) > OPTION_TEXT_MAX_CHARS), None)
    if too_long:
        return {"ok": False, "message": f"option {too_long} is at most {OPTION_TEXT_MAX_CHARS} characters, got "
                                        f"{len(text[too_long])}", "overrides": {}, "options": None}
    overrides = overrides_from_form(preset, text)
    try:
        options = resolve(preset, overrides)
    except OptionsError as exc:
        return {"ok": False, "message": str(exc), "overrides": overrides, "options": None}
    changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
    return {"ok": True, "message": f"Valid. Changes from preset {preset}: {changed}.", "overrides": overrides,
            "options": options}


def launch_impl(jobs: JobManager, *, read_only: bool, preset: str | None, name: str | None, values: dict) -> dict:
    """Start a job; {"ok", "message", "job_id"} with the refusal/validation message on failure."""
    if read_only:
        return {"ok": False, "message": "This dashboard is read-only: runs cannot be launched.", "job_id": None}
    checked = validate_impl(preset, values)
    if not checked["ok"]:
        return {"ok": False, "message": checked["message"], "job_id": None}
    try:
        job = jobs.start(preset, checked["overrides"], (name or "").strip() or preset)
    except (OptionsError, JobError) as exc:
        return {"ok": False, "message": str(exc), "job_id": None}
    return {"ok": True, "message": f"Started job {job.job_id} ({preset}).", "job_id": job.job_id}


def stop_impl(jobs: JobManager, *, read_only: bool, job_id: str) -> dict:
    if read_only:
        return {"ok": False, "message": "This dashboard is read-only: runs cannot be stopped."}
    try:
        job = jobs.stop(job_id)
    except JobError as exc:
        return {"ok": False, "message": str(exc)}
    return {"ok": True, "message": f"Stopping job {job.job_id} (the run is marked stopped when it exits)."}


# ---- layout pieces --------------------------------------------------------------------------------
def option_control(name: str, value: str, preset_value: str, read_only: bool):
    option = OPTIONS_BY_NAME[name]
    if option.kind is bool:
        return dcc.Checklist(id=ids.launch_option(name), options=[{"label": "", "value": "on"}],
                             value=["on"] if value == "true" else [], inline=True)
    if option.choices:
        return dcc.Dropdown(id=ids.launch_option(name), options=[str(c) for c in option.choices], value=value,
                            clearable=False)
    return dcc.Input(id=ids.launch_option(name), type="text", value=value, debounce=0.4,
                     placeholder=preset_value, spellCheck=False)


def options_form(preset: str, values: dict[str, str], read_only: bool) -> list:
    base = form_values(preset)
    blocks = []
    for index, (title, names) in enumerate(grouped_option_names()):
        rows = []
        for name in names:
            option = OPTIONS_BY_NAME[name]
            changed = values.get(name, base[name]) != base[name]
            rows += [html.Label(name, htmlFor=str(ids.launch_option(name)), className="changed" if changed else "",
                                title=option.help),
                     option_control(name, values.get(name, base[name]), base[name], read_only),
                     html.Div(option.help + f" ({option.describe()})", className="option-help")]
        blocks.append(html.Details(open=index < 2, children=[html.Summary(title),
                                                             html.Div(rows, className="option-grid")]))
    return blocks


def jobs_signature(jobs: list[Job]) -> str:
    """Changes when anything the jobs table shows changes."""
    return "|".join(f"{j.job_id}:{j.state}:{j.run_id}:{j.log_tail}" for j in jobs)


def jobs_table(jobs: list[Job], read_only: bool) -> html.Div:
    if not jobs:
        return html.P("No runs launched from the dashboard yet.", className="muted")
    rows = []
    for job in jobs:
        run = dcc.Link(job.run_id, href=f"/run?run={job.run_id}") if job.run_id else html.Span("—", className="muted")
        stop = html.Button("Stop", id=ids.job_stop(job.job_id), className="button danger", n_clicks=0,
                           disabled=read_only or job.state == "stopping",
                           title="read-only dashboard" if read_only else "Interrupt the run (marked stopped)") \
            if job.active else None
        changes = ", ".join(f"{k}={v}" for k, v in job.overrides.items())
        rows.append(html.Tr(**{"data-job": job.job_id}, children=[
            html.Td([html.Code(job.job_id), html.Div(job.name, className="small")]),
            html.Td(job.preset + (f" ({changes})" if changes else ""), className="config"),
            html.Td(components.status_badge(job.state)),
            html.Td(run),
            html.Td(components.fmt_time(job.created), className="small"),
            html.Td(html.Pre(job.log_tail or "")),
            html.Td(stop),
        ]))
    return html.Table(className="runs jobs", children=[
        html.Thead(html.Tr([html.Th(h) for h in ("Job", "Preset", "State", "Run", "Started", "Latest output", "")])),
        html.Tbody(rows),
    ])

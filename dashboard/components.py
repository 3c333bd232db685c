"""Layout pieces shared by the pages: navigation, badges, flag cards, metadata and notes panels.

All user-provided text (run names, notes, errors, config values) goes into components as plain
strings, which Dash renders as text: nothing here ever renders HTML from data.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from urllib.parse import urlencode

from dash import dcc, html

from gradwatch.trainer import derived
from gradwatch.trainer.presets import PRESETS

from . import ids

STATUS_COLORS = {
    "running": "#1565c0", "finished": "#2e7d32", "failed": "#c62828", "stopped": "#6d4c41", "stale": "#757575",
    "starting": "#1565c0", "stopping": "#ef6c00", "lost": "#757575", "error": "#c62828",
}
SEVERITY_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
RULE_TITLES = {
    "exploding_gradient": "Exploding gradients", "vanishing_gradient": "Vanishing gradients",
    "nonfinite": "NaN / Inf values", "overfitting": "Overfitting", "underfitting": "Underfitting",
    "dead_units": "Dead ReLU units", "saturated_units": "Saturated activations", "learning_rate": "Learning rate",
}
GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


# ---- formatting ---------------------------------------------------------------------------------
def fmt_number(value, digits: int = 3) -> str:
    """1.23e-05, 0.0412, 12.5, 1.2e+04; '—' for missing, 'NaN'/'Inf' for non-finite."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.{digits - 1}e}"
    if value == int(value) and magnitude < 1e5:
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if magnitude < 1 else f"{value:,.{max(0, digits - 1)}f}"


def fmt_time(timestamp) -> str:
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return "—"
    try:
        return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # beyond what a date can show (a crafted folder)
        return "—"


def fmt_duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def fmt_steps(first, last) -> str:
    if first is None and last is None:
        return "—"
    if first == last or last is None:
        return f"step {first}"
    return f"steps {first}–{last}"


# ---- small pieces ----------------------------------------------------------------------------------
def navbar(read_only: bool) -> html.Nav:
    links = [("Runs", "/"), ("Compare", "/compare"), ("Launch", "/launch")]
    return html.Nav(id=ids.NAV, className="nav", children=[
        dcc.Link("gradwatch", href="/", className="brand"),
        *[dcc.Link(label, href=href, className="nav-link") for label, href in links],
        html.Span("read-only", id=ids.READ_ONLY_BANNER, className="badge badge-readonly",
                  title="This dashboard is read-only: launching, stopping and notes are disabled")
        if read_only else None,
    ])


def status_badge(status: str | None, **kwargs) -> html.Span:
    label = status or "unknown"
    return html.Span(label, className=f"badge status status-{label}",
                     style={"backgroundColor": STATUS_COLORS.get(label, "#757575")}, **kwargs)


def severity_badge(severity: str, count: int | None = None) -> html.Span:
    text = severity if count is None else f"{count} {severity}"
    return html.Span(text, className=f"badge severity severity-{severity}",
                     style={"backgroundColor": SEVERITY_COLORS.get(severity, "#757575")})


def flag_badges(counts: dict, rules: dict | None = None) -> html.Span:
    """A badge per severity with its count and, where known, the rules that fired ("1 warning:
    overfitting"): a count alone does not say what to look at."""
    parts = []
    for sev in ("critical", "warning", "info"):
        if counts.get(sev):
            named = (rules or {}).get(sev) or []
            badge = severity_badge(sev, counts[sev])
            if named:
                badge.children = f"{badge.children}: {', '.join(named)}"
            parts.append(badge)
    return html.Span(parts or [html.Span("none", className="muted")], className="flag-badges")


def error_box(message: str, title: str = "Cannot show this") -> html.Div:
    return html.Div(className="error-box", role="alert", children=[html.Strong(title), html.Div(message)])


def graph(graph_id: str, figure=None, height: int | None = None) -> dcc.Graph:
    extra = {"style": {"height": f"{height}px"}} if height else {}
    return dcc.Graph(id=graph_id, figure=figure or {"data": [], "layout": {"height": height or 320}},
                     config=GRAPH_CONFIG, className="chart", **extra)


def card(title: str | None, children, class_name: str = "", **kwargs) -> html.Section:
    return html.Section(className=f"card {class_name}".strip(), children=[
        html.H3(title, className="card-title") if title else None,
        *(children if isinstance(children, list) else [children]),
    ], **kwargs)


# ---- flags ---------------------------------------------------------------------------------------
def remedy_href(remedy_id: str, config: dict | None) -> str | None:
    """A Launch link trying the remedy: its preset where one exists; a lower/higher learning rate on
    this run's own preset for the learning-rate remedies."""
    if remedy_id in PRESETS:
        return "/launch?" + urlencode({"preset": remedy_id})
    config = config or {}
    preset = config.get("preset")
    lr = config.get("lr")
    if preset in PRESETS and isinstance(lr, (int, float)) and lr > 0:
        if remedy_id == "lower-lr":
            return "/launch?" + urlencode({"preset": preset, "lr": f"{lr / 3:.3g}"})
        if remedy_id == "higher-lr":
            return "/launch?" + urlencode({"preset": preset, "lr": f"{lr * 3:.3g}"})
    return None


def evidence_rows(evidence: dict) -> list:
    rows = []
    for key, value in (evidence or {}).items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k}: {fmt_number(v)}" for k, v in list(value.items())[:8])
            if len(value) > 8:
                shown += f", … ({len(value)} in all)"
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(fmt_number(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
        else:
            shown = fmt_number(value)
        rows.append(html.Tr([html.Th(key.replace("_", " ")), html.Td(shown)]))
    return rows


def flag_card(flag: dict, index: int, config: dict | None = None, selected: bool = False) -> html.Div:
    """One flag: severity, rule, layers, steps, evidence, explanation, remedies (linked to Launch)."""
    severity = flag.get("severity", "info")
    rule = flag.get("rule", "?")
    layers = flag.get("layers") or []
    remedies = flag.get("remedies") or []
    remedy_ids = flag.get("remedy_ids") or []
    remedy_code = flag.get("remedy_code") or []
    # A run launched from a lesson preset tries a remedy as another preset; any other run (the
    # user's own code) is shown the code change instead.
    from_preset = (config or {}).get("preset") in PRESETS
    remedy_items = []
    for i, text in enumerate(remedies):
        rid = remedy_ids[i] if i < len(remedy_ids) else None
        href = remedy_href(rid, config) if rid and from_preset else None
        code = remedy_code[i] if i < len(remedy_code) and not from_preset else ""
        remedy_items.append(html.Li([
            html.Span(text),
            " ",
            dcc.Link(f"try it: launch {rid}", href=href, className="remedy-link") if href else None,
            html.Pre(html.Code(code), className="remedy-code") if code else None,
        ]))
    return html.Div(
        id=ids.flag_card(index), n_clicks=0, role="button", tabIndex="0",
        className=f"flag-card severity-{severity}" + (" selected" if selected else ""),
        title="Show this flag's layer and steps in the charts",
        children=[
            html.Div(className="flag-head", children=[
                severity_badge(severity),
                html.Span(RULE_TITLES.get(rule, rule.replace("_", " ")), className="flag-rule"),
                html.Span(fmt_steps(flag.get("first_step"), flag.get("last_step")), className="flag-steps"),
                html.Span("live" if flag.get("source") == "live" else "", className="muted small"),
            ]),
            html.Div(className="flag-layers", children=(
                [html.Span("layers: ", className="muted")] + [html.Code(layer, className="layer-chip") for layer in layers]
            ) if layers else [html.Span("whole run", className="muted")]),
            html.P(flag.get("explanation", ""), className="flag-explanation"),
            html.Details([
                html.Summary("evidence"),
                html.Table(evidence_rows(flag.get("evidence") or {}), className="evidence"),
            ], open=False, className="flag-evidence"),
            html.Div([html.Strong("Remedies"), html.Ul(remedy_items)], className="flag-remedies")
            if remedy_items else None,
        ],
    )


def flags_panel(flags: list[dict], config: dict | None, note: str | None = None, error: str | None = None,
                selected: int | None = None) -> list:
    children = []
    if error:
        children.append(error_box(error, "Diagnosis unavailable"))
    if not flags:
        if note and "diagnosing" in note:
            return children
        children.append(html.P("No problems found" + (f" ({note})" if note else "") + ".", className="muted"))
        return children
    children.append(html.Div([flag_card(f, i, config, selected == i) for i, f in enumerate(flags)],
                             className="flag-list"))
    return children


# ---- metadata and notes ----------------------------------------------------------------------------
def kv_table(items: list[tuple[str, object]]) -> html.Table:
    return html.Table(className="kv", children=[
        html.Tr([html.Th(key), html.Td(value if isinstance(value, (html.Code, html.Span, html.A)) else
                                       _text(value))])
        for key, value in items
    ])


def _text(value) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "—" if value is None or value == "" else str(value)


def meta_panel(info: dict) -> list:
    meta = info.get("meta") or {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    dataset = meta.get("dataset")
    summary = meta.get("model_summary") if isinstance(meta.get("model_summary"), dict) else {}
    results = meta.get("results") if isinstance(meta.get("results"), dict) else {}
    watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
    from .data import duration_s

    timing = [
        ("started", fmt_time(meta.get("started"))), ("ended", fmt_time(meta.get("ended"))),
        ("duration", fmt_duration(duration_s(meta, info.get("status")))),
        ("host", meta.get("host")), ("pid", meta.get("pid")), ("job", meta.get("job_id")),
        ("python / torch", f"{meta.get('python') or '?'} / {meta.get('torch') or '?'}"),
        ("git commit", meta.get("git_commit")), ("device", meta.get("device")),
    ]
    logging = [
        ("statistics every", f"{watch.get('every', info.get('every'))} steps"),
        ("logged steps", f"{info.get('logged_count', 0):,}"),
        ("last step", info.get("last_step")),
        ("dropped histograms", meta.get("dropped_histograms", 0)),
        ("dropped records", meta.get("dropped_records", 0)),
        ("lost records", meta.get("lost_records", 0)),
        ("run folder", info.get("path")),
    ]
    blocks = [
        html.Details(open=True, children=[html.Summary("Configuration"),
                                          kv_table(sorted(config.items())) if config else html.P("none", className="muted")]),
        html.Details(open=True, children=[html.Summary("Dataset"), kv_table(sorted(dataset.items()))
                                          if isinstance(dataset, dict) else html.P(_text(dataset), className="muted")]),
        html.Details(open=False, children=[html.Summary("Model"), kv_table([
            ("class", summary.get("class")), ("parameters", fmt_number(summary.get("parameters"))),
            ("trainable", fmt_number(summary.get("trainable"))), ("tensors", summary.get("tensors")),
        ]), html.Pre(summary.get("text") or "", className="model-text")]),
        html.Details(open=True, children=[html.Summary("Timing and host"), kv_table(timing)]),
        html.Details(open=False, children=[html.Summary("Logging"), kv_table(logging)]),
    ]
    if results:
        # Test-set metrics (test_*, the confusion matrix) are "Test results"; anything else a stack
        # stores there (HF's train_runtime, total_flos, mean train_loss) describes the training.
        shown = [(k, v) for k, v in results.items() if k not in ("confusion_matrix", "class_names")]
        tests = [(k, v) for k, v in shown if str(k).startswith("test_")]
        training = [(k, v) for k, v in shown if not str(k).startswith("test_")]
        matrix = results.get("confusion_matrix")
        names = results.get("class_names") or []
        if training:
            blocks.insert(0, html.Details(open=True, children=[html.Summary("Training summary"), kv_table(training)]))
        if tests or matrix:
            blocks.insert(0, html.Details(open=True, children=[
                html.Summary("Test results"), kv_table(tests),
                confusion_table(matrix, names) if matrix else None,
            ]))
    if meta.get("error"):
        blocks.insert(0, run_error(meta["error"]))
    losses = derived.losses_line(meta)
    if losses:
        blocks.insert(0, html.Div(f"Incomplete run: {losses}", className="error-box losses", role="alert"))
    return blocks


def error_cause(error) -> tuple[str, str]:
    """(the cause in one line, the rest): a failed run's error is "Type: message" then its traceback."""
    text = str(error or "").strip()
    first, _, rest = text.partition("\n")
    return (first[:300] + ("…" if len(first) > 300 else "")), rest.strip()


def run_error(error) -> html.Div:
    """The run's error: its cause in one line, the traceback folded away."""
    cause, details = error_cause(error)
    return html.Div(className="error-box", role="alert", children=[
        html.Strong("The run ended with an error"), html.Div(cause, className="run-error-cause"),
        html.Details(className="run-error", children=[html.Summary("traceback"), html.Pre(details)])
        if details else None,
    ])


def confusion_table(matrix, names) -> html.Table:
    names = list(names) or [str(i) for i in range(len(matrix))]
    header = html.Tr([html.Th("true \\ predicted")] + [html.Th(str(n)) for n in names])
    rows = [html.Tr([html.Th(str(names[i]) if i < len(names) else str(i))] + [html.Td(fmt_number(v)) for v in row])
            for i, row in enumerate(matrix)]
    return html.Table([header, *rows], className="confusion")


def notes_list(notes: list[dict]) -> list:
    if not notes:
        return [html.P("No notes yet.", className="muted")]
    items = []
    for note in reversed(notes):
        where = []
        if note.get("step") is not None:
            where.append(f"step {note['step']}")
        if note.get("layer"):
            where.append(str(note["layer"]))
        items.append(html.Li(className="note", children=[
            html.Div(className="note-head", children=[
                html.Strong(str(note.get("author") or "anonymous")),
                html.Span(" · " + fmt_time(note.get("wall")), className="muted"),
                html.Span(" · " + ", ".join(where), className="muted") if where else None,
            ]),
            html.Div(str(note.get("text", "")), className="note-text"),
        ]))
    return [html.Ul(items, className="notes")]

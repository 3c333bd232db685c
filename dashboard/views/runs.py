"""The Runs page's logic: filter, sort, group and page run summaries; render the table.

The URL carries the view: /?q=dropout&status=running,failed&sort=best_val_loss&desc=0&page=2&group=sweep

The filter takes words (matched anywhere: name, preset, dataset, config, flags) and, for sweeps,
terms: `lr=0.01`, `lr<0.1`, `optimizer!=sgd` (a config key, nested keys dotted), `flag:overfitting`
(`flag:any`, `flag:none`), `status:failed`, `sweep:NAME`, `tag:NAME`. `group` groups the rows by
`sweep`, `tag` or a config key, each group headed by its size and its best validation loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from urllib.parse import urlencode

from dash import dcc, html

from .. import components, ids
from ..data import RunStore

PAGE_SIZE = 100
STATUSES = ("running", "finished", "failed", "stopped", "stale", "error")
COLUMNS = (  # key, label, sortable
    ("name", "Run", True), ("status", "Status", True), ("dataset", "Dataset", True), ("preset", "Preset", True),
    ("config", "Config", False), ("steps", "Steps", True), ("best_val_loss", "Best val loss", True),
    ("last_val_loss", "Last val loss", True), ("flags", "Flags", True), ("started", "Started", True),
    ("duration", "Duration", True),
)
SORT_KEYS = {key for key, _, sortable in COLUMNS if sortable}
DEFAULT_SORT = ("started", True)
# A filter term on a config value: key (dotted for nested), operator, value.
TERM_PATTERN = re.compile(r"^([A-Za-z_][\w.\-]*)(!=|<=|>=|=|<|>)(.*)$")
GROUP_PATTERN = re.compile(r"^[A-Za-z_][\w.\-]{0,99}$")


def parse_runs_query(query: dict) -> dict:
    statuses = [s for s in str(query.get("status") or "").split(",") if s in STATUSES]
    sort = query.get("sort") if query.get("sort") in SORT_KEYS else DEFAULT_SORT[0]
    desc_raw = query.get("desc")
    desc = DEFAULT_SORT[1] if desc_raw in (None, "") else str(desc_raw) not in ("0", "false")
    try:
        page = max(1, int(query.get("page") or 1))
    except (TypeError, ValueError):
        page = 1
    group = str(query.get("group") or "")[:100]
    view = {"q": str(query.get("q") or "")[:200], "status": statuses, "sort": sort, "desc": desc, "page": page}
    if GROUP_PATTERN.fullmatch(group):
        view["group"] = group
    return view


def runs_query_string(view: dict) -> str:
    items = []
    if view.get("q"):
        items.append(("q", view["q"]))
    if view.get("status"):
        items.append(("status", ",".join(view["status"])))
    if (view.get("sort"), view.get("desc")) != DEFAULT_SORT:
        items += [("sort", view["sort"]), ("desc", "1" if view["desc"] else "0")]
    if view.get("group"):
        items.append(("group", view["group"]))
    if view.get("page", 1) > 1:
        items.append(("page", view["page"]))
    return "?" + urlencode(items) if items else ""


def row_status(summary: dict) -> str:
    if summary.get("error"):
        return "error"
    if summary.get("pending"):
        return "pending"
    return summary.get("status") or "error"


def _flag_score(summary: dict) -> int:
    flags = summary.get("flags") or {}
    return 10_000 * flags.get("critical", 0) + 100 * flags.get("warning", 0) + flags.get("info", 0)


def _sort_value(summary: dict, key: str):
    if key == "flags":
        return _flag_score(summary)
    if key == "status":
        return row_status(summary)
    value = summary.get(key)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _compare(value, op: str, wanted: str) -> bool:
    """A config value against a filter term's text: numerically when both are numbers, else as text."""
    number = None if value is None or isinstance(value, bool) else _number(value)
    target = _number(wanted)
    if number is not None and target is not None:
        return {"=": number == target, "!=": number != target, "<": number < target, ">": number > target,
                "<=": number <= target, ">=": number >= target}[op]
    text = "none" if value is None else str(value).lower()
    if op == "=":
        return text == wanted.lower()
    if op == "!=":
        return text != wanted.lower()
    return False  # an ordering on text is no match


def _term_matches(summary: dict, term: str) -> bool | None:
    """True/False for a structured term (key=value, flag:, status:, sweep:, tag:), None for a plain word."""
    lowered = term.lower()
    for prefix in ("flag:", "status:", "sweep:", "tag:"):
        if lowered.startswith(prefix):
            wanted = lowered[len(prefix):]
            if prefix == "flag:":
                rules = [r.lower() for r in summary.get("flag_rules") or []]
                return bool(rules) if wanted == "any" else (not rules) if wanted == "none" else \
                    any(wanted in r for r in rules)
            if prefix == "status:":
                return row_status(summary) == wanted
            if prefix == "sweep:":
                return str(summary.get("sweep") or "").lower() == wanted
            return wanted in [t.lower() for t in summary.get("tags") or []]
    match = TERM_PATTERN.fullmatch(term)
    if match:
        key, op, wanted = match.groups()
        values = summary.get("config_values") or {}
        if key not in values:
            return op == "!="  # a run without the key differs from any value
        return _compare(values[key], op, wanted)
    return None


def group_value(summary: dict, group: str) -> str | None:
    """The value of a run for grouping by `group` (sweep, tag, or a config key); None: ungrouped."""
    if group == "sweep":
        return summary.get("sweep") or None
    if group == "tag":
        tags = summary.get("tags") or []
        return ", ".join(sorted(tags)) if tags else None
    values = summary.get("config_values") or {}
    return None if values.get(group) is None else str(values[group])


def filter_sort(summaries: list[dict], view: dict) -> list[dict]:
    """Summaries matching the filter (words anywhere in name, id, preset, dataset, config, flag rules, error;
    terms on config values, flags, status, sweep, tags) and the status filter, sorted by the view's column
    (missing values last either way), grouped when the view groups."""
    terms = [w for w in view.get("q", "").split() if w]
    statuses = set(view.get("status") or [])
    out = []
    for summary in summaries:
        if statuses and row_status(summary) not in statuses:
            continue
        haystack = " ".join(str(summary.get(k) or "") for k in
                            ("name", "run_id", "preset", "dataset", "config", "status", "error", "failure",
                             "sweep")).lower()
        haystack += " " + " ".join(summary.get("flag_rules") or []).lower()
        haystack += " " + " ".join(summary.get("tags") or []).lower()
        ok = True
        for term in terms:
            structured = _term_matches(summary, term)
            if not (structured if structured is not None else term.lower() in haystack):
                ok = False
                break
        if ok:
            out.append(summary)
    key, desc = view.get("sort", DEFAULT_SORT[0]), view.get("desc", True)
    present = [s for s in out if _sort_value(s, key) is not None]
    missing = [s for s in out if _sort_value(s, key) is None]
    present.sort(key=lambda s: (_sort_value(s, key), s.get("run_id")), reverse=desc)
    rows = present + missing
    group = view.get("group")
    if group:  # stable: each group keeps the column's order; groups by value, ungrouped last
        rows.sort(key=lambda s: (group_value(s, group) is None, _group_order(group_value(s, group))))
    return rows


def _group_order(value):
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value or ""))


def group_headers(rows: list[dict], group: str) -> dict:
    """value -> (runs, best validation loss, its run id) over all rows of each group (not only a page)."""
    heads: dict = {}
    for summary in rows:
        value = group_value(summary, group)
        count, best, best_run = heads.get(value, (0, None, None))
        loss = summary.get("best_val_loss")
        if isinstance(loss, int | float) and math.isfinite(loss) and (best is None or loss < best):
            best, best_run = loss, summary.get("name") or summary["run_id"]
        heads[value] = (count + 1, best, best_run)
    return heads


def _group_row(group: str, value, head: tuple) -> html.Tr:
    count, best, best_run = head
    label = f"{group} = {value}" if value is not None else f"no {group}"
    text = f"{label} · {count} run{'s' if count != 1 else ''}"
    if best is not None:
        text += f" · best val loss {components.fmt_number(best)} ({best_run})"
    return html.Tr(className="group-row", children=[html.Td(text, colSpan=len(COLUMNS) + 1)])


def _header(key: str, label: str, sortable: bool, view: dict):
    if not sortable:
        return html.Th(label)
    arrow = ""
    if view.get("sort") == key:
        arrow = " ▼" if view.get("desc") else " ▲"
    return html.Th(html.Button(label + arrow, id=ids.runs_sort_header(key), n_clicks=0,
                               title=f"Sort by {label.lower()}"))


def _row(summary: dict, selected: set) -> html.Tr:
    run_id = summary["run_id"]
    select = dcc.Checklist(id=ids.run_select(run_id), options=[{"label": "", "value": run_id}],
                           value=[run_id] if run_id in selected else [], className="run-select")
    if summary.get("error"):
        return html.Tr(className="error-row", **{"data-run": run_id}, children=[
            html.Td(""), html.Td(html.Code(run_id)), html.Td(components.status_badge("error")),
            html.Td(str(summary["error"]), colSpan=len(COLUMNS) - 2, className="error-text"),
        ])
    if summary.get("pending"):
        return html.Tr(className="pending-row", **{"data-run": run_id}, children=[
            html.Td(""), html.Td(dcc.Link(run_id, href=f"/run?run={run_id}")),
            html.Td("reading…", colSpan=len(COLUMNS) - 1, className="muted"),
        ])
    best = components.fmt_number(summary.get("best_val_loss"))
    if summary.get("best_epoch") is not None and summary.get("best_val_loss") is not None:
        best += f" (epoch {summary['best_epoch']})"
    return html.Tr(**{"data-run": run_id}, children=[
        html.Td(select),
        html.Td([dcc.Link(summary.get("name") or run_id, href=f"/run?run={run_id}", className="run-link"),
                 html.Div(run_id, className="muted small") if run_id != summary.get("name") else None]),
        html.Td([components.status_badge(summary.get("status"), title=summary.get("failure") or ""),
                 html.Div(components.error_cause(summary["failure"])[0][:120], className="small error-text")
                 if summary.get("failure") and summary.get("status") == "failed" else None,
                 html.Div(summary["losses"], className="small error-text losses")
                 if summary.get("losses") else None]),
        html.Td(summary.get("dataset") or "—"),
        html.Td(summary.get("preset") or "—"),
        html.Td(summary.get("config") or "—", className="config"),
        html.Td(components.fmt_number(summary.get("steps")), className="num"),
        html.Td(best, className="num"),
        html.Td(components.fmt_number(summary.get("last_val_loss")), className="num"),
        html.Td(html.Span("diagnosing…", className="muted") if summary.get("flags_pending")
                else components.flag_badges(summary.get("flags") or {}, summary.get("flag_rules_by_severity"))),
        html.Td(components.fmt_time(summary.get("started")), className="small"),
        html.Td(components.fmt_duration(summary.get("duration")), className="num"),
    ])


def _body(shown: list[dict], rows: list[dict], view: dict, selected: set) -> list:
    group = view.get("group")
    if not group:
        return [_row(s, selected) for s in shown]
    heads = group_headers(rows, group)
    body, current = [], object()
    for summary in shown:
        value = group_value(summary, group)
        if value != current:
            body.append(_group_row(group, value, heads[value]))
            current = value
        body.append(_row(summary, selected))
    return body


def runs_table_impl(store: RunStore, view: dict, selected: list[str] | None, budget_s: float = 0.6) -> dict:
    """The table for a view: {"table", "summary" (a line of counts), "pages", "page", "signature",
    "pending"}. The signature changes only when what the table shows changes."""
    try:
        summaries, pending = store.summaries(budget_s=budget_s)
    except Exception as exc:  # a missing log directory is a message, not a crash
        return {"table": components.error_box(str(exc), "Cannot list runs"), "summary": "", "pages": 1, "page": 1,
                "signature": f"error:{exc}", "pending": 0}
    rows = filter_sort(summaries, view)
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(view.get("page", 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    selected_set = set(selected or [])
    counts = {}
    for summary in summaries:
        counts[row_status(summary)] = counts.get(row_status(summary), 0) + 1
    summary_line = f"{len(summaries)} runs" + "".join(
        f" · {counts[s]} {s}" for s in ("running", "finished", "failed", "stopped", "stale", "error", "pending")
        if counts.get(s))
    if len(rows) != len(summaries):
        summary_line += f" · {len(rows)} match"
    signature_src = json.dumps([view, [(s["run_id"], s.get("status"), s.get("steps"), s.get("pending"),
                                        s.get("best_val_loss"), s.get("last_val_loss"), s.get("flags"),
                                        s.get("error"), s.get("flags_pending"), s.get("losses"), round(s.get("duration") or 0))
                                       for s in shown],
                                summary_line], default=str)
    signature = hashlib.sha1(signature_src.encode()).hexdigest()
    if not summaries:
        table = html.P(["No runs yet in ", html.Code(str(store.logdir)), ". Start one on the ",
                        dcc.Link("Launch", href="/launch"), " page or with ", html.Code("gradwatch train"),
                        "."], className="muted")
    else:
        table = html.Table(className="runs", id=ids.RUNS_TABLE + "-body", children=[
            html.Thead(html.Tr([html.Th("")] + [_header(k, label, s, view) for k, label, s in COLUMNS])),
            html.Tbody(_body(shown, rows, view, selected_set)),
        ])
    return {"table": table, "summary": summary_line, "pages": pages, "page": page, "signature": signature,
            "pending": pending}

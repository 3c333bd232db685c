"""The Compare page's logic: several runs overlaid, gradient flow at one step, final metrics.

URL: /compare?runs=ID1,ID2,ID3&step=N
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

from dash import dcc, html

from gradwatch.trainer import derived
from gradwatch.trainer.runlog import schema as log_schema

from .. import components, figures
from ..data import RunStore, config_summary, duration_s, severity_counts
from ..summaries import rules_by_severity

MAX_RUNS = 12


def parse_compare_query(query: dict) -> dict:
    raw = [r.strip() for r in str(query.get("runs") or "").split(",") if r.strip()]
    runs = list(dict.fromkeys(raw))[:MAX_RUNS]
    try:
        step = int(query["step"]) if query.get("step") not in (None, "") else None
    except (TypeError, ValueError):
        step = None
    return {"runs": runs, "step": step if step is None or step >= 0 else None}


def compare_query_string(runs: list[str], step: int | None) -> str:
    items = [("runs", ",".join(runs))] if runs else []
    if step is not None:
        items.append(("step", int(step)))
    return "?" + urlencode(items) if items else ""


def run_label(info: dict) -> str:
    meta = info["meta"]
    name = str(meta.get("name") or info["run_id"])
    preset = (meta.get("config") or {}).get("preset") if isinstance(meta.get("config"), dict) else None
    return f"{name} ({preset})" if preset and preset != name else name


def metrics_rows(data: dict) -> list[dict]:
    """One row of final metrics per run: the regularisation experiments side by side."""
    rows = []
    for run in data["runs"]:
        info, series = run["info"], run["scalars"]
        meta = info["meta"]
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        results = meta.get("results") if isinstance(meta.get("results"), dict) else {}
        epochs = {step: epoch for epoch, step in info.get("epochs") or []}
        last_val = series.get("val_loss")
        # The display series keeps every extreme, so its minimum is the run's best validation loss.
        validation = derived.validation_summary(last_val.steps, last_val.values, epochs) if last_val is not None \
            else derived.validation_summary([], [])
        tests = derived.test_metrics(results)
        last_acc = series.get("val_acc")
        summary = meta.get("model_summary") if isinstance(meta.get("model_summary"), dict) else {}
        rows.append({
            "run_id": info["run_id"], "label": run_label(info), "status": info["status"],
            "preset": config.get("preset") or "", "config": config_summary(config),
            "epochs": len(info.get("epochs") or []), "steps": info.get("last_step"),
            "best_val_loss": validation["best_val_loss"], "best_epoch": validation["best_epoch"],
            "last_val_loss": float(last_val.values[-1]) if last_val is not None and len(last_val.values) else None,
            "last_val_acc": float(last_acc.values[-1]) if last_acc is not None and len(last_acc.values) else None,
            "test_accuracy": tests["test_accuracy"], "test_macro_f1": tests["test_macro_f1"],
            "parameters": summary.get("parameters"), "flags": severity_counts(run["flags"]),
            "flag_rules": rules_by_severity(run["flags"]),
            "duration": duration_s(meta, info["status"]),
        })
    return rows


METRIC_COLUMNS = (
    ("label", "Run"), ("status", "Status"), ("config", "Config"), ("epochs", "Epochs"),
    ("best_val_loss", "Best val loss"), ("best_epoch", "at epoch"), ("last_val_loss", "Last val loss"),
    ("last_val_acc", "Last val acc"), ("test_accuracy", "Test accuracy"), ("test_macro_f1", "Test macro F1"),
    ("parameters", "Parameters"), ("flags", "Flags"), ("duration", "Duration"),
)


def metrics_table(rows: list[dict]) -> html.Table:
    best_loss = min((r["best_val_loss"] for r in rows if r["best_val_loss"] is not None), default=None)
    best_acc = max((r["test_accuracy"] for r in rows if r["test_accuracy"] is not None), default=None)
    body = []
    for index, row in enumerate(rows):
        cells = []
        for key, _ in METRIC_COLUMNS:
            value = row.get(key)
            if key == "label":
                cell = html.Td([html.Span("■ ", style={"color": figures.run_color(index)}),
                                dcc.Link(value, href=f"/run?run={row['run_id']}")])
            elif key == "status":
                cell = html.Td(components.status_badge(value))
            elif key == "flags":
                cell = html.Td(components.flag_badges(value, row.get("flag_rules")))
            elif key == "duration":
                cell = html.Td(components.fmt_duration(value), className="num")
            elif key == "config":
                cell = html.Td(value or "—", className="config")
            else:
                strong = (key == "best_val_loss" and value is not None and value == best_loss) or \
                         (key == "test_accuracy" and value is not None and value == best_acc)
                text = components.fmt_number(value)
                cell = html.Td(html.Strong(text) if strong else text, className="num")
            cells.append(cell)
        body.append(html.Tr(cells))
    return html.Table(className="runs", children=[
        html.Thead(html.Tr([html.Th(label) for _, label in METRIC_COLUMNS])), html.Tbody(body)])


def compare_impl(store: RunStore, run_ids: list[str], step: int | None) -> dict:
    """Figures, table and messages for the selected runs; a signature that changes with the data."""
    data = store.compare_runs(run_ids, step)
    errors = [f"{run_id}: {error}" for run_id, error in data["errors"].items()]
    notes = []
    labelled = []
    for run in data["runs"]:
        info = run["info"]
        labelled.append({"label": run_label(info), "epochs": info.get("epochs") or [],
                         "series": {name: s.as_lists() for name, s in run["scalars"].items()}})
    curves = figures.compare_curves_chart(labelled) if data["runs"] else \
        figures.empty_figure("pick two or more runs to compare", height=300)
    flows = [{"label": run_label(r["info"]), "flow": data["flows"][r["info"]["run_id"]]}
             for r in data["runs"] if r["info"]["run_id"] in data["flows"]]
    flow = figures.compare_flow_chart(flows, data["step"])
    rows = metrics_rows(data)
    layer_sets = {tuple(r["info"]["param_layers"]) for r in data["runs"]}
    if len(layer_sets) > 1:
        notes.append("The runs have different layers: the gradient-flow chart shows each run's own layers.")
    signature = hashlib.sha1(json.dumps(
        [run_ids, data["step"], [(r["info"]["run_id"], r["info"]["cursors"], r["info"]["status"]) for r in data["runs"]]],
        default=str).encode()).hexdigest()
    return {"curves": curves, "flow": flow, "table": metrics_table(rows) if rows else html.P(
        "No runs selected.", className="muted"), "rows": rows, "errors": errors, "notes": notes, "step": data["step"],
        "max_step": data["common_step"], "running": any(r["info"]["status"] == "running" for r in data["runs"]),
        "signature": signature, "valid": [r["info"]["run_id"] for r in data["runs"]]}


def run_options(store: RunStore) -> list[dict]:
    summaries, _ = store.summaries(budget_s=0.3)
    options = []
    for s in summaries:
        if s.get("error") or not log_schema.is_valid_run_id(s["run_id"]):
            continue
        label = s.get("name") or s["run_id"]
        if s.get("preset") and s["preset"] != label:
            label += f" ({s['preset']})"
        if s["run_id"] != (s.get("name") or s["run_id"]):
            label += f" · {s['run_id']}"
        options.append({"label": label, "value": s["run_id"]})
    return options

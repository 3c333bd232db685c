"""`gradwatch inspect`: a run's state in one JSON object or a readable table. Torch-free."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import derived
from .runlog import RunReader


def _number(value):
    """JSON-safe number: NaN/Inf become strings, the way `json` cannot show them."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def scalar_summary(scalars: pd.DataFrame) -> dict:
    summary = {}
    for name, group in scalars.groupby("name", sort=True):
        values = group["value"].to_numpy(dtype=float)
        steps = group["step"].to_numpy()
        finite = np.isfinite(values)
        entry = {"count": int(len(values)), "first": _number(values[0]), "last": _number(values[-1])}
        if finite.any():
            masked_min = np.where(finite, values, np.inf)
            masked_max = np.where(finite, values, -np.inf)
            i_min, i_max = int(np.argmin(masked_min)), int(np.argmax(masked_max))
            entry.update(min=_number(values[i_min]), max=_number(values[i_max]),
                         step_of_min=int(steps[i_min]), step_of_max=int(steps[i_max]))
        else:
            entry.update(min=None, max=None, step_of_min=None, step_of_max=None)
        entry["nonfinite"] = int((~finite).sum())
        summary[name] = entry
    return summary


def summarize_run(run_dir) -> dict:
    """The inspect report of one run folder (raises RunLogError for unreadable folders)."""
    with RunReader(run_dir) as reader:
        steps, _ = reader.steps()
        scalars, _ = reader.scalars()
        tensors = reader.tensors()
        last_step = None if steps.empty else int(steps["step"].max())
        layers = []
        if last_step is not None:
            stats, _ = reader.layer_stats(kinds=("grad", "weight"), step_min=last_step, step_max=last_step)
            grad = derived.layer_values_at(stats, "grad_norm")
            weight = derived.layer_values_at(stats, "weight_norm")
            param_layers = tensors[tensors["role"] == "param"]["layer"]
            for layer in dict.fromkeys(param_layers):
                layers.append({
                    "name": layer,
                    "grad_norm": _number(grad.get(layer)),
                    "weight_norm": _number(weight.get(layer)),
                })
        facts = derived.run_summary(reader)
        meta = reader.meta
        scalar_last = None if scalars.empty else int(scalars["step"].max())
        return {
            "run": reader.run_id,
            "name": meta.get("name"),
            "status": reader.status(),
            "error": meta.get("error"),
            "steps_logged": int(len(steps)),
            "last_step": max((s for s in (last_step, scalar_last) if s is not None), default=None),
            "scalars": scalar_summary(scalars),
            "layers": layers,
            "dropped": int(meta.get("dropped_histograms", 0) or 0),
            "dropped_records": int(meta.get("dropped_records", 0) or 0),
            "lost_records": int(meta.get("lost_records", 0) or 0),
            "losses": derived.losses_line(meta),
            "dataset": (meta.get("dataset") or {}).get("name"),
            "summary": {key: value if isinstance(value, str) or value is None else _number(value)
                        for key, value in facts.items()},
        }


def format_summary(summary: dict) -> str:
    """A readable version of summarize_run's report."""
    lines = [
        f"run       {summary['run']}  ({summary.get('name') or '-'})",
        f"status    {summary['status']}" + (f"  - {summary['error'].splitlines()[0]}" if summary.get("error") else ""),
        f"dataset   {summary.get('dataset') or '-'}",
        f"logged    {summary['steps_logged']} layer records; last step {summary['last_step']}; "
        f"histograms dropped {summary['dropped']}",
    ]
    if summary.get("losses"):
        lines.append(f"LOST      {summary['losses']}")
    lines.append("")
    facts = summary.get("summary") or {}
    if facts.get("best_val_loss") is not None:
        lines += [f"best val  {_fmt(facts['best_val_loss'])} at epoch {_fmt(facts.get('best_epoch'))} "
                  f"(step {_fmt(facts.get('best_step'))}); last {_fmt(facts.get('last_val_loss'))}", ""]
    if facts.get("test_accuracy") is not None:
        lines += [f"test      accuracy {_fmt(facts['test_accuracy'])}, macro-F1 {_fmt(facts.get('test_macro_f1'))}", ""]
    if summary["scalars"]:
        w = _name_width(summary["scalars"], "scalar", 24)
        lines.append(f"{'scalar':{w}s} {'count':>7s} {'last':>12s} {'min':>12s} {'@step':>7s} {'max':>12s} {'@step':>7s}")
        for name, s in summary["scalars"].items():
            lines.append(
                f"{_fit(name, w):{w}s} {s['count']:7d} {_fmt(s['last']):>12s} {_fmt(s['min']):>12s} "
                f"{_fmt(s['step_of_min']):>7s} {_fmt(s['max']):>12s} {_fmt(s['step_of_max']):>7s}"
            )
        lines.append("")
    if summary["layers"]:
        w = _name_width([layer["name"] for layer in summary["layers"]], "layer (forward order)", 32)
        lines.append(f"{'layer (forward order)':{w}s} {'grad norm':>12s} {'weight norm':>12s}")
        for layer in summary["layers"]:
            lines.append(f"{_fit(layer['name'], w):{w}s} {_fmt(layer['grad_norm']):>12s} {_fmt(layer['weight_norm']):>12s}")
    else:
        lines.append("no layer records yet")
    return "\n".join(lines)


NAME_MAX_WIDTH = 64  # a name column never wider; longer names keep their head and their tail


def _name_width(names, header: str, least: int) -> int:
    return min(NAME_MAX_WIDTH, max([least, len(header)] + [len(str(n)) for n in names]))


def _fit(name: str, width: int) -> str:
    """A name in `width` characters: whole when it fits, else its start and its end around "…"
    (BERT's ...attention.self.query and ...self.key differ only at the end: cutting the end off
    made them identical rows)."""
    name = str(name)
    if len(name) <= width:
        return name
    tail = (width - 1) * 2 // 3
    return name[:width - 1 - tail] + "…" + name[-tail:]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"

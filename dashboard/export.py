"""A run's report as one self-contained HTML file: figures (plotly.js inlined), flags, config, notes.

    gradwatch export logs/20250101-120000-overfit-ab12 -o overfit.html
    from gradwatch.dashboard.export import export_run; export_run(run_dir, "report.html")

The figures are drawn by dashboard.figures, the builders of the live pages. All run text (names,
config values, notes, flag explanations) is HTML-escaped: the file never carries markup from data.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import stat
import tempfile
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from gradwatch.trainer import derived

from .components import RULE_TITLES, error_cause, fmt_duration, fmt_number, fmt_steps, fmt_time, remedy_href
from .data import RunFolders, RunLogError, RunNotFound, RunStore, config_summary, dataset_label, duration_s
from .views import run_charts

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;margin:24px auto;max-width:1300px;
padding:0 16px;font-size:14px}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px
solid #e3e6ea;padding-bottom:4px}.muted{color:#6b7280}.badge{display:inline-block;padding:2px 8px;border-radius:10px;
color:#fff;font-size:12px;font-weight:600}.critical{background:#c62828}.warning{background:#ef6c00}.info{background:#1565c0}
.flag{border:1px solid #e3e6ea;border-left:5px solid #1565c0;border-radius:6px;padding:8px 12px;margin:10px 0}
.flag.sev-critical{border-left-color:#c62828}.flag.sev-warning{border-left-color:#ef6c00}table{border-collapse:collapse}
td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top;font-size:13px}th{color:#6b7280;font-weight:500}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}pre{background:#f6f7f9;padding:8px;
overflow:auto;font-size:12px}.note{border-bottom:1px solid #eee;padding:6px 0;white-space:pre-wrap}code{font-size:12px}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _figure_div(fig, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _kv(items) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v if not isinstance(v, (dict, list)) else json.dumps(v))}</td></tr>"
                   for k, v in items)
    return f"<table>{rows}</table>"


def _flags_html(flags: list[dict], config: dict) -> str:
    if not flags:
        return "<p class='muted'>No problems found.</p>"
    parts = []
    for flag in flags:
        severity = flag.get("severity", "info")
        evidence = _kv((k.replace("_", " "), fmt_number(v) if not isinstance(v, (dict, list)) else v)
                       for k, v in (flag.get("evidence") or {}).items())
        remedies = []
        for i, text in enumerate(flag.get("remedies") or []):
            rid = (flag.get("remedy_ids") or [None] * (i + 1))[i] if i < len(flag.get("remedy_ids") or []) else None
            hint = f" <span class='muted'>(dashboard: {_e(remedy_href(rid, config))})</span>" \
                if rid and remedy_href(rid, config) else ""
            remedies.append(f"<li>{_e(text)}{hint}</li>")
        layers = ", ".join(_e(layer) for layer in flag.get("layers") or []) or "whole run"
        parts.append(
            f"<div class='flag sev-{_e(severity)}'><span class='badge {_e(severity)}'>{_e(severity)}</span> "
            f"<b>{_e(RULE_TITLES.get(flag.get('rule'), flag.get('rule')))}</b> "
            f"<span class='muted'>{_e(fmt_steps(flag.get('first_step'), flag.get('last_step')))} · {layers}</span>"
            f"<p>{_e(flag.get('explanation'))}</p><details><summary>evidence</summary>{evidence}</details>"
            + (f"<b>Remedies</b><ul>{''.join(remedies)}</ul>" if remedies else "") + "</div>")
    return "".join(parts)


def _error_html(error) -> str:
    if not error:
        return ""
    cause, details = error_cause(error)
    folded = f"<details><summary>traceback</summary><pre>{_e(details)}</pre></details>" if details else ""
    return f"<div style='color:#c62828'><b>Error:</b> {_e(cause)}{folded}</div>"


def _losses_html(meta: dict) -> str:
    losses = derived.losses_line(meta)
    return f"<div class='losses' style='color:#c62828'><b>Incomplete run:</b> {_e(losses)}</div>" if losses else ""


def render_report(store: RunStore, run_id: str) -> str:
    """The report of one run of `store` as an HTML string (RunNotFound for a bad id)."""
    info = store.run_info(run_id)
    meta = info["meta"]
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    flags_result = store.flags(run_id, status=info["status"])
    flags = flags_result["flags"]
    notes = store.notes(run_id)
    layer_for = info["param_layers"][0] if info["param_layers"] else None
    args = run_charts.ChartArgs(run_id=run_id, layer=layer_for, step={"step": None, "follow": True},
                                notes=tuple(notes), flags=tuple(flags), info=info,
                                shape={"layers": len(info["layers"]),
                                       "activations": sum(1 for t in info["tensors"] if t["role"] != "param")})
    # Every chart the registry marks for export, in page order: half-width ones in the grid.
    drawn = [(chart, run_charts.render(chart, store, args)["figure"]) for chart in run_charts.CHARTS if chart.export]
    grid = "".join(f"<div>{_figure_div(fig, chart.id)}</div>" for chart, fig in drawn if not chart.wide)
    wide = "".join(_figure_div(fig, chart.id) for chart, fig in drawn if chart.wide)
    results = meta.get("results") if isinstance(meta.get("results"), dict) else {}
    facts = store.run_facts(run_id)
    facts_rows = [("best val loss", f"{fmt_number(facts['best_val_loss'])} (epoch {fmt_number(facts['best_epoch'])})"),
                  ("last val loss", fmt_number(facts["last_val_loss"])),
                  ("test accuracy", fmt_number(facts["test_accuracy"])),
                  ("test macro F1", fmt_number(facts["test_macro_f1"])),
                  ("gradient gap (last / first layer)", fmt_number(facts["grad_gap"]))]
    notes_html = "".join(
        f"<div class='note'><b>{_e(n.get('author'))}</b> <span class='muted'>{_e(fmt_time(n.get('wall')))}"
        f"{' · step ' + _e(n.get('step')) if n.get('step') is not None else ''}"
        f"{' · ' + _e(n.get('layer')) if n.get('layer') else ''}</span><br>{_e(n.get('text'))}</div>"
        for n in notes) or "<p class='muted'>No notes.</p>"
    summary = meta.get("model_summary") if isinstance(meta.get("model_summary"), dict) else {}
    title = str(meta.get("name") or run_id)
    head = (f"{_e(info['status'])} · {_e(dataset_label(meta.get('dataset')))} · {_e(config_summary(config))} · "
            f"started {_e(fmt_time(meta.get('started')))} · {_e(fmt_duration(duration_s(meta, info['status'])))}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch report: {_e(title)}</title>
<meta name="generator" content="gradwatch dashboard export"><style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body>
<h1>{_e(title)}</h1><div class="muted">run <code>{_e(run_id)}</code> · {head}</div>
{_error_html(meta.get('error'))}
{_losses_html(meta)}
<h2>Summary</h2>{_kv(facts_rows)}
<h2>Flags</h2>{_flags_html(flags, config)}
<h2>Charts</h2><div class="grid">{grid}</div>{wide}
<h2>Team notes</h2>{notes_html}
<h2>Configuration</h2>{_kv(sorted(config.items()))}
<h2>Dataset</h2>{_kv(sorted(meta['dataset'].items())) if isinstance(meta.get('dataset'), dict) else _e(meta.get('dataset'))}
<h2>Results</h2>{_kv((k, v) for k, v in results.items()) if results else "<p class='muted'>none</p>"}
<h2>Model</h2>{_kv([("class", summary.get("class")), ("parameters", summary.get("parameters")),
                     ("trainable", summary.get("trainable"))])}<pre>{_e(summary.get("text"))}</pre>
<h2>Run</h2>{_kv([("host", meta.get("host")), ("pid", meta.get("pid")), ("started", fmt_time(meta.get("started"))),
                  ("ended", fmt_time(meta.get("ended"))), ("git commit", meta.get("git_commit")),
                  ("python / torch", f"{meta.get('python')} / {meta.get('torch')}"),
                  ("logged steps", info.get("logged_count")), ("dropped histograms", meta.get("dropped_histograms", 0)),
                  ("dropped records", meta.get("dropped_records", 0)),
                  ("lost records", meta.get("lost_records", 0))])}
</body></html>
"""


def export_run(run_dir: str | os.PathLike, output: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the report of the run folder `run_dir` to `output` (default: <run_dir>/report.html).
    Raises RunNotFound (a RunLogError) with a clear message for a folder that is not a readable run."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise RunNotFound(f"{str(run_dir)!r} is not a run folder (not a directory)")
    store = RunStore(folders=_OneFolder(run_dir, cache_dir))
    report = render_report(store, run_dir.name)
    out = Path(output) if output else run_dir / "report.html"
    write_regular_file(out, report.encode("utf-8"))
    return out


class ExportError(RunLogError):
    """The report cannot be written where asked; the message is one line naming the path and why."""


def _target_problem(out: Path) -> str | None:
    """Why `out` must not be replaced: only a missing path or a regular, writable file of ours is."""
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link (write the report to a regular file)"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory (name the HTML file to write, e.g. DIR/report.html)"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if not info.st_mode & stat.S_IWUSR:
        return "is read-only"
    return None


def write_regular_file(out: Path, data: bytes) -> None:
    """Write `data` to the regular file `out` atomically (a temporary file beside it, then a rename),
    never replacing a device, a folder or a link; on any failure nothing is left behind and the
    error is one line (ExportError)."""
    problem = _target_problem(out)
    if problem:
        raise ExportError(f"cannot write the report to {str(out)!r}: it {problem}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {str(out.parent)!r} for the report: {exc.strerror or exc}") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # a report is for sharing (mkstemp makes 0600)
            handle.write(data)
        problem = _target_problem(out)  # checked again: the path may have changed meanwhile
        if problem:
            raise ExportError(f"cannot write the report to {str(out)!r}: it {problem}")
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        raise ExportError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _OneFolder(RunFolders):
    """The run folders of a store over one folder named on the command line: unlike a run id from a
    URL, its name may hold spaces or non-ASCII letters (the user chose the path; nothing is resolved
    from a request)."""

    def __init__(self, run_dir: Path, cache_dir: str | os.PathLike | None = None):
        super().__init__(run_dir.parent, cache_dir)
        self._folder = run_dir

    def run_dir(self, run_id: str) -> Path:
        return self._folder if run_id == self._folder.name else super().run_dir(run_id)

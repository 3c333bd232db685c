"""Pure figure builders: plain data (from dashboard.data) in, plotly go.Figure out.

The same builders draw the live page, the page of a finished run, the Compare page and the exported
HTML report, so the views cannot drift apart. Every trace that the live poller may extend carries a
`meta` key ("scalar:train_loss", "layer:net.0", ...): `trace_keys(fig)` lists them in trace order so
new points go to the right trace. Step-based charts keep trace 0 for team notes (markers on an
overlay axis at the top of the plot), so a new note replaces that trace and touches nothing else.

User text (notes) reaches figures only through `escape_text`: plotly renders a subset of HTML in
hover labels and annotations, so `<`, `>` and `&` are escaped to show as typed.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from gradwatch.trainer.runlog import schema as log_schema

UPDATE_RATIO_GUIDE = 1e-3  # Karpathy's rule of thumb: |dW|/|W| around 1e-3 per step
NOTES_KEY = "notes"
RUN_COLORS = qualitative.Plotly + qualitative.D3
SEVERITY_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
TRAIN_COLOR, VAL_COLOR, TRAIN_STEP_COLOR = "#1f77b4", "#d62728", "rgba(31,119,180,0.35)"
# A small template (the look of "plotly_white"): the named template is ~6 kB per figure and ~15 ms to
# validate each time it is applied; this one is built once and costs ~1 ms.
_AXIS = dict(gridcolor="#ebf0f8", linecolor="#ebf0f8", zerolinecolor="#ebf0f8", ticks="", automargin=True)
TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", colorway=qualitative.Plotly, font=dict(color="#2a3f5f"),
    xaxis=_AXIS, yaxis=_AXIS, hoverlabel=dict(align="left"),
))
BASE_LAYOUT = dict(
    template=TEMPLATE,
    margin=dict(l=60, r=20, t=78, b=44),
    legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0, font=dict(size=10)),
    hovermode="x unified",
    font=dict(size=12),
)
# Figures with subplot titles keep their legend at the right, clear of the titles.
RIGHT_LEGEND = dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.01, font=dict(size=10))
LOSS_NAMES = ("train_loss", "epoch_train_loss", "val_loss")
ACC_NAMES = ("train_acc", "val_acc")
HIDDEN_SCALARS = ("epoch",)


def escape_text(text) -> str:
    """User text for plotly labels: escaped so it shows as typed, never as markup."""
    return html.escape(str(text if text is not None else ""), quote=False)


def scalar_group(name: str) -> str | None:
    """Which run-page chart shows a scalar: 'loss', 'accuracy', 'signals' or None (hidden)."""
    if name in HIDDEN_SCALARS:
        return None
    lowered = name.lower()
    if "loss" in lowered:
        return "loss"
    if "acc" in lowered:
        return "accuracy"
    return "signals"


def layer_colors(layers: list[str]) -> dict[str, str]:
    """Colours by depth (dark = first layer, yellow = last), the same in every per-layer chart."""
    if not layers:
        return {}
    if len(layers) == 1:
        return {layers[0]: sample_colorscale("Viridis", [0.0])[0]}
    points = [i / (len(layers) - 1) * 0.9 for i in range(len(layers))]
    return dict(zip(layers, sample_colorscale("Viridis", points)))


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def plain(values, sig: int | None = None) -> np.ndarray:
    """Values for a trace that the live poller extends: an object array (NaN/Inf -> None), optionally
    rounded to `sig` significant digits (display precision; a third of the JSON).

    plotly.py sends numeric numpy arrays as typed-array blobs, which Plotly.extendTraces cannot
    extend; an object array is sent as a plain JSON list and still validates as fast as numpy."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if sig is not None:
            arr = round_sig(arr, sig)
        out = arr.astype(object)
        out[~finite] = None
        return out
    return arr.astype(object)


def round_sig(values, sig: int) -> np.ndarray:
    """Round to `sig` significant digits, elementwise (NaN/Inf/0 unchanged)."""
    arr = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(arr)))
        exponent = np.where(np.isfinite(exponent), exponent, 0)
        decimals = (sig - 1 - exponent).astype(np.int64)
        scale = np.power(10.0, decimals)
        rounded = np.round(arr * scale) / scale
    return np.where(np.isfinite(rounded), rounded, arr)


def trace_keys(fig: go.Figure | dict) -> list:
    data = fig["data"] if isinstance(fig, dict) else fig.data
    return [(t.get("meta") if isinstance(t, dict) else t.meta) for t in data]


def empty_figure(message: str, height: int = 260) -> go.Figure:
    fig = go.Figure(layout=dict(BASE_LAYOUT, height=height))
    fig.update_layout(
        xaxis=dict(visible=False), yaxis=dict(visible=False),
        annotations=[dict(text="<br>".join(escape_text(line) for line in str(message).split("\n")), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                          font=dict(size=13, color="#666"))],
    )
    return fig


# ---- notes and markers ----------------------------------------------------------------------------
def notes_trace_values(notes: list[dict]) -> dict:
    """x / y / hovertext of the notes trace (markers at the top of a step chart)."""
    located = [n for n in notes if n.get("step") is not None]
    text = []
    for note in located:
        where = f"step {note['step']}" + (f", {escape_text(note['layer'])}" if note.get("layer") else "")
        text.append(f"<b>{escape_text(note.get('author') or 'anonymous')}</b> ({where})<br>"
                    f"{escape_text(note.get('text', ''))[:300]}")
    return {"x": [int(n["step"]) for n in located], "y": [0.97] * len(located), "hovertext": text}


def _add_notes_trace(fig: go.Figure, notes: list[dict], overlay: str = "y99", base_axis: str = "y") -> None:
    values = notes_trace_values(notes)
    fig.add_trace(go.Scatter(
        x=values["x"], y=values["y"], hovertext=values["hovertext"], hoverinfo="text", mode="markers",
        marker=dict(symbol="triangle-down", size=11, color="#6a1b9a", line=dict(width=1, color="white")),
        name="notes", meta=NOTES_KEY, yaxis=overlay, showlegend=bool(values["x"]), cliponaxis=False,
    ))
    axis_name = "yaxis" + overlay[1:]
    fig.layout[axis_name] = dict(range=[0, 1], overlaying=base_axis, visible=False, fixedrange=True)


def _mark_selected_step(fig: go.Figure, step: int | None, **where) -> None:
    if step is not None:
        fig.add_vline(x=step, line=dict(color="#888", width=1, dash="dot"), **where)


def _step_range(fig: go.Figure, step_range: tuple | None, **where) -> None:
    if step_range and step_range[0] is not None and step_range[1] is not None:
        fig.update_xaxes(range=[step_range[0], step_range[1]], autorange=False, **where)


def _base(fig: go.Figure, title: str, height: int, uirevision: str | None, legend_right: bool = False) -> go.Figure:
    fig.update_layout(BASE_LAYOUT, height=height, uirevision=uirevision,
                      title=dict(text=title, x=0.01, xanchor="left", y=0.985, yanchor="top", font=dict(size=14)))
    if legend_right:
        fig.update_layout(legend=RIGHT_LEGEND, margin=dict(r=110, t=60))
    _whole_number_ticks(fig)
    return fig


SHORT_AXIS_SPAN = 10  # an x axis of whole numbers (steps, epochs) spanning fewer than this: a tick per number


def _whole_number_ticks(fig: go.Figure) -> None:
    """Steps and epochs are whole numbers: on a short run plotly would tick them in halves (a step
    axis from -1 to 3 by 0.5). Traces' x are sorted, so their ends give the span."""
    ends = []
    for trace in fig.data:
        if trace.meta == NOTES_KEY or getattr(trace, "orientation", None) == "h" or trace.x is None or not len(trace.x):
            continue
        for value in (trace.x[0], trace.x[-1]):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                return  # categories or dates: not a number axis
            ends.append(float(value))
    if ends and all(math.isfinite(v) and v.is_integer() for v in ends) and max(ends) - min(ends) < SHORT_AXIS_SPAN:
        fig.update_xaxes(tick0=0, dtick=1)


# ---- scalar charts -----------------------------------------------------------------------------
def _scalar_trace(s: dict, name: str, **style) -> go.Scatter:
    return go.Scatter(x=plain(s["steps"]), y=plain(s["values"], sig=7), name=escape_text(name), meta=f"scalar:{name}",
                      **style)


def _bad_marker_trace(s: dict, name: str, y: float) -> go.Scatter:
    return go.Scatter(
        x=s["bad_steps"], y=[y] * len(s["bad_steps"]), mode="markers", name=f"{escape_text(name)} NaN/Inf",
        marker=dict(symbol="x", color="#c62828", size=9), meta=f"bad:{name}",
        hovertemplate=f"{escape_text(name)} is NaN/Inf at step %{{x}}<extra></extra>",
    )


def _style_for(name: str) -> dict:
    if name == "train_loss":
        return dict(mode="lines", line=dict(color=TRAIN_STEP_COLOR, width=1), name="train loss (per step)")
    if name in ("epoch_train_loss", "train_acc"):
        return dict(mode="lines+markers", line=dict(color=TRAIN_COLOR, width=2), marker=dict(size=6))
    if name in ("val_loss", "val_acc"):
        return dict(mode="lines+markers", line=dict(color=VAL_COLOR, width=2), marker=dict(size=6))
    return dict(mode="lines", line=dict(width=1.5))


def scalar_chart(series: dict[str, dict], group: str, *, notes=(), overfitting: dict | None = None,
                 step_range: tuple | None = None, selected_step: int | None = None, uirevision: str | None = None,
                 height: int = 360) -> go.Figure:
    """Loss or accuracy curves (training vs validation) over optimizer steps.

    series: name -> {"steps", "values", "bad_steps"} (see data.ScalarSeries.as_lists).
    overfitting: {"best_step", "best_epoch", "onset_step", "last_step"} marks the best epoch and the
    overfitting stretch when the rule fired.
    """
    title = {"loss": "Loss: training vs validation", "accuracy": "Accuracy: training vs validation"}.get(group, group)
    fig = go.Figure()
    _add_notes_trace(fig, list(notes))
    preferred = LOSS_NAMES if group == "loss" else ACC_NAMES
    names = [n for n in preferred if n in series] + sorted(
        n for n in series if n not in preferred and scalar_group(n) == group)
    if not names:
        return empty_figure(f"no {group} logged yet", height=height)
    top = _finite_max([series[n]["values"] for n in names])
    for name in names:
        style = _style_for(name)
        label = style.pop("name", name.replace("_", " "))
        fig.add_trace(_scalar_trace(series[name], label, **style))
        fig.data[-1].meta = f"scalar:{name}"
    for name in names:
        if len(series[name]["bad_steps"]):
            fig.add_trace(_bad_marker_trace(series[name], name, top))
    if group == "loss" and overfitting:
        _mark_overfitting(fig, overfitting)
    _mark_selected_step(fig, selected_step)
    fig.update_xaxes(title_text="optimizer step")
    if group == "accuracy":
        fig.update_yaxes(rangemode="tozero")
    _step_range(fig, step_range)
    fig = _base(fig, title, height, uirevision)
    if group == "loss":
        # A run whose loss spans 3+ decades (a blow-up) is unreadable on a linear axis.
        log = log_axis_wanted([series[n]["values"] for n in names])
        fig.update_yaxes(type="log" if log else "linear", exponentformat="power")
        fig.update_layout(updatemenus=axis_scale_toggle(log, height), margin=dict(b=TOGGLE_BOTTOM_MARGIN))
    return fig


def _finite_max(arrays) -> float:
    best = -math.inf
    for values in arrays:
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr):
            best = max(best, float(arr.max()))
    return best if math.isfinite(best) else 1.0


def _mark_overfitting(fig: go.Figure, marks: dict) -> None:
    best_step, onset, last = marks.get("best_step"), marks.get("onset_step"), marks.get("last_step")
    if onset is not None and last is not None and last > onset:
        fig.add_vrect(x0=onset, x1=last, fillcolor="rgba(198,40,40,0.08)", line_width=0,
                      annotation_text="overfitting", annotation_position="top right",
                      annotation_font=dict(color="#c62828", size=11))
    if best_step is not None:
        label = f"best epoch {marks['best_epoch']}" if marks.get("best_epoch") is not None else "best"
        fig.add_vline(x=best_step, line=dict(color="#2e7d32", width=2, dash="dash"),
                      annotation_text=label, annotation_position="top left",
                      annotation_font=dict(color="#2e7d32", size=11))


def _signal_title(name: str) -> str:
    """The capture's own scalars by what they are; a user's scalars by their name."""
    if name == log_schema.OPTIMIZER_LR:
        return "learning rate (from the optimizer)"
    if name.startswith(log_schema.OPTIMIZER_LR + "_g"):
        return f"learning rate (from the optimizer, param group {name[len(log_schema.OPTIMIZER_LR) + 2:]})"
    if name == log_schema.SENTINEL_GRAD_NORM:
        return "gradient norm (every step)"
    if name == log_schema.SENTINEL_NONFINITE:
        return "NaN/Inf gradient elements (every step)"
    return name.replace("_", " ")


def signal_panels(names: list[str]) -> list[tuple[str, list[str]]]:
    """The Training-signals panels: (title, scalar names). One quantity is one panel, however many
    names it is logged under: the learning rate a user logs (`lr`) and the one gradwatch reads from
    the optimizer (`opt_lr`, per param group) share one; the total gradient norm before clipping
    (`grad_norm_total`), after it (`grad_norm_clipped`) and gradwatch's every-step sentinel share
    another, on one axis. Every other scalar has its own."""
    families = (("learning rate", lambda n: n == "lr" or n == log_schema.OPTIMIZER_LR
                 or n.startswith(log_schema.OPTIMIZER_LR + "_g")),
                ("total gradient norm", lambda n: n in ("grad_norm_total", "grad_norm_clipped",
                                                        log_schema.SENTINEL_GRAD_NORM)))
    panels: list[tuple[str, list[str]]] = []
    for title, member in families:
        found = [n for n in names if member(n)]
        if found:
            panels.append((title if len(found) > 1 else _signal_title(found[0]), found))
    grouped = {n for _, found in panels for n in found}
    panels += [(_signal_title(n), [n]) for n in names if n not in grouped]
    return sorted(panels, key=lambda panel: names.index(panel[1][0]))  # in the order of `names`


def signals_chart(series: dict[str, dict], *, notes=(), step_range=None, selected_step=None, uirevision=None,
                  height_per_row: int = 150) -> go.Figure:
    """Every other scalar (gradient norm, learning rate, a user's own) as stacked small charts, one
    per quantity (see signal_panels)."""
    names = sorted(n for n in series if scalar_group(n) == "signals")
    preferred = [n for n in ("grad_norm_total", "grad_norm_clipped", log_schema.SENTINEL_GRAD_NORM, "lr",
                             log_schema.OPTIMIZER_LR) if n in names]
    names = preferred + [n for n in names if n not in preferred]
    if not names:
        return empty_figure("no other scalars logged", height=160)
    panels = signal_panels(names)
    rows = len(panels)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=min(0.08, 0.3 / rows),
                        subplot_titles=[escape_text(title) for title, _ in panels])
    _add_notes_trace(fig, list(notes))
    color = 0
    for row, (_, members) in enumerate(panels, start=1):
        for index, name in enumerate(members):
            s = series[name]
            fig.add_trace(go.Scatter(x=plain(s["steps"]), y=plain(s["values"]), mode="lines",
                                     name=escape_text(_signal_title(name)), meta=f"scalar:{name}",
                                     # identical series overlap: the later ones dashed, so both show
                                     line=dict(width=1.3, color=run_color(color), dash="dash" if index else None),
                                     showlegend=len(members) > 1, legendgroup=f"row{row}"), row=row, col=1)
            color += 1
        values = np.concatenate([np.asarray(series[n]["values"], dtype=float) for n in members])
        positive = values[np.isfinite(values)]
        if members[0].startswith("grad_norm") or members[0] == log_schema.SENTINEL_GRAD_NORM:
            if len(positive) and positive.min() > 0 and positive.max() / positive.min() > 100:
                fig.update_yaxes(type="log", row=row, col=1)
        if len(positive) and positive.min() == positive.max():
            # A constant (a fixed learning rate): centre it instead of plotly's default -0.5..1.5 span.
            v = float(positive[0])
            pad = abs(v) * 0.5 or 1.0
            fig.update_yaxes(range=[v - pad, v + pad], row=row, col=1)
        for name in members:
            if len(series[name]["bad_steps"]):
                fig.add_trace(_bad_marker_trace(series[name], name, _finite_max([values])), row=row, col=1)
    fig.update_xaxes(title_text="optimizer step", row=rows, col=1)
    _mark_selected_step(fig, selected_step)
    _step_range(fig, step_range)
    fig = _base(fig, "Training signals", 70 + height_per_row * rows, uirevision, legend_right=True)
    fig.update_layout(hovermode="x")
    return fig


# ---- per-layer charts ------------------------------------------------------------------------------
def gradient_flow_chart(flow: dict, *, selected_layer: str | None = None, height: int = 370,
                        uirevision: str | None = None) -> go.Figure:
    """Per-layer gradient norm at one step, log scale, layers in forward order (input -> output)."""
    layers = flow.get("layers") or []
    if not layers:
        return empty_figure("no gradient statistics logged yet", height=height)
    norms = np.asarray(flow["grad_norm"], dtype=float)
    biggest = np.asarray(flow.get("grad_max_abs") or [np.nan] * len(layers), dtype=float)
    bad = np.asarray(flow.get("nonfinite") or [0] * len(layers))
    horizontal = flow_is_horizontal(layers)
    if horizontal:
        marker = _depth_marker(layers, bad, selected_layer)
    else:
        colors = layer_colors(layers)
        bar_colors = []
        for layer, b in zip(layers, bad):
            if b > 0:
                bar_colors.append("#c62828")
            elif selected_layer in layers and layer != selected_layer:
                bar_colors.append(_fade(colors[layer]))
            else:
                bar_colors.append(colors[layer])
        marker = dict(color=bar_colors)
    lengths, text = flow_bar_lengths(norms, bad)
    # Many layers: horizontal bars, one legible name per row, the chart as tall as it needs.
    value_axis, layer_axis = ("x", "y") if horizontal else ("y", "x")
    fig = go.Figure()
    labels = [escape_text(layer) for layer in layers]  # category tick labels render markup too
    fig.add_trace(go.Bar(
        **{layer_axis: labels, value_axis: lengths}, orientation="h" if horizontal else "v",
        marker=dict(marker, line=dict(width=0)),
        name="gradient norm", text=text, textposition="outside", meta="flow",
        customdata=np.stack([norms, biggest, bad], axis=1),
        hovertemplate=f"%{{{layer_axis}}}<br>|grad| = %{{customdata[0]:.3e}}<br>max |g| = %{{customdata[1]:.3e}}"
                      "<br>NaN/Inf elements: %{customdata[2]}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(**{layer_axis: labels,
                                value_axis: np.where(np.isfinite(biggest) & (biggest > 0), biggest, np.nan)},
                             mode="markers", name="max |gradient element|", meta="flow-max",
                             marker=dict(symbol="line-ns-open" if horizontal else "line-ew-open", size=18 if not
                                         horizontal else 10, color="#333"), hoverinfo="skip"))
    step = flow.get("step")
    if horizontal:
        # The value axis on top: a tall chart scrolls in its card, and its top stays in view.
        fig.update_xaxes(type="log", title_text="gradient norm (log)", exponentformat="power", side="top")
        fig.update_yaxes(title_text=None, type="category", autorange="reversed", tickfont=dict(size=10), dtick=1)
        height = max(height, 130 + FLOW_BAR_PX * len(layers))
    else:
        fig.update_yaxes(type="log", title_text="gradient norm (log)", exponentformat="power")
        fig.update_xaxes(title_text="layer (input → output)", type="category")
    fig = _base(fig, f"Gradient flow at step {step}" + (" (input ↓ output)" if horizontal else ""), height, uirevision)
    fig.update_layout(hovermode="closest", bargap=0.25)
    if horizontal:  # title, legend, then the top axis: fixed pixel room whatever the height
        fig.update_layout(margin=dict(t=120), legend=dict(y=1 - 36 / height, yanchor="top", yref="container", x=0,
                                                             xref="paper"))
    return fig


FLOW_VERTICAL_MAX = 24  # more layers than this: horizontal bars
FLOW_VERTICAL_CHARS = 160  # or more label characters than fit under vertical bars (layers x longest name)
ZERO_BAR_DECADES = 1.0  # an exact-zero gradient: a bar this many decades below the smallest nonzero one


def flow_is_horizontal(layers: list[str]) -> bool:
    """Horizontal bars when vertical ones would be squeezed: many layers, or names too long to sit
    side by side under the bars (22 BERT layers of 40 characters each)."""
    longest = max((len(str(layer)) for layer in layers), default=0)
    return len(layers) > FLOW_VERTICAL_MAX or len(layers) * longest > FLOW_VERTICAL_CHARS


def flow_bar_lengths(norms, bad) -> tuple[np.ndarray, list[str] | None]:
    """Bar lengths on the log axis and their labels: a NaN/Inf gradient is the tallest bar
    (labelled "NaN/Inf"), an exact zero the shortest (labelled "0"): a log axis has no 0, so the
    zero bar sits a decade below the smallest nonzero norm (at 1e-12 when every norm is 0)."""
    norms = np.asarray(norms, dtype=float)
    bad = np.asarray(bad)
    nonfinite = ~np.isfinite(norms) | (bad > 0)
    positive = np.isfinite(norms) & (norms > 0) & ~nonfinite
    top = float(norms[positive].max()) if positive.any() else 1.0
    floor = float(norms[positive].min()) / 10**ZERO_BAR_DECADES if positive.any() else 1e-12
    lengths = np.where(positive, norms, np.where(nonfinite, top, floor))
    text = ["NaN/Inf" if n else ("0" if not p else "") for n, p in zip(nonfinite, positive)]
    return lengths, (text if any(text) else None)  # hundreds of empty labels cost as much as the bars
FLOW_BAR_PX = 14
NONFINITE_COLOR = "#c62828"
# Depth colours as numbers on one scale (Viridis 0-0.9, as layer_colors), red at 1 for NaN/Inf: for
# hundreds of bars plotly validates one number array instead of hundreds of colour strings.
DEPTH_SCALE = [[v, sample_colorscale("Viridis", [v])[0]] for v in np.linspace(0, 0.9, 10)] + [
    [0.95, sample_colorscale("Viridis", [0.9])[0]], [0.951, NONFINITE_COLOR], [1.0, NONFINITE_COLOR]]


def _depth_marker(layers: list[str], bad, selected_layer: str | None) -> dict:
    depth = np.linspace(0, 0.9, len(layers)) if len(layers) > 1 else np.zeros(1)
    depth = np.where(np.asarray(bad) > 0, 1.0, depth)
    faded = selected_layer in layers
    opacity = np.where(np.asarray(layers, dtype=object) == selected_layer, 1.0, 0.45) if faded else 1.0
    return dict(color=depth, colorscale=DEPTH_SCALE, cmin=0.0, cmax=1.0, opacity=opacity)


def _fade(rgb: str) -> str:
    if rgb.startswith("rgb("):
        return rgb.replace("rgb(", "rgba(").replace(")", ",0.35)")
    return rgb


def layer_lines_chart(table, *, title: str, y_title: str, key_prefix: str = "layer", log_y: bool = False,
                      guide: float | None = None, guide_label: str = "", selected_layer: str | None = None,
                      notes=(), step_range=None, selected_step=None, uirevision=None, height: int = 360,
                      colors: dict | None = None, empty_message: str = "nothing logged yet") -> go.Figure:
    """One line per layer over steps (table: step index x layer columns, forward order)."""
    if table is None or table.empty or table.shape[1] == 0:
        return empty_figure(empty_message, height=height)
    layers = list(table.columns)
    colors = colors or layer_colors(layers)
    fig = go.Figure()
    _add_notes_trace(fig, list(notes))
    steps = plain(table.index.to_numpy())
    for layer in layers:
        values = table[layer].to_numpy(dtype=float)
        if log_y:
            values = np.where(values > 0, values, np.nan)
        chosen = selected_layer == layer
        fig.add_trace(go.Scatter(
            x=steps, y=plain(values, sig=5), mode="lines", name=escape_text(layer), meta=f"{key_prefix}:{layer}",
            line=dict(color=colors.get(layer), width=3.5 if chosen else 1.4),
            opacity=1.0 if (chosen or not selected_layer) else 0.55, connectgaps=False,
        ))
    if guide is not None:
        fig.add_hline(y=guide, line=dict(color="#c62828", width=1.5, dash="dash"),
                      annotation_text=guide_label or f"{guide:g}", annotation_position="bottom right",
                      annotation_font=dict(color="#c62828", size=11))
    if log_y:
        fig.update_yaxes(type="log", exponentformat="power")
    fig.update_yaxes(title_text=y_title)
    fig.update_xaxes(title_text="optimizer step")
    _mark_selected_step(fig, selected_step)
    _step_range(fig, step_range)
    longest = max(len(str(layer)) for layer in layers)
    long_names = longest > LEGEND_RIGHT_MAX_CHARS
    if long_names:
        # BERT-length names in a right-hand legend squeezed the plot to a third of the card: below it,
        # two names a row (one when they are longer than half a card holds), the chart taller by its rows.
        per_row = 1 if longest > LEGEND_TWO_PER_ROW_MAX_CHARS else 2
        legend_px = LEGEND_ROW_PX * math.ceil(len(layers) / per_row)
        height += legend_px
    fig = _base(fig, title, height, uirevision, legend_right=len(layers) > 6 and not long_names)
    if long_names:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", yref="container", y=(legend_px + 8) / height,
                                      x=0, xanchor="left", entrywidth=1 / per_row, entrywidthmode="fraction",
                                      font=dict(size=10)),
                          margin=dict(b=60 + legend_px))
    fig.update_layout(hovermode="x")
    return fig


LEGEND_RIGHT_MAX_CHARS = 24  # longer layer names: the legend goes below the chart
LEGEND_TWO_PER_ROW_MAX_CHARS = 32
LEGEND_ROW_PX = 20


def activation_chart(saturated, dead, *, selected_layer=None, notes=(), step_range=None, selected_step=None,
                     uirevision=None, height: int = 360) -> go.Figure:
    """Fraction of saturated outputs (sigmoid/tanh at their rails) and of dead units (ReLU never
    firing on a batch), per activation module over steps."""
    has_sat = saturated is not None and not saturated.empty and saturated.shape[1] > 0
    has_dead = dead is not None and not dead.empty and dead.shape[1] > 0
    if not has_sat and not has_dead:
        return empty_figure("no activation statistics\n(saturation needs sigmoid/tanh, dead units ReLU)",
                            height=height)
    panels = [(name, table) for name, table in (("saturated", saturated), ("dead", dead))
              if table is not None and not table.empty and table.shape[1] > 0]
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{name} fraction" for name, _ in panels])
    _add_notes_trace(fig, list(notes))
    layers = list(dict.fromkeys([c for _, t in panels for c in t.columns]))
    colors = layer_colors(layers)
    for col, (name, table) in enumerate(panels, start=1):
        steps = plain(table.index.to_numpy())
        for layer in table.columns:
            chosen = selected_layer == layer
            fig.add_trace(go.Scatter(
                x=steps, y=plain(table[layer].to_numpy(dtype=float), sig=5), mode="lines", name=escape_text(layer), legendgroup=layer,
                showlegend=col == 1 or name == "dead" and layer not in (saturated.columns if has_sat else []),
                meta=f"{name}:{layer}", line=dict(color=colors[layer], width=3.5 if chosen else 1.4),
            ), row=1, col=col)
        fig.update_xaxes(title_text="optimizer step", row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction", row=1, col=1)
    _mark_selected_step(fig, selected_step)
    _step_range(fig, step_range)
    fig = _base(fig, "Activations: saturated and dead fractions", height, uirevision, legend_right=True)
    fig.update_layout(hovermode="x")
    return fig


# ---- histograms -----------------------------------------------------------------------------------
HIST_LABELS = log_schema.hist_bin_labels()


def _bin_label(i: int) -> str:
    """'−|x|≈1e-3.25', '0', '+|x|≈1e-3.25' style labels: sign and log10 magnitude of the bin's lower edge."""
    return HIST_LABELS[i]


def hist_rows(counts: np.ndarray) -> list[list[float]]:
    """Heatmap rows (one per step): log10(1 + count), rounded (enough for colour, small to send)."""
    counts = np.asarray(counts, dtype=float)
    return np.round(np.log10(1.0 + counts), 2).tolist()


def hist_band(counts, margin: int = 4) -> tuple[int, int]:
    """The bins worth sending: from the first to the last non-empty bin over all steps, plus a margin
    (a decade each side), always including the zero bin. Rows outside it are all zeros."""
    counts = np.asarray(counts)
    used = np.nonzero(counts.sum(axis=0))[0] if counts.size else np.array([], dtype=np.int64)
    zero = log_schema.HIST_ZERO_INDEX
    lo = min(int(used.min()), zero) if len(used) else zero
    hi = max(int(used.max()), zero) if len(used) else zero
    return max(0, lo - margin), min(log_schema.HIST_LEN - 1, hi + margin)


def histogram_heatmap(steps, counts, *, kind: str, tensor: str, notes=(), step_range=None, selected_step=None,
                      uirevision=None, height: int = 370, sampled: bool = False,
                      band: tuple[int, int] | None = None) -> go.Figure:
    """A tensor's histograms over time: x = step, y = signed log10-magnitude bin, colour = log count.

    Every layer and step share the same fixed bins (trainer.runlog.schema), so a 1e-9 gradient and a
    1e+3 one show in one picture and no re-binning is needed when steps are appended. Only the band of
    bins in use is sent (`band`, see hist_band); the y axis shows bin positions with decade labels."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return empty_figure(f"no {kind} histograms of {tensor} recorded", height=height)
    counts = np.asarray(counts)
    lo, hi = band or hist_band(counts)
    fig = go.Figure()
    _add_notes_trace(fig, list(notes))
    zero = log_schema.HIST_ZERO_INDEX
    # Zero, then every second decade on each side, leaving room around zero so labels do not collide.
    ticks = [i for i in range(lo, hi + 1) if i == zero or (abs(i - zero) > 4 and (abs(i - zero) - 1) % 8 == 0)]
    fig.add_trace(go.Heatmap(
        x=plain(steps), y=list(range(lo, hi + 1)), transpose=True,
        # An object array: sent as nested JSON lists (extendable), validated at numpy speed.
        z=np.asarray(hist_rows(counts[:, lo:hi + 1]), dtype=float).reshape(len(steps), hi - lo + 1).astype(object),
        colorscale="Viridis", meta="hist", colorbar=dict(title=dict(text="log10(1+n)", side="right"), thickness=12),
        hovertemplate="step %{x}<br>bin %{y}<br>log10(1+count) %{z}<extra></extra>", zmin=0,
    ))
    fig.update_yaxes(range=[lo - 0.5, hi + 0.5], tickmode="array", tickvals=ticks,
                     ticktext=[_short_bin_label(i) for i in ticks], title_text="value (sign · 10^k)")
    fig.update_xaxes(title_text="optimizer step")
    _mark_selected_step(fig, selected_step)
    _step_range(fig, step_range)
    suffix = " (sampled steps)" if sampled else ""
    fig = _base(fig, f"{kind.capitalize()} histogram of {escape_text(tensor)} over time{suffix}", height, uirevision)
    fig.update_layout(hovermode="closest")
    return fig


def _short_bin_label(i: int) -> str:
    if i == log_schema.HIST_ZERO_INDEX:
        return "0"
    edges = log_schema.hist_magnitude_edges()
    if i < log_schema.HIST_ZERO_INDEX:
        k = edges[log_schema.HIST_ZERO_INDEX - 1 - i]
        return f"−1e{k:.0f}"
    k = edges[i - log_schema.HIST_ZERO_INDEX - 1]
    return f"+1e{k:.0f}"


# ---- the lesson's figure -----------------------------------------------------------------------------
def weights_by_epoch_chart(data: dict, *, selected_layer=None, uirevision=None, height: int = 370) -> go.Figure:
    """Loss per epoch beside each layer's weight mean and standard deviation per epoch."""
    mean, std, loss = data.get("mean"), data.get("std"), data.get("loss") or {}
    if mean is None or mean.empty:
        return empty_figure("no weight statistics logged yet", height=height)
    x_label = data.get("x_label", "epoch")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=["loss", "weight mean per layer", "weight std per layer"])
    for name, color, label in (("epoch_train_loss", TRAIN_COLOR, "training loss"),
                               ("val_loss", VAL_COLOR, "validation loss")):
        pairs = loss.get(name) or []
        if pairs:
            fig.add_trace(go.Scatter(x=[p[0] for p in pairs], y=[p[1] for p in pairs], mode="lines+markers",
                                     name=label, line=dict(color=color, width=2), legendgroup="loss"), row=1, col=1)
    colors = layer_colors(list(mean.columns))
    for col, table in ((2, mean), (3, std)):
        for layer in table.columns:
            chosen = selected_layer == layer
            fig.add_trace(go.Scatter(
                x=list(table.index), y=table[layer].to_numpy(dtype=float), mode="lines+markers", name=escape_text(layer),
                legendgroup=layer, showlegend=col == 2, marker=dict(size=5),
                line=dict(color=colors[layer], width=3.5 if chosen else 1.6),
            ), row=1, col=col)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text=x_label, row=1, col=col)
    fig = _base(fig, "Weights per layer over epochs (the lesson's figure)", height, uirevision, legend_right=True)
    fig.update_layout(hovermode="x")
    return fig


# ---- compare -------------------------------------------------------------------------------------
def compare_curves_chart(runs: list[dict], *, height: int = 620) -> go.Figure:
    """Runs overlaid: validation and training loss per epoch, validation accuracy, training loss per step.

    runs: [{"label", "series": name -> {"steps","values"}, "epochs": [(epoch, step)]}].
    """
    if not runs:
        return empty_figure("pick two or more runs to compare", height=300)
    # Room between the rows for the first row's axis titles and the second row's subplot titles.
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.22, horizontal_spacing=0.08,
                        subplot_titles=["validation loss", "training loss (epoch)", "validation accuracy",
                                        "training loss (per step)"])
    panels = ((1, 1, "val_loss"), (1, 2, "epoch_train_loss"), (2, 1, "val_acc"), (2, 2, "train_loss"))
    for index, run in enumerate(runs):
        color = run_color(index)
        step_to_epoch = {s: e for e, s in run.get("epochs") or []}
        in_legend = False  # each run once in the legend, from the first panel it has data in
        for row, col, name in panels:
            s = (run.get("series") or {}).get(name)
            if not s or not len(s["steps"]):
                continue
            per_step = name == "train_loss" or not step_to_epoch
            x = list(s["steps"]) if per_step else [step_to_epoch.get(int(st), int(st)) for st in s["steps"]]
            fig.add_trace(go.Scatter(
                x=x, y=plain(s["values"]), mode="lines" if per_step else "lines+markers", name=escape_text(run["label"]),
                legendgroup=run["label"], showlegend=not in_legend, meta=f"{run['label']}:{name}",
                line=dict(color=color, width=1.2 if name == "train_loss" else 2), marker=dict(size=5),
            ), row=row, col=col)
            in_legend = True
    for row, col, name in panels:
        fig.update_xaxes(title_text="optimizer step" if name == "train_loss" else "epoch", row=row, col=col)
        if name != "val_acc":
            # One diverged run (a loss of 1e21) flattens every other run to 0 on a linear axis.
            values = [((r.get("series") or {}).get(name) or {}).get("values", []) for r in runs]
            if log_axis_wanted(values):
                fig.update_yaxes(type="log", exponentformat="power", row=row, col=col)
                _clip_diverged(fig, runs, values, row, col)
    fig = _base(fig, "Runs side by side", height, None, legend_right=True)
    fig.update_layout(hovermode="x")
    return fig


DIVERGED_DECADES = 3.0  # a run whose loss peaks this many decades above every other run's is "diverged"


def _clip_diverged(fig: go.Figure, runs: list[dict], values: list, row: int, col: int) -> None:
    """On a log axis a loss of 1e21 still squeezes the other runs into a sliver at the bottom: the
    axis ends a decade above the highest of the others, and the diverged run, leaving the chart at
    the top, is named there with its peak."""
    peaks = []
    for run, vals in zip(runs, values):
        arr = np.asarray(vals, dtype=float)
        arr = arr[np.isfinite(arr) & (arr > 0)]
        if len(arr):
            peaks.append((float(arr.max()), float(arr.min()), run["label"]))
    if len(peaks) < 2:
        return
    peaks.sort(reverse=True)
    kept = [p for p in peaks if p[0] < peaks[-1][0] * 10 ** DIVERGED_DECADES] or peaks[-1:]
    gone = [p for p in peaks if p not in kept]
    if not gone or not kept:
        return
    top = max(p[0] for p in kept)
    bottom = min(p[1] for p in peaks)
    # A span of a decade or two: ticks at 1, 2 and 5 (plotly's default labels every digit, overlapping).
    fig.update_yaxes(range=[math.log10(bottom) - 0.1, math.log10(top) + 1.0], dtick="D2", row=row, col=col)
    text = "<br>".join(f"↑ {escape_text(label)}: up to {peak:.2g}" for peak, _, label in gone)
    ref = fig.get_subplot(row, col)
    fig.add_annotation(text=text, xref=f"{ref.xaxis.plotly_name.replace('axis', '')} domain",
                       yref=f"{ref.yaxis.plotly_name.replace('axis', '')} domain", x=0.99, y=0.98, xanchor="right",
                       yanchor="top", showarrow=False, font=dict(size=10, color="#c62828"), align="right")


def compare_flow_chart(flows: list[dict], step: int | None, *, height: int = 360) -> go.Figure:
    """Gradient flow of several runs at the same step: grouped bars per layer, log scale.

    flows: [{"label", "flow": data.gradient_flow() result}]."""
    flows = [f for f in flows if f["flow"].get("layers")]
    if not flows:
        return empty_figure("no gradient statistics to compare", height=height)
    fig = go.Figure()
    order = merged_layer_order([item["flow"]["layers"] for item in flows])
    for index, item in enumerate(flows):
        flow = item["flow"]
        norms = np.asarray(flow["grad_norm"], dtype=float)
        fig.add_trace(go.Bar(
            x=[escape_text(x) for x in flow["layers"]], y=np.where(np.isfinite(norms) & (norms > 0), norms, np.nan), name=escape_text(item["label"]),
            marker=dict(color=run_color(index)),
            hovertemplate=f"{escape_text(item['label'])} (step {flow['step']})<br>%{{x}}: %{{y:.3e}}<extra></extra>",
        ))
    fig.update_yaxes(type="log", title_text="gradient norm (log)", exponentformat="power")
    fig.update_xaxes(title_text="layer (input → output)", type="category", categoryorder="array",
                     categoryarray=[escape_text(x) for x in order])
    fig = _base(fig, f"Gradient flow at step {step}", height, None)
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def merged_layer_order(orders: list[list[str]]) -> list[str]:
    """One input -> output order for the layers of several runs: each layer at its mean relative
    depth (0 = first layer, 1 = last) over the runs that have it. Plotly's own category order is
    first appearance, which puts one run's output layer between another run's hidden layers."""
    depth: dict[str, list[float]] = {}
    for layers in orders:
        for i, layer in enumerate(layers):
            depth.setdefault(layer, []).append(i / max(1, len(layers) - 1))
    first_seen = {layer: i for i, layer in enumerate(depth)}
    rank = {layer: (sum(d) / len(d), first_seen[layer]) for layer, d in depth.items()}
    # Every run's own order is kept (a layer comes after its predecessor in each run that has both);
    # among the layers free to come next, the shallowest first.
    after: dict[str, set[str]] = {layer: set() for layer in depth}
    for layers in orders:
        for before, layer in zip(layers, layers[1:]):
            if before != layer:
                after[layer].add(before)
    order: list[str] = []
    while len(order) < len(depth):
        placed = set(order)
        ready = [layer for layer in depth if layer not in placed and after[layer] <= placed]
        if not ready:  # the runs disagree on the order (a cycle): the shallowest of the rest
            ready = [layer for layer in depth if layer not in placed]
        order.append(min(ready, key=rank.__getitem__))
    return order


# ---- all layers in one picture ------------------------------------------------------------------
ZERO_COLOR = "#9e9e9e"  # exact zeros in a log-coloured heatmap
HEATMAP_ROW_PX = 11  # a row per layer this tall until the picture reaches HEATMAP_MAX_PX
HEATMAP_MAX_PX = 900
HEATMAP_NAMED_ROWS = 60  # up to this many rows: HEATMAP_NAMED_ROW_PX each, every row named
HEATMAP_NAMED_ROW_PX = 14
HEATMAP_LABELLED_STEPS = 12  # up to this many steps (columns): one tick per step


def layer_heatmap(table, *, title: str, value_label: str, log_color: bool = True, flagged: dict | None = None,
                  colorscale: str = "Viridis", zmid: float | None = None, zrange: tuple | None = None,
                  notes=(), step_range=None, uirevision=None, empty_message: str = "nothing logged yet",
                  meta: str = "heatmap") -> go.Figure:
    """Every layer (or layer group) x step in one picture: rows in forward order top to bottom,
    colour = the value (log10 when `log_color`), flagged rows marked with a red triangle at the left.

    table: step index x row columns (already filtered, grouped and downsampled: what is sent is
    what is drawn). Hover names the row, the step and the value."""
    if table is None or table.empty or table.shape[1] == 0:
        return empty_figure(empty_message, height=260)
    rows = [escape_text(c) for c in table.columns]  # category tick labels render markup too
    flagged = {escape_text(k): v for k, v in (flagged or {}).items()}
    values = table.to_numpy(dtype=float).T  # rows x steps
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log10(np.where(values > 0, values, np.nan)) if log_color else values
    shown = np.where(np.isfinite(shown), np.round(shown, 2), np.nan)
    finite = shown[np.isfinite(shown)]
    if zrange is not None:
        zmin, zmax = zrange
    elif len(finite):
        zmin, zmax = float(np.percentile(finite, 1)), float(np.percentile(finite, 99))
        zmin, zmax = (zmin - 0.5, zmax + 0.5) if zmax - zmin < 1e-9 else (zmin, zmax)
    else:
        zmin, zmax = 0.0, 1.0
    if zmid is not None:
        # plotly ignores zmid once zmin/zmax are set: a diverging scale is centred by making the
        # range symmetric around its midpoint, so the scale's middle colour is drawn at zmid.
        half = max(zmax - zmid, zmid - zmin, 0.5)
        zmin, zmax = zmid - half, zmid + half
    colorbar = dict(title=dict(text=value_label, side="right"), thickness=12)
    if log_color:
        ticks = list(range(math.ceil(zmin), math.floor(zmax) + 1))
        if len(ticks) < 3:  # under two decades: five evenly spaced ticks, labelled with their values
            ticks = [float(t) for t in np.linspace(zmin, zmax, 5)]
        ticks = ticks[::max(1, len(ticks) // 6)]
        colorbar.update(tickvals=ticks, ticktext=[f"{10 ** t:.2g}" if not float(t).is_integer() else f"1e{int(t)}"
                                                  for t in ticks])
    value_text = "1e%{z:.2f}" if log_color else "%{z:.3f}"
    fig = go.Figure()
    _add_notes_trace(fig, list(notes))
    fig.add_trace(go.Heatmap(
        # float32 z travels as one base64 typed array (NaN = a gap): ~10x cheaper to build and encode
        # than a list of numbers for the hundreds of rows of a big model, at the same size.
        x=plain(table.index.to_numpy()), y=[escape_text(r) for r in rows], z=shown.astype(np.float32), colorscale=colorscale, zmin=zmin,
        zmax=zmax, colorbar=colorbar, meta=meta, hoverongaps=False,
        hovertemplate=f"%{{y}}<br>step %{{x}}<br>{escape_text(value_label)} = {value_text}<extra></extra>",
    ))
    zeros = (values == 0) if log_color else np.zeros(values.shape, dtype=bool)
    if zeros.any():
        # log10(0) has no colour on the scale: exact zeros get their own grey cells and a legend
        # entry, so a layer that received no gradient is labelled, not left blank like "not logged".
        fig.add_trace(go.Heatmap(
            x=plain(table.index.to_numpy()), y=[escape_text(r) for r in rows],
            z=np.where(zeros, 1.0, np.nan).astype(np.float32), colorscale=[[0, ZERO_COLOR], [1, ZERO_COLOR]],
            showscale=False, meta=f"{meta}-zero", hoverongaps=False, zmin=0, zmax=1,
            hovertemplate=f"%{{y}}<br>step %{{x}}<br>{escape_text(value_label)} = 0 (exactly)<extra></extra>",
        ))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{escape_text(value_label)} exactly 0",
                                 meta=f"{meta}-zero-legend", showlegend=True, hoverinfo="skip",
                                 marker=dict(symbol="square", size=11, color=ZERO_COLOR)))
    marked = [r for r in rows if r in flagged]
    if marked:
        fig.add_trace(go.Scatter(
            x=[0.004] * len(marked), y=[escape_text(r) for r in marked], xaxis="x2", mode="markers", name="flagged layer", meta="flagged",
            marker=dict(symbol="triangle-right", size=11, color="#c62828", line=dict(width=1, color="white")),
            hovertext=[f"{r}: {escape_text(flagged[r])}" for r in marked], hoverinfo="text",
            cliponaxis=False, showlegend=True,
        ))
        fig.layout["xaxis2"] = dict(range=[0, 1], overlaying="x", visible=False, fixedrange=True)
    # Up to HEATMAP_NAMED_ROWS rows each is tall enough for its name and every name is shown (at 11 px
    # plotly labelled every other row: BERT's key rows went unnamed); beyond, the picture stays compact.
    named = len(rows) <= HEATMAP_NAMED_ROWS
    height = 120 + min(HEATMAP_MAX_PX, max(200, (HEATMAP_NAMED_ROW_PX if named else HEATMAP_ROW_PX) * len(rows)))
    fig.update_yaxes(autorange="reversed", type="category", title_text=None, tickfont=dict(size=10))
    if named:
        fig.update_yaxes(dtick=1)
    fig.update_xaxes(title_text="optimizer step")
    if 0 < len(table.index) <= HEATMAP_LABELLED_STEPS:
        # Few columns: a tick under each logged step (plotly's own ticks fall on the cells' edges,
        # down to a "step -5" before the first).
        fig.update_xaxes(tickmode="array", tickvals=[int(s) for s in table.index])
    _step_range(fig, step_range)
    fig = _base(fig, title, height, uirevision)
    fig.update_layout(hovermode="closest", meta={"rows": rows, "flagged": marked})
    return fig


def log_axis_wanted(arrays, decades: float = 3.0) -> bool:
    """A log y axis reads better when the positive values span `decades` or more (and none is <= 0)."""
    lo, hi = math.inf, -math.inf
    for values in arrays:
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if not len(arr):
            continue
        if arr.min() <= 0:
            return False
        lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
    return math.isfinite(lo) and hi / lo >= 10**decades


TOGGLE_BOTTOM_MARGIN = 64  # px below a chart with a scale toggle: tick labels, then the buttons


def axis_scale_toggle(log: bool, height: int, axis: str = "yaxis") -> list[dict]:
    """linear | log buttons on the chart itself (the toggle costs no server round trip), at the
    bottom right below the tick labels: clear of the legend above the plot, of the modebar at the
    top right and of the centred axis title."""
    margin = dict(BASE_LAYOUT["margin"], b=TOGGLE_BOTTOM_MARGIN)
    plot_px = max(1, height - margin["t"] - margin["b"])
    return [dict(type="buttons", direction="right", showactive=True, active=1 if log else 0, x=1.0, xanchor="right",
                 y=-(margin["b"] - 2) / plot_px, yanchor="bottom", pad=dict(t=0, b=0, r=0), font=dict(size=10),
                 bgcolor="#f3f5f8",
                 buttons=[dict(label="linear", method="relayout", args=[{f"{axis}.type": "linear"}]),
                          dict(label="log", method="relayout", args=[{f"{axis}.type": "log"}])])]

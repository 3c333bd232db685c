"""The Run page's charts, one declaration each: its data view, its figure, its live channel, export.

`CHARTS` drives everything the page does with a chart: pages/run.py lays them out in this order and
registers one callback per chart (inputs from `Chart.inputs`), the live poll extends or redraws them
by `Chart.channel`, the browser's delta applier gets their ids from the page, and export.py puts
every `export=True` chart into the HTML report. Adding a chart is a declaration here and, when no
existing builder fits, a figure builder in dashboard/figures.py; a per-layer chart names the
statistics it reads (`quantities`), which the data layer and the live poll then read for it.
This module imports only downward (the data layer, views/run_facts.py); the page's poll
(views/run_live.py) imports it.

A chart's `view` is its one read of the run (through RunStore, cached on disk); its `figure` is pure.
Notes and flags come from the page's stores, not from another read: one zoom or step change costs
one data fetch per chart.

Channels (see views/run_live.poll_impl): "scalars" and "layers" extend the chart's traces with new
records after its cursor; "hist" appends heatmap columns; "redraw" charts (the all-layers heatmaps,
downsampled) are redrawn about every REDRAW_TICKS slow ticks while new statistics arrive; "epochs"
charts are redrawn when a new epoch ends; None: drawn again only when an input changes.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gradwatch.trainer import derived

from .. import figures, ids
from .. import layer_groups as groups
from ..data import RunStore
from ..shared_reads import SharedReads
from .run_facts import histogram_layer, layer_params, overfitting_marks

SCALAR_MAX_POINTS = 2000
LAYER_MAX_POINTS = 300
HIST_MAX_COLUMNS = 200
HEATMAP_CELLS = 24_000  # layer x step cells per all-layers read: big models get fewer sampled steps
HEATMAP_MIN_STEPS = 40
LINE_LAYERS_ALL = 12  # up to this many layers the per-layer line chart shows them all
LINE_LAYERS_FEW = 8  # beyond: the chosen layer, flagged layers, first and last, up to this many


@dataclass(frozen=True)
class ChartArgs:
    """What a chart is drawn for: the page's view state (from its stores) and shared page data."""

    run_id: str
    range_from: int | None = None
    range_to: int | None = None
    layer: str | None = None
    param: str | None = None
    step: dict | None = None
    row_filter: str = ""
    collapse: bool | None = None  # None: grouped automatically when there are many layers
    notes: tuple = ()
    flags: tuple = ()
    shape: dict = field(default_factory=dict)  # {"layers": n, "activations": n}: small, sent with every call
    info: dict = field(default_factory=dict)  # the run's tensors (only charts with the "info" input get it)

    @property
    def step_range(self) -> tuple | None:
        if self.range_from is not None and self.range_to is not None:
            return self.range_from, self.range_to
        return None

    @property
    def uirevision(self) -> str:
        return f"{self.run_id}:{self.range_from}:{self.range_to}"


@dataclass(frozen=True)
class Chart:
    """One Run-page chart. inputs: which view state redraws it ("range", "layer", "step", "rows",
    "flags"); "info" hands it the run's tensor list (only the histograms need it: for a big model the
    list is large, and it would travel with every call)."""

    id: str
    view: Callable[[RunStore, ChartArgs], dict]
    figure: Callable[[dict, ChartArgs], go.Figure]
    inputs: tuple[str, ...] = ("range",)
    channel: str | None = None
    export: bool = True
    wide: bool = False
    first_paint: bool = False  # drawn with the page itself (no callback round trip)
    step_axis: bool = True  # x is the optimizer step: a zoom sets the page's step range; notes trace 0
    scroll: bool = False  # tall figure inside a scrolling card
    scalar_groups: tuple[str, ...] = ()  # "scalars" channel: which scalar groups it draws
    layer_extend: tuple = ()  # "layers" channel: (quantity, trace key prefix, log axis) it extends
    quantities: tuple[str, ...] = ()  # the per-layer statistics it reads (layer_view and the live deltas)


# Figures drawn in this process, by what they are drawn from: viewers of a live run redraw the same
# chart for the same data (the gradient flow at each new step, a heatmap's periodic redraw) within
# seconds of each other, and building a plotly figure costs far more than reading its data. The key
# is a digest of the data and the view, so a kept figure is never a wrong one.
FIGURE_TTL_S = 10.0
_FIGURES = SharedReads(ttl_s=FIGURE_TTL_S, max_entries=32)


def render(chart: Chart, store: RunStore, args: ChartArgs) -> dict:
    """{"figure", "live"}: the chart drawn from one read, and its channel state (None without one)."""
    data = chart.view(store, args)

    def build():
        fig = chart.figure(data, args)
        if chart.channel in LIVE_CHANNELS and args.shape.get("running"):
            # A tick per step suits a short finished run; a live one grows past it without a redraw.
            fig.update_xaxes(dtick=None, tick0=None)
        return fig

    fig = _FIGURES.get(("figure", chart.id, figure_digest(data, args)), build)
    live = None
    if chart.channel in LIVE_CHANNELS:
        live = {"run": args.run_id, "chart": chart.id, "cursor": data.get("cursor", 0), "rev": uuid.uuid4().hex[:12],
                "appended": 0, "range_to": args.range_to, "keys": figures.trace_keys(fig), **data.get("live", {})}
    return {"figure": fig, "live": live}


LIVE_CHANNELS = ("scalars", "layers", "hist", "redraw")


def figure_digest(data, args: ChartArgs) -> str:
    """A digest of everything a figure is drawn from: the view's data (arrays and frames by their
    bytes, not their abbreviated text) and every field of the view state."""
    digest = hashlib.blake2b(digest_size=20)
    _feed(digest, data)
    _feed(digest, [getattr(args, f.name) for f in fields(args)])
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, np.ndarray):
        digest.update(f"nd{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else repr(value.tolist()).encode())
    elif isinstance(value, pd.DataFrame):
        digest.update(f"df{list(value.columns)}{list(value.dtypes)}".encode())
        digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    elif isinstance(value, pd.Series):
        _feed(digest, value.to_frame())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in value:
            digest.update(repr(key).encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


# ---- data views: one read each ------------------------------------------------------------------
def scalars_view(chart_groups: tuple[str, ...]):
    def view(store: RunStore, args: ChartArgs) -> dict:
        found = store.scalar_view(args.run_id, args.range_from, args.range_to, SCALAR_MAX_POINTS, groups=chart_groups)
        return {"series": {name: s.as_lists() for name, s in found["series"].items()}, "cursor": found["cursor"]}

    return view


def layer_step_budget(layer_count: int) -> int:
    """Sampled steps of an all-layers read: the cell budget over the layers, within bounds, so a
    1,000-tensor model reads about as many values as a 10-tensor one, not 100x more."""
    return int(min(LAYER_MAX_POINTS, max(HEATMAP_MIN_STEPS, HEATMAP_CELLS // max(1, layer_count))))


def layers_view(store: RunStore, args: ChartArgs) -> dict:
    must = sorted({s for f in args.flags for s in (f.get("first_step"), f.get("last_step")) if s is not None})
    count = args.shape.get("layers") or len(args.info.get("layers") or [])
    # One read for every per-layer chart (the union of what they declare): one cached answer serves all.
    found = store.layer_view(args.run_id, LAYER_QUANTITIES, args.range_from, args.range_to, layer_step_budget(count),
                             tuple(must))
    return dict(found)


def hist_view(kind: str):
    def view(store: RunStore, args: ChartArgs) -> dict:
        hist_layer = histogram_layer(args.info, args.layer)
        if hist_layer is None:
            return {"tensor": None, "cursor": -1, "live": {"tensor": None, "kind": kind}}
        params = layer_params(args.info, hist_layer)
        param = args.param if args.param in params else ("weight" if "weight" in params else params[0])
        tensor = f"{hist_layer}.{param}"
        found = store.histogram_view(args.run_id, tensor, kind, args.range_from, args.range_to, HIST_MAX_COLUMNS)
        band = figures.hist_band(found["counts"])
        cursor = int(found["steps"][-1]) if len(found["steps"]) else -1
        return dict(found, band=band, cursor=cursor, live={"tensor": tensor, "kind": kind, "band": band})

    return view


def step_norms_view(store: RunStore, args: ChartArgs) -> dict:
    return store.step_norm_view(args.run_id, args.range_from, args.range_to, SCALAR_MAX_POINTS)


def flow_view(store: RunStore, args: ChartArgs) -> dict:
    target = None if not args.step or args.step.get("follow") else args.step.get("step")
    return store.gradient_flow(args.run_id, target)


def epochs_view(store: RunStore, args: ChartArgs) -> dict:
    return store.weights_by_epoch(args.run_id)


# ---- figures ------------------------------------------------------------------------------------
def _overfitting(args: ChartArgs) -> dict | None:
    return overfitting_marks(list(args.flags))


def best_epoch_marks(series: dict) -> dict | None:
    """The best-epoch line of any run with a validation loss (not only an overfitting one): its
    lowest validation loss, at that step, numbered by the run's `epoch` scalar where it has one."""
    val = series.get("val_loss")
    if not val or not len(val["steps"]):
        return None
    epoch = series.get("epoch") or {"steps": [], "values": []}
    best = derived.validation_summary(val["steps"], val["values"], dict(zip(epoch["steps"], epoch["values"])))
    if best["best_step"] is None:
        return None
    return {"best_step": best["best_step"], "best_epoch": best["best_epoch"]}


def loss_figure(data: dict, args: ChartArgs) -> go.Figure:
    return figures.scalar_chart(data["series"], "loss", notes=args.notes,
                                overfitting=_overfitting(args) or best_epoch_marks(data["series"]),
                                step_range=args.step_range, uirevision=args.uirevision)


def accuracy_figure(data: dict, args: ChartArgs) -> go.Figure:
    return figures.scalar_chart(data["series"], "accuracy", notes=args.notes, step_range=args.step_range,
                                uirevision=args.uirevision)


def signals_figure(data: dict, args: ChartArgs) -> go.Figure:
    return figures.signals_chart(data["series"], notes=args.notes, step_range=args.step_range,
                                 uirevision=args.uirevision)


def _sampled(data: dict) -> str:
    return f" ({data['shown']:,} of {data['logged']:,} logged steps)" if data.get("sampled") else ""


def _rows_of(data: dict, quantity: str, args: ChartArgs, how: str) -> tuple[pd.DataFrame, dict, str]:
    """The table a heatmap draws: the quantity's layers filtered by name, grouped when collapsed."""
    table = data["tables"].get(quantity)
    if table is None or table.empty:
        return pd.DataFrame(), {}, ""
    rows, grouped = groups.display_rows(list(table.columns), args.row_filter, args.collapse)
    shown = groups.aggregate(table, how, rows) if grouped else table[[label for label, _ in rows]]
    note = f", {len(rows)} groups of {table.shape[1]} layers" if grouped else f", {len(rows)} layers"
    return shown, groups.flagged_rows(rows, list(args.flags)), note


def _no_rows_message(data: dict, quantity: str, args: ChartArgs, empty: str) -> str:
    table = data["tables"].get(quantity)
    if table is not None and not table.empty and args.row_filter:
        return f"no layer matches {args.row_filter!r}"
    return empty


def grad_heatmap_figure(data: dict, args: ChartArgs) -> go.Figure:
    table, flagged, note = _rows_of(data, "grad_norm", args, "rss")
    return figures.layer_heatmap(
        table, title=f"Gradient flow over time: gradient norm per layer{note}{_sampled(data)}",
        value_label="gradient norm", flagged=flagged, notes=args.notes, step_range=args.step_range,
        uirevision=args.uirevision, empty_message=_no_rows_message(data, "grad_norm", args,
                                                                   "no gradient statistics logged yet"))


def ratio_heatmap_figure(data: dict, args: ChartArgs) -> go.Figure:
    table, flagged, note = _rows_of(data, "update_ratio", args, "rms")
    # Diverging around the 1e-3 rule of thumb: blue updates too small to learn, red too large.
    return figures.layer_heatmap(
        table, title=f"Update-to-weight ratio per layer (1e-3 is typical){note}", value_label="|ΔW| / |W|",
        flagged=flagged, colorscale="RdBu_r", zmid=float(np.log10(figures.UPDATE_RATIO_GUIDE)),
        notes=args.notes, step_range=args.step_range, uirevision=args.uirevision,
        empty_message=_no_rows_message(data, "update_ratio", args,
                                       "no update ratios logged (needs two logged optimizer steps)"))


def activation_heatmap_figure(data: dict, args: ChartArgs) -> go.Figure:
    """Dead (ReLU) or saturated (sigmoid/tanh) fraction of each activation module's output: each
    module has the one that applies to it, so one picture holds both."""
    saturated, dead = data["tables"].get("saturated_frac"), data["tables"].get("dead_frac")
    parts = [t for t in (saturated, dead) if t is not None and not t.empty]
    if not parts:
        recorded = args.shape.get("activations") or 0
        message = ("no activation statistics\n(saturation needs sigmoid/tanh, dead units ReLU)" if not recorded else
                   f"{recorded} activation outputs recorded, none ReLU or sigmoid/tanh:\n"
                   "no dead or saturated fraction applies")
        return figures.empty_figure(message, height=260)
    stuck = parts[0] if len(parts) == 1 else parts[0].combine(parts[1], np.fmax)
    ordered = [c for c in data.get("order") or [] if c in stuck.columns] or list(stuck.columns)
    table, flagged, note = _rows_of({"tables": {"stuck": stuck[ordered]}}, "stuck", args, "mean")
    return figures.layer_heatmap(
        table, title=f"Activations: dead (ReLU) or saturated (sigmoid/tanh) fraction{note}",
        value_label="fraction", log_color=False, flagged=flagged, colorscale="Reds", zrange=(0.0, 1.0),
        notes=args.notes, step_range=args.step_range, uirevision=args.uirevision,
        empty_message=_no_rows_message({"tables": {"stuck": stuck}}, "stuck", args, "no activation statistics"))


def line_layers(order: list[str], selected: str | None, flags, pattern: str | None) -> list[str]:
    """The few layers the per-layer line chart draws: all of a small model; else those matching the
    name filter, or the chosen layer, the flagged ones and the first and last (forward order)."""
    kept = groups.filter_layers(order, pattern)
    if len(kept) <= LINE_LAYERS_ALL:
        return kept
    if pattern:
        return kept[:LINE_LAYERS_ALL]
    wanted = [selected] + [layer for f in flags or [] for layer in f.get("layers") or []] + [order[0], order[-1]]
    chosen = []
    for layer in wanted:
        if layer in order and layer not in chosen and len(chosen) < LINE_LAYERS_FEW:
            chosen.append(layer)
    return [layer for layer in order if layer in chosen]


def grad_lines_figure(data: dict, args: ChartArgs) -> go.Figure:
    table = data["tables"].get("grad_norm")
    shown = table
    suffix = ""
    if table is not None and not table.empty:
        chosen = line_layers(list(table.columns), args.layer, args.flags, args.row_filter)
        shown = table[chosen]
        if len(chosen) < table.shape[1]:
            suffix = f", {len(chosen)} of {table.shape[1]} layers"
    return figures.layer_lines_chart(
        shown, title=f"Gradient norm of chosen layers{suffix}{_sampled(data)}", y_title="gradient norm (log)",
        log_y=True, colors=figures.layer_colors(data.get("order") or []), selected_layer=args.layer,
        notes=args.notes, step_range=args.step_range, uirevision=args.uirevision,
        empty_message="no gradient statistics logged yet")


def step_norms_figure(data: dict, args: ChartArgs) -> go.Figure:
    """Every optimizer step, logged or not: what no sampled chart can show (a spike between logged
    steps, the layer that moved first)."""
    table = data["tables"]["grad_norm"]
    shown, suffix = table, ""
    if not table.empty:
        chosen = line_layers(list(table.columns), args.layer, args.flags, args.row_filter)
        shown = table[chosen]
        if len(chosen) < table.shape[1]:
            suffix = f", {len(chosen)} of {table.shape[1]} layers"
    how = (f" (largest per bucket of steps: {len(table):,} points for {data['steps']:,} steps)"
           if data.get("bucketed") else "")
    return figures.layer_lines_chart(
        shown, title=f"Gradient norm per layer at every optimizer step{suffix}{how}", y_title="gradient norm (log)",
        key_prefix="every", log_y=True, colors=figures.layer_colors(data.get("order") or []),
        selected_layer=args.layer, notes=args.notes, step_range=args.step_range, uirevision=args.uirevision,
        empty_message="no every-step gradient norms in this run\n(an imported run, or one logged before schema 5)")


def hist_figure(kind: str):
    label = "gradient" if kind == "grad" else "weight"

    def figure(data: dict, args: ChartArgs) -> go.Figure:
        if data.get("tensor") is None:
            return figures.empty_figure("no parameters with histograms in this run")
        return figures.histogram_heatmap(
            data["steps"], data["counts"], kind=label, tensor=data["tensor"], notes=args.notes,
            step_range=args.step_range, uirevision=f"{args.uirevision}:{data['tensor']}", sampled=data["sampled"],
            band=data["band"])

    return figure


def flow_figure(data: dict, args: ChartArgs) -> go.Figure:
    layers = list(data.get("layers") or [])
    if layers:
        rows, grouped = groups.display_rows(layers, args.row_filter, args.collapse)
        if not rows:
            return figures.empty_figure(f"no layer matches {args.row_filter!r}")
        if grouped or len(rows) < len(layers):
            data = _flow_rows(data, rows, grouped)
    return figures.gradient_flow_chart(data, selected_layer=args.layer, uirevision=args.run_id)


def _flow_rows(flow: dict, rows: list, grouped: bool) -> dict:
    """The one-step gradient flow of the shown rows (a group's norm: of its layers together)."""
    table = pd.DataFrame([flow["grad_norm"], flow["grad_max_abs"], flow["nonfinite"]],
                         columns=flow["layers"], index=[0, 1, 2], dtype=float)
    if grouped:
        norms = groups.aggregate(table.iloc[[0]], "rss", rows).iloc[0]
        biggest = groups.aggregate(table.iloc[[1]], "max", rows).iloc[0]
        bad = groups.aggregate(table.iloc[[2]], "sum", rows).iloc[0]
    else:
        names = [label for label, _ in rows]
        norms, biggest, bad = table.loc[0, names], table.loc[1, names], table.loc[2, names]
    return dict(flow, layers=list(norms.index), grad_norm=norms.tolist(), grad_max_abs=biggest.tolist(),
                nonfinite=[int(v) for v in np.nan_to_num(bad.to_numpy())])


def epochs_figure(data: dict, args: ChartArgs) -> go.Figure:
    mean, std = data.get("mean"), data.get("std")
    if mean is not None and not mean.empty:  # a big model: the chosen few layers, not one line each
        chosen = line_layers(list(mean.columns), args.layer, args.flags, args.row_filter)
        data = dict(data, mean=mean[chosen], std=std[[c for c in chosen if c in std.columns]])
    return figures.weights_by_epoch_chart(data, selected_layer=args.layer, uirevision=args.run_id)


# ---- the registry ---------------------------------------------------------------------------------
LAYER_INPUTS = ("range", "layer", "rows", "flags")
CHARTS: tuple[Chart, ...] = (
    # The loss chart reads the hidden `epoch` scalar (group None) too: it numbers the best epoch.
    Chart(ids.FIG_LOSS, scalars_view(("loss", None)), loss_figure, inputs=("range", "flags"), channel="scalars",
          first_paint=True, scalar_groups=("loss", None)),
    Chart(ids.FIG_ACC, scalars_view(("accuracy",)), accuracy_figure, channel="scalars", first_paint=True,
          scalar_groups=("accuracy",)),
    Chart(ids.FIG_GRAD_HEAT, layers_view, grad_heatmap_figure, inputs=LAYER_INPUTS, channel="redraw", wide=True,
          quantities=("grad_norm",)),
    Chart(ids.FIG_FLOW, flow_view, flow_figure, inputs=("step", "layer", "rows"), first_paint=True, step_axis=False,
          scroll=True),
    Chart(ids.FIG_GRAD_TIME, layers_view, grad_lines_figure, inputs=LAYER_INPUTS, channel="layers",
          layer_extend=(("grad_norm", "layer", True),), quantities=("grad_norm",)),
    Chart(ids.FIG_STEP_NORMS, step_norms_view, step_norms_figure, inputs=LAYER_INPUTS, channel="redraw", wide=True),
    Chart(ids.FIG_HIST_GRAD, hist_view("grad"), hist_figure("grad"), inputs=("range", "layer", "info"),
          channel="hist"),
    Chart(ids.FIG_HIST_WEIGHT, hist_view("weight"), hist_figure("weight"), inputs=("range", "layer", "info"),
          channel="hist"),
    Chart(ids.FIG_RATIO, layers_view, ratio_heatmap_figure, inputs=LAYER_INPUTS, channel="redraw",
          quantities=("update_ratio",)),
    Chart(ids.FIG_ACT, layers_view, activation_heatmap_figure, inputs=LAYER_INPUTS, channel="redraw",
          quantities=("saturated_frac", "dead_frac")),
    Chart(ids.FIG_WEIGHTS_EPOCH, epochs_view, epochs_figure, inputs=("layer", "rows", "flags"), channel="epochs",
          wide=True,
          step_axis=False),
    Chart(ids.FIG_SIGNALS, scalars_view(("signals",)), signals_figure, channel="scalars", wide=True,
          scalar_groups=("signals",)),
)
BY_ID = {chart.id: chart for chart in CHARTS}
LAYER_QUANTITIES = tuple(dict.fromkeys(q for chart in CHARTS for q in chart.quantities))
LIVE_CHARTS = tuple(chart for chart in CHARTS if chart.channel in LIVE_CHANNELS)

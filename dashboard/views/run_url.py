"""The Run page's URL state: what a view shows (RunView), parsed from and written to the query string."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from urllib.parse import urlencode

from gradwatch.trainer.runlog.validate import clamp_step

LAYER_PATTERN = re.compile(r"^[\w.\-:/\[\] ]{1,200}$")
ROW_FILTER_PATTERN = re.compile(r"^[\w.\-:/\[\]*?, ]{1,200}$")


@dataclass
class RunView:
    """What a Run page shows; the URL query string carries it (run, layer, param, step, from, to)."""

    run: str = ""
    layer: str | None = None
    param: str | None = None
    step: int | None = None
    follow: bool = True
    range_from: int | None = None
    range_to: int | None = None
    row_filter: str = ""  # per-layer charts: layer name filter (substring or glob)
    collapse: bool | None = None  # per-layer charts: group repeated blocks (None: when there are many)

    def as_dict(self) -> dict:
        return asdict(self)


def int_or_none(value) -> int | None:
    """A step from a URL, a form or a callback: an int clamped to 0..MAX_STEP, None if no number
    (`1e400` and `99999999999999999999` mean "the end", never an OverflowError)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and value < 0:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return None
    return clamp_step(value)


def step_selection(value) -> dict:
    """A step-selection store ({"step", "follow", "latest"}) sanitised: a crafted callback may send
    NaN, inf, 2**70, strings or dicts; every step comes back an int in [0, 2**62] or None."""
    value = value if isinstance(value, dict) else {}
    return {"step": int_or_none(value.get("step")), "follow": value.get("follow") is True,
            "latest": int_or_none(value.get("latest"))}


def step_bounds(rng: dict | None) -> tuple[int | None, int | None]:
    """(from, to) of a step-range store, each sanitised (a crafted callback may send anything)."""
    rng = rng if isinstance(rng, dict) else {}
    lo, hi = int_or_none(rng.get("from")), int_or_none(rng.get("to"))
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo
    return lo, hi


def parse_run_query(query: dict) -> RunView:
    """The view from URL query values; malformed values are ignored (the page then shows defaults)."""
    layer = query.get("layer")
    layer = layer if isinstance(layer, str) and LAYER_PATTERN.match(layer) else None
    param = query.get("param")
    param = param if isinstance(param, str) and re.match(r"^[\w.\-]{1,100}$", param) else None
    step = int_or_none(query.get("step"))
    lo, hi = int_or_none(query.get("from")), int_or_none(query.get("to"))
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo
    row_filter = query.get("filter")
    row_filter = row_filter if isinstance(row_filter, str) and ROW_FILTER_PATTERN.match(row_filter) else ""
    collapse = {"1": True, "0": False}.get(str(query.get("group")))
    return RunView(run=str(query.get("run") or ""), layer=layer, param=param, step=step, follow=step is None,
                   range_from=lo, range_to=hi, row_filter=row_filter, collapse=collapse)


def view_query_string(run_id: str, layer: dict | None, step: dict | None, rng: dict | None,
                      rows: dict | None = None) -> str:
    """'?run=..&layer=..&step=..&from=..&to=..&filter=..&group=..' for the stores' current values
    (omitting defaults)."""
    items = [("run", run_id)]
    if layer and layer.get("layer"):
        items.append(("layer", layer["layer"]))
        if layer.get("param"):
            items.append(("param", layer["param"]))
    # Store values may come from a crafted request: sanitised like every other step bound.
    step_value = int_or_none(step.get("step")) if isinstance(step, dict) and not step.get("follow") else None
    if step_value is not None:
        items.append(("step", step_value))
    lo, hi = step_bounds(rng)
    if lo is not None and hi is not None:
        items += [("from", lo), ("to", hi)]
    if rows and rows.get("filter"):
        items.append(("filter", rows["filter"]))
    if rows and rows.get("collapse") is not None:
        items.append(("group", int(bool(rows["collapse"]))))
    return "?" + urlencode(items)

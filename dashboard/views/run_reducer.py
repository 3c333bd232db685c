"""The Run page's view reducer: a chart zoom, a flag click or a control change -> the next view state."""

from __future__ import annotations

import math
import re

from .run_facts import layer_params
from .run_url import ROW_FILTER_PATTERN, int_or_none


# ---- the view reducer ------------------------------------------------------------------------------
def parse_relayout(relayout: dict | None) -> tuple[str, tuple | None] | None:
    """A chart zoom -> ("range", (lo, hi)); a reset -> ("reset", None); anything else -> None."""
    if not relayout:
        return None
    lo = hi = None
    for key, value in relayout.items():
        if re.fullmatch(r"xaxis\d*\.range\[0\]", key):
            lo = value
        elif re.fullmatch(r"xaxis\d*\.range\[1\]", key):
            hi = value
        elif re.fullmatch(r"xaxis\d*\.range", key) and isinstance(value, (list, tuple)) and len(value) == 2:
            lo, hi = value
        elif re.fullmatch(r"xaxis\d*\.autorange", key) and value:
            return ("reset", None)
    if lo is None or hi is None:
        return None
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    lo, hi = sorted((lo, hi))
    return ("range", (max(0, math.floor(lo)), max(0, math.ceil(hi))))


def flag_focus(flag: dict, first_step: int | None, last_step: int | None) -> dict:
    """Where a flag points: its first layer, its first step, and a range around its steps."""
    layers = flag.get("layers") or []
    start, end = flag.get("first_step"), flag.get("last_step")
    focus = {"layer": layers[0] if layers else None, "step": start, "from": None, "to": None}
    if start is not None:
        end = end if end is not None else start
        span = max(end - start, 1)
        pad = max(int(span * 0.25), 5)
        lo = max(start - pad, first_step or 0)
        hi = end + pad if last_step is None else min(end + pad, last_step)
        focus.update({"from": int(lo), "to": int(max(hi, lo + 1))})
    return focus


def reduce_view(state: dict, event: str, value, *, flags: list | None = None, info: dict | None = None,
                slider_max: int | None = None) -> dict:
    """The next view after one UI event. state/result: {"layer", "param", "step", "follow", "from", "to",
    "filter", "collapse", "flag"}. Events: layer, param, step, follow, from, to, range-reset, zoom,
    filter, collapse, flag."""
    view = dict(state)
    info = info or {}
    if event == "layer" and value:
        view["layer"] = value
        params = layer_params(info, value)
        if view.get("param") not in params:
            view["param"] = "weight" if "weight" in params else (params[0] if params else None)
    elif event == "param" and value:
        view["param"] = value
    elif event == "step" and int_or_none(value) is not None:
        value = int_or_none(value)
        slider_max = int_or_none(slider_max)
        at_end = slider_max is not None and value >= slider_max
        view["follow"] = bool(at_end)
        view["step"] = None if at_end else value
    elif event == "follow":
        view["follow"] = bool(value)
        if view["follow"]:
            view["step"] = None
        elif view.get("step") is None:
            view["step"] = slider_max
    elif event in ("from", "to"):
        number = int_or_none(value)
        view["from" if event == "from" else "to"] = number
        if view.get("from") is not None and view.get("to") is not None and view["to"] < view["from"]:
            view["from"], view["to"] = view["to"], view["from"]
    elif event == "range-reset":
        view["from"] = view["to"] = None
    elif event == "filter":
        text = str(value or "").strip()
        view["filter"] = text if not text or ROW_FILTER_PATTERN.match(text) else view.get("filter", "")
    elif event == "collapse":
        view["collapse"] = None if value is None else bool(value)
    elif event == "zoom":
        parsed = parse_relayout(value)
        if parsed is None:
            return view
        kind, rng = parsed
        view["from"], view["to"] = (None, None) if kind == "reset" else rng
    elif event == "flag" and flags is not None and value is not None and 0 <= value < len(flags):
        focus = flag_focus(flags[value], info.get("first_step"), info.get("last_logged_step"))
        if focus["layer"] and focus["layer"] in (info.get("layers") or [focus["layer"]]):
            view = reduce_view(view, "layer", focus["layer"], info=info)
        if focus["step"] is not None:
            view["step"], view["follow"] = int(focus["step"]), False
        view["from"], view["to"] = focus["from"], focus["to"]
        view["flag"] = value
    return view

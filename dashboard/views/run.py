"""The Run page's logic, one module per job (the page imports them from here):
- run_url.py: URL state (RunView, parse_run_query, view_query_string);
- run_facts.py: facts of a run the page and its charts read (layer parameters, slider marks, flags);
- run_reducer.py: the view reducer (zoom, flag click, controls);
- run_notes.py: team notes;
- run_live.py: the live poll and its payloads (imports run_charts; run_charts imports only run_facts).
"""

from __future__ import annotations

from ..data import RunLogError, RunStore
from .run_facts import flags_impl, histogram_layer, layer_options, layer_params, overfitting_marks, slider_marks  # noqa: F401
from .run_live import (  # noqa: F401
    APPEND_LIMIT,
    FLAGS_REFRESH_TICKS,
    IDLE_CHECK_TICKS,
    REDRAW_TICKS,
    hist_extend,
    layer_extend,
    live_duration,
    poll_impl,
    scalar_extend,
)
from .run_notes import add_note_impl  # noqa: F401
from .run_reducer import flag_focus, parse_relayout, reduce_view  # noqa: F401
from .run_url import (  # noqa: F401
    LAYER_PATTERN,
    ROW_FILTER_PATTERN,
    RunView,
    parse_run_query,
    step_bounds,
    step_selection,
    view_query_string,
)


# ---- page --------------------------------------------------------------------------------------------
def run_page_impl(store: RunStore, view: RunView) -> dict:
    """Run info and the normalised view; {"error": message} for a bad or unreadable run id."""
    try:
        info = store.run_info(view.run)
    except RunLogError as exc:
        return {"error": str(exc), "info": None, "view": view}
    layers = info["layers"]
    if view.layer and view.layer not in layers:
        view.layer = None
    if view.layer is None and info["param_layers"]:
        view.layer = info["param_layers"][0]
    params = layer_params(info, view.layer)
    if view.param not in params:
        view.param = "weight" if "weight" in params else (params[0] if params else None)
    if view.step is not None and info["last_logged_step"] is not None:
        view.step = min(view.step, info["last_logged_step"])
    if info["status"] != "running" and view.step is None:
        view.follow = True  # "latest" of a finished run: its last logged step
    return {"error": None, "info": info, "view": view}

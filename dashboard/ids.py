"""Component ids shared by layouts, callbacks and the browser tests, so none of them disagree on a string.

Pattern-matching ids are dicts built by the small functions at the bottom.
"""

# ---- shell ------------------------------------------------------------------------------------
NAV = "nav"
READ_ONLY_BANNER = "read-only-banner"

# ---- Runs page ----------------------------------------------------------------------------------
RUNS_TABLE = "runs-table"
RUNS_FILTER = "runs-filter"
RUNS_STATUS = "runs-status-filter"
RUNS_SORT = "runs-sort"  # store {"by": column, "desc": bool}
RUNS_PAGE = "runs-page"  # store: page number
RUNS_PAGER = "runs-pager"
RUNS_SELECTED = "runs-selected"  # store: [run ids]
RUNS_COMPARE_LINK = "runs-compare-link"
RUNS_SUMMARY = "runs-summary"
RUNS_INTERVAL = "runs-interval"
RUNS_SIGNATURE = "runs-signature"  # store: hash of what the table shows
RUNS_URL_SYNC = "runs-url-sync"
RUNS_CLEAR_SELECTION = "runs-clear-selection"

# ---- Run page ----------------------------------------------------------------------------------
RUN_ID = "run-id"  # store: the run id (fixed for the page)
RUN_HEADER = "run-header"
RUN_STATUS = "run-status"
RUN_DURATION = "run-duration"  # the header's duration: ticks while the run is live
RUN_STARTED = "run-started"
RUN_ERROR = "run-error"
RUN_LAYER = "run-layer"  # dropdown
RUN_PARAM = "run-param"  # dropdown: which parameter of the layer the histograms show
RUN_FOLLOW = "run-follow"  # checklist: follow the latest step
RUN_STEP_SLIDER = "run-step-slider"
RUN_RANGE_FROM = "run-range-from"
RUN_RANGE_TO = "run-range-to"
RUN_RANGE_RESET = "run-range-reset"
SEL_LAYER = "sel-layer"  # store {"layer", "param"}
SEL_STEP = "sel-step"  # store {"step", "follow"}
SEL_RANGE = "sel-range"  # store {"from", "to"}
VIEW_URL_SYNC = "view-url-sync"  # dummy output of the clientside URL writer

FIG_LOSS = "fig-loss"
FIG_ACC = "fig-acc"
FIG_SIGNALS = "fig-signals"
FIG_FLOW = "fig-flow"
FIG_GRAD_TIME = "fig-grad-time"
FIG_STEP_NORMS = "fig-step-norms"
FIG_GRAD_HEAT = "fig-grad-heat"
FIG_HIST_GRAD = "fig-hist-grad"
FIG_HIST_WEIGHT = "fig-hist-weight"
FIG_WEIGHTS_EPOCH = "fig-weights-epoch"
FIG_RATIO = "fig-ratio"
FIG_ACT = "fig-act"
RUN_ROW_FILTER = "run-row-filter"  # text: layer name filter (substring or glob) of the per-layer charts
RUN_ROW_GROUP = "run-row-group"  # checklist: group repeated blocks
SEL_ROWS = "sel-rows"  # store {"filter", "collapse"}
RUN_SHAPE = "run-shape"  # store {"layers", "activations"}: the model's size, for the charts' budgets
NOTES_DATA = "notes-data"  # store: the run's notes (charts draw them without reading them again)
LIVE_CHARTS = "live-charts"  # store: ids of the charts with a live channel, in the order of their stores

FLAGS_PANEL = "flags-panel"
FLAGS_DATA = "flags-data"  # store: the flags shown, in panel order
META_PANEL = "meta-panel"
NOTES_LIST = "notes-list"
NOTE_TEXT = "note-text"
NOTE_AUTHOR = "note-author"
NOTE_STEP = "note-step"
NOTE_LAYER = "note-layer"
NOTE_ADD = "note-add"
NOTE_MESSAGE = "note-message"
NOTE_AUTHOR_MEMORY = "note-author-memory"  # local storage: the author's name
EXPORT_BUTTON = "export-button"
EXPORT_DOWNLOAD = "export-download"

# Live streaming
POLL_INTERVAL = "poll-interval"
POLL_TICK = "poll-tick"  # store written by the clientside gate (visible tab, live run)
LIVE_META = "live-meta"  # store: status, flags/notes cursors, epochs, last logged step
DELTA = "delta"  # store: what the last poll returned (applied by a clientside callback)
ZOOM_EVENT = "zoom-event"  # an x-axis zoom or reset on any step chart (filtered clientside)
FIRST_PAINT_STAGE = "first-paint-stage"  # 1 once the first charts are drawn: the rest may load
FIRST_PAINT_TIMER = "first-paint-timer"
REFRESH_FLAGS = "refresh-flags"
REFRESH_NOTES = "refresh-notes"

# ---- Compare page ------------------------------------------------------------------------------
CMP_RUNS = "cmp-runs"
CMP_STEP = "cmp-step"
CMP_CURVES = "cmp-curves"
CMP_FLOW = "cmp-flow"
CMP_TABLE = "cmp-table"
CMP_MESSAGE = "cmp-message"
CMP_INTERVAL = "cmp-interval"
CMP_URL_SYNC = "cmp-url-sync"
CMP_SIGNATURE = "cmp-signature"

# ---- Launch page -------------------------------------------------------------------------------
LAUNCH_PRESET = "launch-preset"
LAUNCH_PRESET_SUMMARY = "launch-preset-summary"
LAUNCH_NAME = "launch-name"
LAUNCH_OPTIONS = "launch-options"
LAUNCH_VALIDATION = "launch-validation"
LAUNCH_BUTTON = "launch-button"
LAUNCH_RESULT = "launch-result"
LAUNCH_RESET = "launch-reset"
JOBS_TABLE = "jobs-table"
JOBS_INTERVAL = "jobs-interval"
JOBS_MESSAGE = "jobs-message"
LAUNCH_QUERY = "launch-query"  # store: option values from the URL


def live_store(chart_id: str) -> str:
    """A chart's channel store: cursor, figure revision and trace keys its figure was built at."""
    return f"live-{chart_id}"


def refresh_store(chart_id: str) -> str:
    """A chart's redraw counter (bumped by the live poll when the chart must be drawn again)."""
    return f"refresh-{chart_id}"


def flag_card(index: int) -> dict:
    return {"type": "flag-card", "index": index}


def run_select(run_id: str) -> dict:
    return {"type": "run-select", "run": run_id}


def runs_sort_header(column: str) -> dict:
    return {"type": "runs-sort-header", "column": column}


def launch_option(name: str) -> dict:
    return {"type": "launch-option", "name": name}


def job_stop(job_id: str) -> dict:
    return {"type": "job-stop", "job": job_id}

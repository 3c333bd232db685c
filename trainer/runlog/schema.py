"""The run-folder format: the one contract between the writer (trainer) and every reader.

Torch-free on purpose: the dashboard imports this module. Any change to tables, columns,
statistic order or histogram bins bumps SCHEMA_VERSION; readers refuse versions they do not know.
docs/log-format.md documents everything defined here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# 2: adds scalar_blocks (a roll-up of long scalar series) and the stats_hist partial index;
# version-1 folders lack both and read the same, only slower on long runs.
# 3: the overloaded stats.extra column becomes update_ratio (weights) and saturated_frac
# (activations); versions 1-2 read with extra split by kind (STAT_TABLE's `legacy`).
# 4: adds layer_rollup and rollup_layers (every layer's key statistics at a logged step in one row);
# version 1-3 folders lack them and read per tensor, only slower on big models.
# 5: adds step_norms (every optimizer step's per-parameter gradient norms: envelope, recent steps,
# windows around anomalies; trainer/runlog/step_norms.py); older folders read an empty series.
SCHEMA_VERSION = 5
DB_FILENAME = "run.sqlite"
# Readers accept these versions; a newer writer's folder gets a clear "upgrade gradwatch" error.
READABLE_VERSIONS = frozenset({1, 2, 3, 4, 5})
# The first schema version whose folders hold the per-layer roll-up from their first logged step.
ROLLUP_SINCE = 4
# Records of one scalar series summarised per scalar_blocks row.
SCALAR_BLOCK = 64

STATUSES = ("running", "finished", "failed", "stopped")
# "stale" is never written: readers derive it for a "running" run whose process is gone.
DERIVED_STATUSES = ("stale",)

# Every-step sentinel scalars, written by the probe for every optimizer step whatever the
# logging cadence: the total gradient norm (NaN/Inf when any gradient is) and the number of
# gradient tensors holding a NaN or Inf. Diagnosis rules read them to name the exact step.
SENTINEL_GRAD_NORM = "sentinel_grad_norm"
SENTINEL_NONFINITE = "sentinel_nonfinite"
# The statistics cadence chosen by every="auto" (a scalar written whenever it changes).
CAPTURE_EVERY = "capture_every"

# Kinds of layer record. A "tensor" row names one parameter (role "param") or one module output
# (role "output"); a stats row holds one kind of statistic of one tensor at one step.
KIND_GRAD = 0
KIND_WEIGHT = 1
KIND_ACTIVATION = 2
KIND_NAMES = {KIND_GRAD: "grad", KIND_WEIGHT: "weight", KIND_ACTIVATION: "activation"}
KIND_CODES = {name: code for code, name in KIND_NAMES.items()}



@dataclass(frozen=True)
class StatField:
    """One per-tensor statistic: a column of the `stats` table and a slot of the probe's stacked row.

    sql_type: the column's SQLite type (counts are INTEGER, everything else REAL).
    kinds: the record kinds it applies to; other kinds store NULL (NaN in frames).
    since: the schema version that added the column; `legacy` is the SQL that reads it from an
        older folder ("{t}" stands for the table alias), e.g. "NULL" for a statistic not recorded then.
    """

    name: str
    sql_type: str
    kinds: tuple[str, ...]
    doc: str
    since: int = 1
    legacy: str = "NULL"


# The one field table: the probe's stacked row, the `stats` DDL, the writer's INSERT and every
# reader's SELECT and frame columns are generated from it, in this order. Adding a statistic means
# adding a row here (and computing it in trainer/capture); a new column bumps SCHEMA_VERSION and
# names it in `since`, so older folders still read (the statistic is NaN there).
_ALL = ("grad", "weight", "activation")
STAT_TABLE = (
    StatField("norm", "REAL", _ALL, "L2 norm of the tensor"),
    StatField("mean", "REAL", _ALL, "mean element"),
    StatField("std", "REAL", _ALL, "standard deviation of the elements"),
    StatField("min", "REAL", _ALL, "smallest element"),
    StatField("max", "REAL", _ALL, "largest element"),
    StatField("nan_count", "INTEGER", _ALL, "NaN elements (activations: NaN and Inf together)"),
    StatField("inf_count", "INTEGER", _ALL, "+-Inf elements"),
    StatField("zero_frac", "REAL", _ALL, "fraction of exactly-zero elements (of the histogram sample)"),
    StatField("update_ratio", "REAL", ("weight",), "|w_after - w_before| / |w_after| of the optimizer step",
              since=3, legacy=f"CASE WHEN {{t}}kind = {KIND_WEIGHT} THEN {{t}}extra END"),
    StatField("saturated_frac", "REAL", ("activation",), "fraction of outputs in a sigmoid/tanh tail",
              since=3, legacy=f"CASE WHEN {{t}}kind = {KIND_ACTIVATION} THEN {{t}}extra END"),
    StatField("dead_frac", "REAL", ("activation",), "fraction of units zero for the whole batch"),
)
STAT_FIELDS = tuple(f.name for f in STAT_TABLE)
STAT_INDEX = {name: i for i, name in enumerate(STAT_FIELDS)}  # slot of each statistic in a stacked row
COUNT_FIELDS = tuple(f.name for f in STAT_TABLE if f.sql_type == "INTEGER")
REAL_FIELDS = tuple(f.name for f in STAT_TABLE if f.sql_type == "REAL")
# Columns of a statistics frame (RunReader.layer_stats and friends): the record's keys, then STAT_FIELDS.
STATS_KEY_COLUMNS = ("seq", "step", "tensor_id", "name", "layer", "param", "kind")
STATS_FRAME_COLUMNS = STATS_KEY_COLUMNS + STAT_FIELDS


def stats_insert_sql() -> str:
    """The writer's INSERT of one stats row: step, tensor_id, kind, STAT_FIELDS..., hist."""
    columns = ("step", "tensor_id", "kind", *STAT_FIELDS, "hist")
    return f"INSERT INTO stats({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"


def stat_select_column(name: str, version: int, table: str = "") -> str:
    """The SQL expression reading statistic `name` from a folder of schema `version`; `table` is
    the stats table's alias ("s") when the query joins."""
    field = STAT_TABLE[STAT_INDEX[name]]
    prefix = f"{table}." if table else ""
    return field.legacy.format(t=prefix) if version < field.since else prefix + field.name


def stat_select_columns(version: int, table: str = "", names: tuple[str, ...] = STAT_FIELDS) -> str:
    """`names` (all STAT_FIELDS by default), in order, as a SELECT list for a folder of `version`."""
    return ", ".join(stat_select_column(name, version, table) for name in names)


def _stats_columns_ddl() -> str:
    width = max(len(f.name) for f in STAT_TABLE)
    return "\n".join(f"    {f.name:<{width}} {f.sql_type},{' ' * (8 - len(f.sql_type))}-- {f.doc}" for f in STAT_TABLE)


# --- Histogram bins -------------------------------------------------------------------------
# Fixed, global bins over log10|x| so every layer and step shares one axis: 1e-9 and 1e+3
# show in one picture, and a heatmap over time needs no re-binning.
# Per sign: HIST_BINS_PER_SIGN bins of width 1/HIST_BINS_PER_DECADE decades from 10**HIST_LOG_MIN
# to 10**HIST_LOG_MAX; |x| below the range lands in the first bin, above it in the last.
# Counts layout (length HIST_LEN): [negative bins from large |x| to small |x|] [zero] [positive
# bins from small to large] - so the vector reads left to right like a number line.
HIST_LOG_MIN = -12.0
HIST_LOG_MAX = 4.0
HIST_BINS_PER_DECADE = 4
HIST_BINS_PER_SIGN = int((HIST_LOG_MAX - HIST_LOG_MIN) * HIST_BINS_PER_DECADE)  # 64
HIST_LEN = 2 * HIST_BINS_PER_SIGN + 1  # 129
HIST_ZERO_INDEX = HIST_BINS_PER_SIGN
# Tensors larger than this are histogrammed from an evenly strided sample of this many elements;
# norm, mean, std, min, max and NaN/Inf counts always use every element.
HIST_SAMPLE_SIZE = 4096
HIST_DTYPE = np.uint32


def hist_magnitude_edges() -> np.ndarray:
    """Edges of the per-sign bins in log10|x| (length HIST_BINS_PER_SIGN + 1)."""
    return np.linspace(HIST_LOG_MIN, HIST_LOG_MAX, HIST_BINS_PER_SIGN + 1)


def hist_bin_labels() -> list[str]:
    """Human-readable label for each of the HIST_LEN bins, in storage order."""
    edges = hist_magnitude_edges()
    lows = edges[:-1]
    negative = [f"-1e{lo:+.2f}" for lo in lows[::-1]]
    positive = [f"+1e{lo:+.2f}" for lo in lows]
    return negative + ["0"] + positive


def hist_bin_log_magnitudes() -> np.ndarray:
    """Signed bin centres on a log-magnitude axis (negative side mirrored), NaN for the zero bin.

    Used by figures: position -k means "negative values around 10**(k)" is awkward, so we return
    the centre log10|x| of each bin and let figures choose how to show sign.
    """
    edges = hist_magnitude_edges()
    centres = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([centres[::-1], [np.nan], centres])


# Histogram blob: one format byte, then
#   HIST_FORMAT_SPARSE16: a bitmap of the non-empty bins (ceil(HIST_LEN / 8) bytes, numpy
#     packbits order) and their counts as little-endian uint16 - typically 50-70 bytes, and ~6x
#     cheaper to make than zlib (the writer shares the CPU with training);
#   HIST_FORMAT_SPARSE32: the same with uint32 counts, for counts above 65,535.
HIST_FORMAT_SPARSE16 = 1
HIST_FORMAT_SPARSE32 = 2
_BITMAP_BYTES = (HIST_LEN + 7) // 8


def encode_hist(counts: np.ndarray) -> bytes:
    """Histogram counts -> compact blob (format byte, bitmap of non-empty bins, their counts)."""
    arr = np.asarray(counts)
    if arr.shape != (HIST_LEN,):
        raise ValueError(f"histogram must have {HIST_LEN} counts, got shape {arr.shape}")
    mask = arr > 0
    values = arr[mask]
    if values.size and values.max() > 0xFFFF:
        return bytes([HIST_FORMAT_SPARSE32]) + np.packbits(mask).tobytes() + values.astype("<u4").tobytes()
    return bytes([HIST_FORMAT_SPARSE16]) + np.packbits(mask).tobytes() + values.astype("<u2").tobytes()


def encode_hists(counts: np.ndarray) -> list[bytes]:
    """encode_hist for each row of a [rows, HIST_LEN] array: bitmaps and counts converted for all
    rows at once, then only sliced per row (the writer thread's time stalls training via the GIL)."""
    arr = np.asarray(counts)
    masks = arr > 0
    bitmaps = np.packbits(masks, axis=1).tobytes()
    per_row = masks.sum(axis=1)
    wide = (np.where(masks, arr, 0).max(axis=1) > 0xFFFF) if arr.size else np.zeros(len(arr), bool)
    narrow_bytes = arr[masks].astype("<u2").tobytes()  # row-major: row 0's counts, then row 1's
    ends = np.cumsum(per_row).tolist()
    header16, header32 = bytes([HIST_FORMAT_SPARSE16]), bytes([HIST_FORMAT_SPARSE32])
    blobs, start = [], 0
    for i, (end, is_wide) in enumerate(zip(ends, wide.tolist())):
        bitmap = bitmaps[i * _BITMAP_BYTES: (i + 1) * _BITMAP_BYTES]
        if is_wide:
            blobs.append(header32 + bitmap + arr[i][masks[i]].astype("<u4").tobytes())
        else:
            blobs.append(header16 + bitmap + narrow_bytes[2 * start: 2 * end])
        start = end
    return blobs


def decode_hist(blob: bytes) -> np.ndarray:
    if blob and blob[0] == 0x78:  # a zlib stream: the first encoding of schema 1 (before sparse)
        import zlib

        arr = np.frombuffer(zlib.decompress(blob), dtype="<u4")
        if arr.shape != (HIST_LEN,):
            raise ValueError(f"corrupt histogram blob: {arr.size} counts, expected {HIST_LEN}")
        return arr.astype(np.int64)
    if not blob or blob[0] not in (HIST_FORMAT_SPARSE16, HIST_FORMAT_SPARSE32):
        raise ValueError(f"corrupt histogram blob (format byte {blob[:1]!r})")
    mask = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, count=_BITMAP_BYTES, offset=1))[:HIST_LEN].astype(bool)
    dtype = "<u2" if blob[0] == HIST_FORMAT_SPARSE16 else "<u4"
    values = np.frombuffer(blob, dtype=dtype, offset=1 + _BITMAP_BYTES)
    if values.size != int(mask.sum()):
        raise ValueError(f"corrupt histogram blob: {values.size} counts for {int(mask.sum())} non-empty bins")
    out = np.zeros(HIST_LEN, dtype=np.int64)
    out[mask] = values
    return out


# --- Per-layer roll-up (schema 4) -------------------------------------------------------------
# One layer_rollup row per logged step holds every layer's key statistics, so a chart of all layers
# reads O(steps) rows whatever the model's size, not O(steps x tensors). The values are what
# trainer.derived.layer_table computes from the step's statistics rows (the writer calls it), in
# slot order: slot i is rollup_layers' layer i (slots are appended as layers first appear).
ROLLUP_FIELDS = (
    "grad_norm",       # sqrt(sum of the layer's parameters' squared gradient norms)
    "grad_max_abs",    # largest |gradient element| of the layer
    "grad_nonfinite",  # NaN + Inf gradient elements of the layer
    "update_ratio",    # |delta W| / |W| of the layer's parameters together
    "weight_norm",     # sqrt(sum of squared parameter norms)
    "weight_mean",     # of the layer's weight matrices (biases left out), pooled
    "weight_std",
    "dead_frac",       # of the module's output (ReLU)
    "saturated_frac",  # of the module's output (sigmoid/tanh)
)
ROLLUP_INDEX = {name: i for i, name in enumerate(ROLLUP_FIELDS)}
# Blob: float64 little-endian, field-major [len(ROLLUP_FIELDS), layers]; NaN where nothing applies.
# Not float32: an exploding run's norms pass 3.4e38, and the roll-up must read as the rows it sums.
ROLLUP_DTYPE = np.dtype("<f8")


def encode_rollup(values: np.ndarray) -> bytes:
    """A [len(ROLLUP_FIELDS), layers] array -> a layer_rollup blob."""
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] != len(ROLLUP_FIELDS):
        raise ValueError(f"a roll-up has {len(ROLLUP_FIELDS)} rows of per-layer values, got shape {arr.shape}")
    return arr.astype(ROLLUP_DTYPE).tobytes()


def decode_rollup(blob: bytes, layers: int) -> np.ndarray:
    """A layer_rollup blob of `layers` slots -> float64 [len(ROLLUP_FIELDS), layers]."""
    expected = len(ROLLUP_FIELDS) * int(layers) * ROLLUP_DTYPE.itemsize
    if not isinstance(blob, bytes | memoryview) or len(blob) != expected:
        size = len(blob) if isinstance(blob, bytes | memoryview) else type(blob).__name__
        raise ValueError(f"corrupt roll-up blob: {size} bytes, expected {expected} for {layers} layers")
    return np.frombuffer(blob, dtype=ROLLUP_DTYPE).reshape(len(ROLLUP_FIELDS), int(layers)).astype(float)


# --- Run ids -----------------------------------------------------------------------------------
# A run id is a folder name under the log directory. Ids come from URLs, so they are validated
# strictly: no separators, no dots at the start, nothing a shell or a path would interpret.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_valid_run_id(run_id: str) -> bool:
    return isinstance(run_id, str) and bool(RUN_ID_PATTERN.fullmatch(run_id)) and ".." not in run_id


def is_valid_run_name(name: str) -> bool:
    return isinstance(name, str) and bool(RUN_NAME_PATTERN.fullmatch(name)) and ".." not in name


# --- Tables ------------------------------------------------------------------------------------
# seq columns are INTEGER PRIMARY KEY: monotonic in commit order because SQLite serialises
# writers, so "seq > cursor" returns exactly the records a reader has not seen yet.
DDL_TEMPLATE = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL               -- JSON
);
CREATE TABLE IF NOT EXISTS tensors (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE, -- 'encoder.fc1.weight' (param) or 'encoder.act1' (output)
    layer       TEXT NOT NULL,        -- module path, 'encoder.fc1'
    param       TEXT NOT NULL,        -- 'weight', 'bias', ... ; '' for module outputs
    role        TEXT NOT NULL,        -- 'param' | 'output'
    module_type TEXT NOT NULL,        -- 'Linear', 'Sigmoid', ...
    shape       TEXT NOT NULL,        -- JSON list
    numel       INTEGER NOT NULL,
    ord         INTEGER NOT NULL,     -- forward order (first call of its module)
    trainable   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    seq       INTEGER PRIMARY KEY,
    step      INTEGER NOT NULL,       -- optimizer step (0-based) this record describes
    wall      REAL NOT NULL,          -- unix time when the record was taken
    step_time REAL                    -- mean seconds per optimizer step since the last record
);
CREATE INDEX IF NOT EXISTS steps_step ON steps(step);
CREATE TABLE IF NOT EXISTS stats (
    seq       INTEGER PRIMARY KEY,
    step      INTEGER NOT NULL,
    tensor_id INTEGER NOT NULL REFERENCES tensors(id),
    kind      INTEGER NOT NULL,       -- 0 grad, 1 weight, 2 activation
{stat_columns}
    hist      BLOB                    -- encode_hist() or NULL (activations; dropped under load)
);
CREATE INDEX IF NOT EXISTS stats_tensor_step ON stats(tensor_id, kind, step);
CREATE INDEX IF NOT EXISTS stats_step ON stats(step);
-- Schema 2: the rows that carry a histogram, so "the last histogram before step s" is one seek
-- even when histograms are kept only every Nth record or were dropped under load.
CREATE INDEX IF NOT EXISTS stats_hist ON stats(tensor_id, kind, step) WHERE hist IS NOT NULL;
CREATE TABLE IF NOT EXISTS scalars (
    seq   INTEGER PRIMARY KEY,
    step  INTEGER NOT NULL,           -- as given to run.log
    name  TEXT NOT NULL,
    value REAL,                       -- NULL stands for NaN (SQLite has no NaN)
    wall  REAL NOT NULL,
    rank  INTEGER NOT NULL DEFAULT 0
);
-- Covering index: one scalar's series reads from the index alone (no table lookups).
CREATE INDEX IF NOT EXISTS scalars_series ON scalars(name, rank, step, value);
-- Roll-up of each scalar series (schema 2), written in the same transaction as the scalars: block
-- k of a series summarises its records k*SCALAR_BLOCK .. (k+1)*SCALAR_BLOCK-1 in arrival order
-- (the last block is partial and rewritten as it fills). A display of a 200,000-point series
-- reads ~3,100 rows instead of 200,000. min/max/first/last are over finite values only.
CREATE TABLE IF NOT EXISTS scalar_blocks (
    name       TEXT NOT NULL,
    rank       INTEGER NOT NULL,
    block      INTEGER NOT NULL,
    n          INTEGER NOT NULL,      -- records in the block
    first_step INTEGER NOT NULL,
    last_step  INTEGER NOT NULL,
    ordered    INTEGER NOT NULL,      -- 1 if steps strictly increase within the block
    bad        INTEGER NOT NULL,      -- NaN/Inf records
    first_value REAL, first_value_step INTEGER,
    last_value  REAL, last_value_step  INTEGER,
    min_value   REAL, min_step INTEGER,
    max_value   REAL, max_step INTEGER,
    PRIMARY KEY (name, rank, block)
) WITHOUT ROWID;
-- Schema 4: the per-layer roll-up (ROLLUP_FIELDS), one row per logged step, written in the same
-- transaction as the step's stats rows; a later row for a step wins, as for stats.
CREATE TABLE IF NOT EXISTS rollup_layers (
    slot  INTEGER PRIMARY KEY,        -- 0, 1, ... in order of first appearance
    layer TEXT NOT NULL UNIQUE        -- module path, as tensors.layer
);
CREATE TABLE IF NOT EXISTS layer_rollup (
    seq    INTEGER PRIMARY KEY,
    step   INTEGER NOT NULL,
    layers INTEGER NOT NULL,          -- slots in the blob (rollup_layers 0 .. layers-1)
    stats  BLOB NOT NULL              -- encode_rollup()
);
CREATE INDEX IF NOT EXISTS layer_rollup_step ON layer_rollup(step);
-- Schema 5: every optimizer step's per-parameter gradient norms (trainer/runlog/step_norms.py).
-- Columns of the blobs: meta step_norm_names. span 1 = one exact step (kept for good when keep = 1,
-- else only among the last RECENT_STEPS); span k > 1 = min/max over the k steps ending at step.
CREATE TABLE IF NOT EXISTS step_norms (
    step      INTEGER NOT NULL,
    span      INTEGER NOT NULL,
    rank      INTEGER NOT NULL DEFAULT 0,
    wall      REAL,
    keep      INTEGER NOT NULL DEFAULT 0,
    norm_max  BLOB NOT NULL,          -- float64 per column (little-endian)
    norm_min  BLOB,                   -- float64 per column; NULL on exact rows
    nonfinite BLOB,                   -- uint32 per column: steps with a NaN/Inf gradient; NULL if none
    PRIMARY KEY (rank, step, span)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flags (
    seq         INTEGER PRIMARY KEY,
    raised_step INTEGER NOT NULL,     -- step at which the live trainer raised it
    wall        REAL NOT NULL,
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    body        TEXT NOT NULL          -- JSON: the whole flag (layers, steps, evidence, ...)
);
CREATE TABLE IF NOT EXISTS notes (
    seq    INTEGER PRIMARY KEY,
    wall   REAL NOT NULL,
    author TEXT NOT NULL,
    step   INTEGER,
    layer  TEXT,
    text   TEXT NOT NULL
);
"""
# The stats columns come from STAT_TABLE (NULL where a statistic does not apply to the row's kind).
DDL = DDL_TEMPLATE.replace("{stat_columns}", _stats_columns_ddl())

# Notes are team text, kept short so the run folder stays a log, not a wiki.
NOTE_MAX_CHARS = 2000
NOTE_AUTHOR_MAX_CHARS = 64
NOTE_LAYER_MAX_CHARS = 200
# Beyond this many notes a run refuses more: every viewer's page loads them all.
NOTES_MAX_PER_RUN = 500

# --- Scalars the capture writes itself (the user logs the rest under any names) ------------------
# Every-step gradient sentinels: the total gradient norm and the count of non-finite gradient
# values at every optimizer step, logged or not (cheap device-side checks, flushed in batches).
SENTINEL_GRAD_NORM = "sentinel_grad_norm"
SENTINEL_NONFINITE = "sentinel_nonfinite"
# Each param group's learning rate as the optimizer used it at a step: group 0 under OPTIMIZER_LR,
# group i > 0 under OPTIMIZER_LR_GROUP.format(i=i). Written at logged steps and whenever a value
# changed, so a schedule (warmup, decay) is recorded without the user logging it.
OPTIMIZER_LR = "opt_lr"
OPTIMIZER_LR_GROUP = "opt_lr_g{i}"


def optimizer_lr_name(group: int) -> str:
    """The scalar name of param group `group`'s learning rate."""
    return OPTIMIZER_LR if group == 0 else OPTIMIZER_LR_GROUP.format(i=group)

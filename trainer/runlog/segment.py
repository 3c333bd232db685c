"""Segments: immutable, self-describing, checksummed files of a run's new records, the unit of
transport between machines (shared folders, object stores, HTTP push). Torch-free.

A segment is one Arrow IPC file holding one record batch of one row: a column per run-folder table,
each a list of structs whose fields are that table's columns (plus `_segment`, the sequence number
of the publish that first carried the row, kept through compaction). The tables and their columns
are not listed here: they are read from schema.DDL itself, so every table the contract defines,
today's and any added later, travels without a change to this module.

Why Arrow IPC (docs/log-format.md): the schema travels inside the file (a reader needs no side
information to decode it, and a newer writer's extra column is visible, not misread); reads are
zero-copy from one buffer; every Arrow tool opens it; pyarrow is a well-kept wheel on every platform.
The checksum is the file's SHA-256, whose first 16 hex digits are part of the file name, so the
name a reader lists is enough to verify the bytes it fetched.

File name: `<first>-<last>.<sha16>.arrow`, first/last the publish sequence numbers it covers (10
digits, so names sort in sequence order); a compacted segment covers several. Layout under a logdir:
`<run id>/segments/r<rank>/<name>`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass

import pyarrow as pa

from . import schema

# Bumped when the container changes (not the tables: those are versioned by schema.SCHEMA_VERSION).
SEGMENT_FORMAT = 1
SEGMENTS_DIR = "segments"
ORIGIN_COLUMN = "_segment"
# Keys removed from keyed tables (a writer that prunes rows, e.g. step_norms' recent exact steps): one
# container column of (_segment, table, key as a JSON array), applied by the importer after the rows.
DELETED_COLUMN = "_deleted"
_DELETED_TYPE = pa.struct([pa.field(ORIGIN_COLUMN, pa.int64(), nullable=False), pa.field("table", pa.string()),
                           pa.field("key", pa.string())])
METADATA_KEY = b"gradwatch.segment"
NAME_PATTERN = re.compile(r"^(\d{10})-(\d{10})\.([0-9a-f]{16})\.arrow$")
RANK_PATTERN = re.compile(r"^r(\d{5})$")
# The first schema version whose writers publish segments; older readers never see a segment.
FIRST_SEGMENT_SCHEMA = 4
_ARROW_TYPES = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string(), "BLOB": pa.binary()}


class SegmentError(ValueError):
    """A segment that cannot be used: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class TableSpec:
    """One run-folder table as a segment carries it.

    appended: the table has a `seq INTEGER PRIMARY KEY` (records only ever added; a reader's cursor
    is its seq); rows travel without seq and get a fresh one where they are imported. Otherwise the
    table is keyed by `key` (its primary key) and a row travels whenever it is inserted or replaced.
    """

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, declared SQLite type), seq left out of appended tables
    key: tuple[str, ...]
    appended: bool

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def arrow_schema(self) -> pa.StructType:
        fields = [pa.field(ORIGIN_COLUMN, pa.int64(), nullable=False)]
        fields += [pa.field(name, _ARROW_TYPES.get(sql_type, pa.string())) for name, sql_type in self.columns]
        return pa.struct(fields)


@functools.cache
def table_specs() -> tuple[TableSpec, ...]:
    """Every table of schema.DDL, read from the DDL itself (one contract)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(schema.DDL)
        names = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        specs = []
        for name in names:
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()  # cid, name, type, notnull, default, pk
            key = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            appended = key == ("seq",) and any(r[1] == "seq" and r[2].upper() == "INTEGER" for r in info)
            columns = tuple((r[1], r[2].upper()) for r in info if not (appended and r[1] == "seq"))
            specs.append(TableSpec(name, columns, key, appended))
        return tuple(specs)
    finally:
        conn.close()


def spec_by_name() -> dict[str, TableSpec]:
    return {spec.name: spec for spec in table_specs()}


def segment_name(first: int, last: int, data: bytes) -> str:
    return f"{first:010d}-{last:010d}.{hashlib.sha256(data).hexdigest()[:16]}.arrow"


def rank_dir(rank: int) -> str:
    return f"r{int(rank):05d}"


def parse_name(name: str) -> tuple[int, int, str] | None:
    """(first, last, sha16) of a segment file name, or None for anything else (temp files, foreign files)."""
    match = NAME_PATTERN.fullmatch(name)
    if not match:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    return (first, last, match.group(3)) if 1 <= first <= last else None


def parse_rank(name: str) -> int | None:
    match = RANK_PATTERN.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass
class Segment:
    """A decoded segment: its header and each table's rows as a list of column lists."""

    run_id: str
    rank: int
    first: int
    last: int
    schema_version: int
    created: float
    tables: dict[str, pa.StructArray]

    def rows(self, table: str, after: int = 0) -> tuple[tuple[str, ...], list[tuple]]:
        """(column names, rows) of `table`, only rows first published after sequence `after`."""
        array = self.tables.get(table)
        if array is None or len(array) == 0:
            return (), []
        names = tuple(f.name for f in array.type)
        columns = [array.field(i).to_pylist() for i in range(len(names))]
        origin = names.index(ORIGIN_COLUMN)
        keep = [i for i, value in enumerate(columns[origin]) if value > after]
        names_out = tuple(n for n in names if n != ORIGIN_COLUMN)
        picked = [[column[i] for i in keep] for j, column in enumerate(columns) if j != origin]
        return names_out, list(zip(*picked)) if picked else []

    def row_count(self) -> int:
        return sum(len(a) for a in self.tables.values())

    def deletions(self, after: int = 0) -> list[tuple[int, str, tuple]]:
        """(origin, table, key values) of the keys removed, only those first published after `after`."""
        array = self.tables.get(DELETED_COLUMN)
        if array is None or len(array) == 0:
            return []
        rows = zip(array.field(0).to_pylist(), array.field(1).to_pylist(), array.field(2).to_pylist())
        return [(origin, table, tuple(json.loads(key))) for origin, table, key in rows if origin > after]


def encode(run_id: str, rank: int, first: int, last: int, tables: dict[str, tuple[list[int], list[tuple]]],
           *, deleted: list[tuple[int, str, tuple]] = (), schema_version: int = schema.SCHEMA_VERSION,
           created: float | None = None) -> bytes:
    """One segment from each table's (origin sequence per row, rows in the table's column order) and the
    keys removed, (origin, table, key values).

    Rows are in the order of TableSpec.columns; tables left out travel as empty lists.
    """
    specs = table_specs()
    arrays, fields = [], []
    for spec in specs:
        origins, rows = tables.get(spec.name, ([], []))
        struct_type = spec.arrow_schema()
        children = [pa.array(origins, type=pa.int64())]
        for j, (column, _) in enumerate(spec.columns):
            values = [row[j] for row in rows]
            children.append(_column_array(values, struct_type.field(j + 1).type, spec.name, column))
        struct = pa.StructArray.from_arrays(children, fields=list(struct_type))
        arrays.append(pa.ListArray.from_arrays(pa.array([0, len(rows)], type=pa.int32()), struct))
        fields.append(pa.field(spec.name, pa.list_(struct_type)))
    gone = pa.array([{ORIGIN_COLUMN: o, "table": t, "key": json.dumps(list(k))} for o, t, k in deleted],
                    type=_DELETED_TYPE)
    arrays.append(pa.ListArray.from_arrays(pa.array([0, len(gone)], type=pa.int32()), gone))
    fields.append(pa.field(DELETED_COLUMN, pa.list_(_DELETED_TYPE)))
    header = {
        "format": SEGMENT_FORMAT, "schema_version": int(schema_version), "run_id": run_id, "rank": int(rank),
        "first": int(first), "last": int(last), "created": time.time() if created is None else created,
        "tables": {spec.name: {"appended": spec.appended, "key": list(spec.key)} for spec in specs},
    }
    arrow_schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(header).encode()})
    batch = pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, arrow_schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _column_array(values: list, arrow_type: pa.DataType, table: str, column: str) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # SQLite's dynamic typing lets a value of another type into a column (a hand-edited folder):
        # carry it as its text rather than lose the segment.
        if arrow_type == pa.string():
            return pa.array([None if v is None else str(v) for v in values], type=arrow_type)
        converted = []
        for value in values:
            try:
                converted.append(pa.scalar(value, type=arrow_type).as_py())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                converted.append(None)
        return pa.array(converted, type=arrow_type)


def decode(data: bytes, name: str | None = None, *, where: str = "segment") -> Segment:
    """Verify and decode a segment. `name` (the file name) is checked against the bytes' checksum and
    the header's sequence range; any problem is a SegmentError naming `where`."""
    if name is not None:
        parsed = parse_name(name)
        if parsed is None:
            raise SegmentError(f"{where}: {name!r} is not a segment file name (<first>-<last>.<sha16>.arrow)")
        digest = hashlib.sha256(data).hexdigest()[:16]
        if digest != parsed[2]:
            raise SegmentError(f"{where}: checksum mismatch (content {digest}, name says {parsed[2]}): "
                               "corrupt or truncated")
    try:
        reader = pa.ipc.open_file(pa.BufferReader(data))
        batch = reader.get_batch(0)
        header = json.loads((reader.schema.metadata or {})[METADATA_KEY])
    except (pa.ArrowInvalid, KeyError, IndexError, ValueError, OSError) as exc:
        raise SegmentError(f"{where}: not a gradwatch segment ({type(exc).__name__}: {exc})") from None
    if header.get("format") != SEGMENT_FORMAT:
        raise SegmentError(f"{where}: segment format {header.get('format')!r} is not readable by this gradwatch "
                           f"(reads {SEGMENT_FORMAT}); upgrade gradwatch")
    version = header.get("schema_version")
    if not isinstance(version, int) or not FIRST_SEGMENT_SCHEMA <= version <= schema.SCHEMA_VERSION:
        raise SegmentError(f"{where}: log schema version {version!r} is not readable by this gradwatch "
                           f"(reads {FIRST_SEGMENT_SCHEMA}..{schema.SCHEMA_VERSION}); upgrade gradwatch")
    if name is not None and (header.get("first"), header.get("last")) != parse_name(name)[:2]:
        raise SegmentError(f"{where}: header covers {header.get('first')}-{header.get('last')}, name says otherwise")
    tables = {}
    for i, field in enumerate(batch.schema):
        column = batch.column(i)
        tables[field.name] = column.values if len(column) else pa.array([], type=field.type.value_type)
    return Segment(str(header["run_id"]), int(header["rank"]), int(header["first"]), int(header["last"]),
                   int(version), float(header.get("created") or 0.0), tables)


def merge(parts: list[Segment]) -> bytes:
    """One segment covering `parts` (consecutive, in sequence order): appended rows concatenated, keyed
    tables reduced to each key's last row (its `_segment` kept, so a reader that has part of the range
    takes only what it lacks)."""
    if not parts:
        raise ValueError("nothing to merge")
    specs = spec_by_name()
    tables: dict[str, tuple[list[int], list[tuple]]] = {}
    deleted: list[tuple[int, str, tuple]] = []
    for spec in specs.values():
        origins: list[int] = []
        rows: list[tuple] = []
        for part in parts:
            names, part_rows = _rows_with_origin(part, spec.name)
            if not part_rows:
                continue
            # Columns the part lacks (an older writer) read as NULL; extra ones are dropped.
            index = [names.index(c) if c in names else None for c in spec.column_names]
            origin_at = names.index(ORIGIN_COLUMN)
            for row in part_rows:
                origins.append(row[origin_at])
                rows.append(tuple(None if i is None else row[i] for i in index))
        if not spec.appended:
            # A key's last state wins: its last row, or its removal if that came later.
            key_at = [spec.column_names.index(k) for k in spec.key]
            state: dict[tuple, tuple] = {}
            for i, row in enumerate(rows):
                state[tuple(row[k] for k in key_at)] = (origins[i], "row", i)
            for part in parts:
                for origin, table, key in part.deletions():
                    previous = state.get(key)
                    if table == spec.name and (previous is None or previous[0] <= origin):
                        state[key] = (origin, "gone", key)
            kept = sorted((i for o, what, i in state.values() if what == "row"))
            deleted += sorted((o, spec.name, k) for o, what, k in state.values() if what == "gone")
            origins, rows = [origins[i] for i in kept], [rows[i] for i in kept]
        tables[spec.name] = (origins, rows)
    head = parts[0]
    return encode(head.run_id, head.rank, head.first, parts[-1].last, tables, deleted=deleted,
                  schema_version=max(p.schema_version for p in parts), created=parts[-1].created)


def _rows_with_origin(part: Segment, table: str) -> tuple[tuple[str, ...], list[tuple]]:
    array = part.tables.get(table)
    if array is None or len(array) == 0:
        return (), []
    names = tuple(f.name for f in array.type)
    columns = [array.field(i).to_pylist() for i in range(len(names))]
    return names, list(zip(*columns))

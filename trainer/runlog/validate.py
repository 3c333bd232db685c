"""Checks on what a run folder holds, applied on read: a corrupt or hand-edited record becomes one
clear RunLogError naming the run, the record and the expected form, never a crash in a page or a CLI.

The writer owns the keys in RESERVED_META; a user's `run.set_meta` may not set them (see
`check_user_meta`), and a reader refuses a folder whose reserved keys have the wrong type.
Torch-free.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import stat
from typing import Any

import numpy as np

from . import schema
from .errors import RunLogError

# Largest step any reader passes to SQLite (steps are 64-bit integers there); URL and callback
# values beyond it are clamped, so `?to=99999999999999999999` means "to the end".
MAX_STEP = 2**62
# Linux pids are below 2**22; anything that does not fit a C int cannot be one.
MAX_PID = 2**31 - 1


class RecordError(RunLogError, ValueError):
    """One record of a run folder is malformed; the message names the run, the record and what is valid."""


def _prefix(run_id: str | None) -> str:
    return f"run {run_id!r}: " if run_id else ""


def _finite_number(value) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range (10**400 in hand-edited JSON)
        return False


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional(check):
    return lambda value: value is None or check(value)


# The last second datetime can show (9999-12-31): a time beyond it cannot be formatted by any page.
MAX_UNIX_TIME = 253402300799.0


def _unix_time(value) -> bool:
    return _finite_number(value) and 0 <= float(value) <= MAX_UNIX_TIME


def _text(value) -> bool:
    return isinstance(value, str)


def _texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _step(value) -> bool:
    return _count(value) and value <= MAX_STEP


# key -> (check, what a valid value is). Only keys the writer itself sets are checked.
RESERVED_META: dict[str, tuple[Any, str]] = {
    "schema_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "run_id": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "status": (lambda v: v in schema.STATUSES, f"one of {', '.join(schema.STATUSES)}"),
    "started": (_unix_time, "a unix time in seconds (a number from 0 to year 9999)"),
    "ended": (_optional(_unix_time), "a unix time in seconds or null"),
    "heartbeat": (_optional(_unix_time), "a unix time in seconds or null"),
    "error": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "config": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "pid": (_optional(lambda v: _count(v) and v <= MAX_PID), f"a process id (0..{MAX_PID}) or null"),
    "pid_start_ticks": (_optional(_count), "a non-negative integer or null"),
    "host": (_optional(lambda v: isinstance(v, str)), "a host name or null"),
    "world_size": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "dropped_histograms": (_count, "a non-negative integer"),
    "dropped_records": (_count, "a non-negative integer"),
    "lost_records": (_count, "a non-negative integer"),
    "watch": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "model_summary": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "results": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "dataset": (lambda v: v is None or isinstance(v, (str, dict)), "a name, an object or null"),
    "job_id": (_optional(_text), "a string or null"),
    "device": (_optional(_text), "a string or null"),
    "git_commit": (_optional(_text), "a string or null"),
    "python": (_optional(_text), "a string or null"),
    "torch": (_optional(_text), "a string or null"),
    "gradwatch": (_optional(_text), "a string or null"),
    "argv": (_optional(_texts), "a list of strings"),
    "capture_every": (_optional(lambda v: _count(v) and v >= 1), "a positive integer"),
}
# Set by the trainer itself at the start and end of a run; user metadata may not overwrite them.
# The rest of RESERVED_META is the user's to set too (type-checked the same way on write and read).
WRITER_OWNED = frozenset(RESERVED_META) - {"watch", "model_summary", "config", "results", "dataset", "job_id",
                                           "device", "git_commit", "argv"}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_meta(meta: dict, run_id: str | None = None) -> None:
    """Raise RecordError for the first reserved key whose value has the wrong type or range."""
    for key, (check, expected) in RESERVED_META.items():
        if key in meta and not check(meta[key]):
            raise RecordError(f"{_prefix(run_id)}metadata {key!r} is {_short(meta[key])}, expected {expected}")


def check_user_meta(items: dict) -> None:
    """`run.set_meta` refuses the keys the writer owns (status, started, pid...): one line, nothing stored."""
    owned = sorted(set(items) & WRITER_OWNED)
    if owned:
        raise ValueError(f"set_meta cannot set {', '.join(owned)}: these keys are kept by gradwatch itself "
                         "(use other names for your own metadata)")


def decode_shape(text: Any, tensor: str, run_id: str | None = None) -> list[int]:
    """A tensors.shape cell -> list of dimension sizes, or RecordError."""
    try:
        shape = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        shape = None
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise RecordError(f"{_prefix(run_id)}tensor {tensor!r} has a malformed shape {_short(text)} (expected a list of sizes)")
    return shape


FLAG_SEVERITIES = ("critical", "warning", "info")


def _evidence(value) -> bool:
    # Numbers, names and nested per-layer maps; every page formats these without further checks.
    if isinstance(value, dict):
        return all(isinstance(k, str) and _evidence(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_evidence(v) for v in value)
    return value is None or isinstance(value, (str, int, float))


# flag field -> (required, check, what a valid value is): every field any page or the CLI reads.
FLAG_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "rule": (True, lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a rule name (a non-empty string)"),
    "severity": (True, lambda v: v in FLAG_SEVERITIES, f"one of {', '.join(FLAG_SEVERITIES)}"),
    "layers": (False, _texts, "a list of layer names"),
    "first_step": (False, _optional(_step), "a step (a non-negative integer) or null"),
    "last_step": (False, _optional(_step), "a step (a non-negative integer) or null"),
    "evidence": (False, lambda v: isinstance(v, dict) and _evidence(v), "an object of numbers and names"),
    "explanation": (False, _text, "a string"),
    "remedies": (False, _texts, "a list of strings"),
    "remedy_ids": (False, _texts, "a list of remedy ids"),
    "remedy_code": (False, _texts, "a list of strings"),
    "history": (False, lambda v: isinstance(v, dict) and _evidence(v), "an object"),
    "source": (False, _text, "a string"),
}


def flag_problem(flag: Any) -> str | None:
    """What is wrong with a flag dict (the first field found), or None: one check for the live
    `run.add_flag`, the writer and every reader."""
    if not isinstance(flag, dict):
        return f"a flag must be an object, got {type(flag).__name__}"
    for key, (required, check, expected) in FLAG_FIELDS.items():
        if key not in flag:
            if required:
                return f"flag field {key!r} is missing (expected {expected})"
            continue
        if not check(flag[key]):
            return f"flag field {key!r} is {_short(flag[key])}, expected {expected}"
    return None


def decode_flag(body: Any, seq: int, run_id: str | None = None) -> dict:
    """A flags.body cell -> the flag dict with every field checked, or RecordError."""
    try:
        flag = json.loads(body) if isinstance(body, (str, bytes)) else None
    except (ValueError, RecursionError):
        flag = None
    if not isinstance(flag, dict) or not isinstance(flag.get("rule"), str):
        raise RecordError(f"{_prefix(run_id)}flag #{seq} has a malformed body {_short(body)} (expected a JSON object with a rule)")
    problem = flag_problem(flag)
    if problem:
        raise RecordError(f"{_prefix(run_id)}flag #{seq}: {problem}")
    return flag


def flag_row_ok(raised_step, wall) -> bool:
    return _step(raised_step) and _unix_time(wall)


# note column -> (check, what a valid value is)
NOTE_FIELDS: dict[str, tuple[Any, str]] = {
    "seq": (_count, "a sequence number"),
    "wall": (_unix_time, "a unix time"),
    "author": (_text, "a string"),
    "step": (_optional(_step), "a step or null"),
    "layer": (_optional(_text), "a layer name or null"),
    "text": (_text, "a string"),
}


def check_note(note: dict, run_id: str | None = None) -> dict:
    for key, (check, expected) in NOTE_FIELDS.items():
        if not check(note.get(key)):
            raise RecordError(f"{_prefix(run_id)}note #{note.get('seq')}: {key!r} is {_short(note.get(key))}, "
                              f"expected {expected}")
    return note


# tensor column -> (check, what a valid value is); shape is decoded by decode_shape.
TENSOR_FIELDS: dict[str, tuple[Any, str]] = {
    "tensor_id": (_count, "a non-negative integer"),
    "name": (_text, "a string"),
    "layer": (_text, "a string"),
    "param": (_optional(_text), "a string or null"),
    "role": (lambda v: v in ("param", "output"), "param or output"),
    "module_type": (_optional(_text), "a string or null"),
    "numel": (_count, "a non-negative integer"),
    "ord": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "trainable": (lambda v: v in (0, 1), "0 or 1"),
}


def check_tensor_rows(rows: list, columns: list[str], run_id: str | None = None) -> None:
    for row in rows:
        for key, value in zip(columns, row):
            entry = TENSOR_FIELDS.get(key)
            if entry is not None and not entry[0](value):
                raise RecordError(f"{_prefix(run_id)}tensor record {_short(row[1])}: {key!r} is {_short(value)}, "
                                  f"expected {entry[1]}")


def decode_hist(blob: Any, where: str, run_id: str | None = None) -> np.ndarray:
    """schema.decode_hist with the record named in the error."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise RecordError(f"{_prefix(run_id)}histogram of {where} is not a blob ({type(blob).__name__})")
    try:
        return schema.decode_hist(bytes(blob))
    except Exception as exc:  # zlib.error, ValueError from numpy: all mean "corrupt blob"
        raise RecordError(f"{_prefix(run_id)}histogram of {where} is corrupt ({exc})") from None


def clamp_step(value: Any, low: int = 0) -> int | None:
    """A step bound from a URL or a callback -> an int in [low, MAX_STEP], None when it is no number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None
    if isinstance(number, float):
        if math.isnan(number):
            return None
        if math.isinf(number):
            return MAX_STEP if number > 0 else low
        number = int(number)
    return max(low, min(int(number), MAX_STEP))


def entry_problem(path) -> str | None:
    """Why an entry of a log directory cannot be a run folder (a symlink, a plain file...), or None.

    Symbolic links are refused rather than followed: a link could make the dashboard read (and
    show) a folder outside the log directory."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link (gradwatch reads only real run folders inside the log directory)"
    if stat.S_ISREG(info.st_mode):
        return "is a plain file (not a directory), not a run folder"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory (a device, socket or pipe)"
    return None


def run_files_problem(run_dir) -> str | None:
    """Why the files of a run folder cannot be opened safely, or None: the database and its -wal,
    -shm and -journal companions must be regular files of the folder itself. A symbolic link (or a
    device, a folder...) in their place would make readers and note writers follow it out of the
    log directory, to a database (or a file SQLite would create or overwrite) somewhere else."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        name = schema.DB_FILENAME + suffix
        try:
            info = os.lstat(os.path.join(run_dir, name))
        except FileNotFoundError:
            if suffix:
                continue
            return f"has no {name}"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if stat.S_ISLNK(info.st_mode):
            return f"{name} is a symbolic link (gradwatch opens only the run folder's own files)"
        if not stat.S_ISREG(info.st_mode):
            return f"{name} is not a regular file"
    return None


def typed_records(table: str):
    """Decorator for a RunReader query that turns the rows of `table` into numbers: a value of the
    wrong type there (text in a step or value column of a hand-edited folder) becomes the run's
    RecordError instead of a ValueError deep in numpy or pandas."""

    def wrap(query):
        @functools.wraps(query)
        def checked(self, *args, **kwargs):
            try:
                return query(self, *args, **kwargs)
            except RunLogError:
                raise
            except (ValueError, TypeError, OverflowError) as exc:
                raise RecordError(f"run {self.run_id!r}: a {table} record holds a value of the wrong type "
                                  f"({_short(str(exc), 120)})") from None

        return checked

    return wrap

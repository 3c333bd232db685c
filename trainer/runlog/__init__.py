"""The run folder: schema (the contract), writer (trainer side) and reader (everyone). Torch-free."""

from .reader import RunEntry, RunLogError, RunReader, add_note, list_runs, resolve_run_dir
from .schema import SCHEMA_VERSION

__all__ = ["RunEntry", "RunLogError", "RunReader", "SCHEMA_VERSION", "add_note", "list_runs", "resolve_run_dir"]

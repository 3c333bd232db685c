"""The run log's error type, in its own module so validation and access helpers can raise it
without importing the reader."""

from __future__ import annotations


class RunLogError(Exception):
    """A run folder cannot be read; the message names the folder and the problem."""

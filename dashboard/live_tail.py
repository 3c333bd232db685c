"""The newest records of a live run, read once per change and served to every viewer's cursor.

Viewers of a training run poll at their own moments, so each holds its own cursor: keyed by cursor,
twenty viewers would still cost twenty reads per change. A `GrowingTail` keeps the rows of one growing
source (a run's scalars, its statistics, one tensor's histograms) after a `base` key up to `covered`,
as numpy columns. A poll asks for the rows after its cursor given the head it saw: the tail reads from
the database only what it lacks (the rows after `covered`), once, under its lock (viewers arriving
meanwhile wait for that read, then select their rows from memory). A cursor older than the tail keeps
gets None: the caller reads it directly, as before. Bounded: a tail keeps at most `max_rows` rows,
`LiveTails` at most `max_tails` tails (least recently used go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

# read(after, head) -> (columns {name: array, same first dimension}, covered: the key up to which the
# source has been read completely, given that every record up to `head` was committed before it,
# facts: what else the read learnt that the rows need, e.g. the layer order; kept in tail.facts)
Reader = Callable[[int, int], tuple[dict, int, dict]]


class GrowingTail:
    """Rows of one append-only source with keys in (base, covered], kept for this process's viewers."""

    def __init__(self, read: Reader, key: str, max_rows: int):
        if max_rows < 2:
            raise ValueError(f"a tail keeps at least 2 rows, got max_rows={max_rows}")
        self._read, self.key, self.max_rows = read, key, max_rows
        self.base: int | None = None
        self.covered: int | None = None
        self.checked_head: int | None = None  # the newest head a read has been made for
        self.columns: dict | None = None
        self.facts: dict = {}
        self.reads = 0
        self._lock = threading.Lock()

    def rows_after(self, after: int, head: int) -> dict | None:
        """{column: array} of the rows with key > `after` (all of them up to `head` at least), or None
        when `after` is older than the tail keeps and more than max_rows behind `head`."""
        after, head = int(after), int(head)
        with self._lock:
            if self.base is None or after < self.base:
                if head - after > self.max_rows:
                    return None  # far behind: the caller's own (counted, limited) read
                self._reset(after, head)
            elif head > (self.checked_head if self.checked_head is not None else self.covered):
                self._extend(head)
            columns = self.columns
        keys = columns[self.key]
        if len(keys) == 0 or keys[0] > after:
            return columns
        start = int(np.searchsorted(keys, after, side="right"))
        return {name: values[start:] for name, values in columns.items()}

    def _reset(self, after: int, head: int) -> None:
        columns, covered, facts = self._read(after, head)
        self.reads += 1
        self.facts.update(facts)
        self.base, self.columns = after, columns
        self.covered, self.checked_head = max(after, covered), head

    def _extend(self, head: int) -> None:
        new, covered, facts = self._read(self.covered, head)
        self.reads += 1
        self.facts.update(facts)
        if not len(self.columns[self.key]):
            self.columns = new  # (an empty read's columns may lack the dtypes)
        elif len(new[self.key]):
            self.columns = {name: np.concatenate([self.columns[name], new[name]]) for name in self.columns}
        self.covered, self.checked_head = max(self.covered, covered), head
        extra = len(self.columns[self.key]) - self.max_rows
        if extra > 0:  # drop the oldest rows: the base moves up to the last one dropped
            drop = extra + self.max_rows // 2
            self.base = int(self.columns[self.key][drop - 1])
            self.columns = {name: values[drop:] for name, values in self.columns.items()}


class LiveTails:
    """The tails of a process, by key (run, source, the database file's identity). Thread-safe."""

    def __init__(self, max_tails: int = 64):
        self.max_tails = max_tails
        self._tails: OrderedDict[Hashable, GrowingTail] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], GrowingTail]) -> GrowingTail:
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = make()
                while len(self._tails) > self.max_tails:
                    self._tails.popitem(last=False)
            else:
                self._tails.move_to_end(key)
            return tail

    @property
    def reads(self) -> int:
        with self._lock:
            return sum(tail.reads for tail in self._tails.values())

"""One read per change for every viewer of a live run: a small in-process single-flight cache.

Twenty browser tabs watching one training run poll it with the same question ("what came after
cursor C?") every second. Each answer costs SQLite queries and frame building; the question repeats,
the answer does not change. `SharedReads.get(key, compute)` runs `compute` once per key: callers that
ask while it runs wait for that one read (single flight), later callers within `ttl_s` get the kept
answer. Keys name what the answer depends on (run, cursor, the head cursor it reads up to), so a kept
answer is never wrong, only possibly old by up to `ttl_s` where a key leans on the files' stat.

Per process on purpose: answers are pandas frames handed to the poll in the same thread, and a read
across gunicorn workers would cost about what the read itself costs (docs/benchmarks.md). Bounded in
entries and in bytes (least recently used go first); errors are handed to the waiters, never kept.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import pandas as pd

DEFAULT_TTL_S = 2.0
DEFAULT_MAX_ENTRIES = 256
DEFAULT_MAX_BYTES = 64 * 2**20


def approx_nbytes(value, _depth: int = 0) -> int:
    """A cheap size estimate of a read's answer (frames, arrays, and the dicts/lists holding them):
    long lists are sampled, not walked, so estimating never costs more than the answer's use."""
    if isinstance(value, pd.DataFrame):
        return 16 * value.size + 256
    if isinstance(value, (np.ndarray, pd.Series)):
        return int(value.nbytes) + 112
    if _depth > 6:
        return 64
    if isinstance(value, dict):
        return 64 + sum(approx_nbytes(v, _depth + 1) + 32 for v in value.values())
    if isinstance(value, (list, tuple)):
        if not value:
            return 56
        sample = value[:: max(1, len(value) // 8)]
        return 56 + len(value) * (8 + sum(approx_nbytes(v, _depth + 1) for v in sample) // len(sample))
    if isinstance(value, str):
        return 49 + len(value)
    return 32


class _Entry:
    __slots__ = ("done", "value", "error", "expires", "nbytes")

    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None
        self.expires = float("inf")
        self.nbytes = 0


class SharedReads:
    """Single-flight, short-lived, memory-bounded answers by key. Thread-safe.

    `reads` counts the computes actually run (a test can assert "one read per change")."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError(f"SharedReads needs ttl_s > 0, max_entries >= 1 and max_bytes >= 1, "
                             f"got {ttl_s}, {max_entries}, {max_bytes}")
        self.ttl_s, self.max_entries, self.max_bytes = ttl_s, max_entries, max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self.reads = 0

    def get(self, key: Hashable, compute: Callable[[], object]):
        """compute()'s answer for `key`: computed once, shared with concurrent and later callers."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.done.is_set() and entry.expires <= self._clock():
                self._drop(key)
                entry = None
            if entry is None:
                entry = _Entry()
                self._entries[key] = entry
                owner = True
                self.reads += 1
            else:
                self._entries.move_to_end(key)
                owner = False
        if not owner:
            entry.done.wait()
            if entry.error is not None:
                raise entry.error
            return entry.value
        try:
            entry.value = compute()
        except BaseException as exc:
            entry.error = exc
            with self._lock:
                if self._entries.get(key) is entry:
                    self._drop(key)
            entry.done.set()
            raise
        size = approx_nbytes(entry.value)
        with self._lock:
            entry.expires = self._clock() + self.ttl_s
            if self._entries.get(key) is entry:
                entry.nbytes = size
                self._bytes += size
                self._evict()
        entry.done.set()
        return entry.value

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.nbytes

    def _evict(self) -> None:
        """Expired answers, then the least recently used finished ones, until within both bounds (an
        answer in flight stays). Within bounds nothing is scanned: expiry is checked on lookup."""
        if len(self._entries) <= self.max_entries and self._bytes <= self.max_bytes:
            return
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.done.is_set() and e.expires <= now]:
            self._drop(key)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next((k for k, e in self._entries.items() if e.done.is_set() or e.nbytes), None)
            if oldest is None:
                break
            self._drop(oldest)

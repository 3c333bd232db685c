"""The shape every diagnosis rule has: an id, thresholds as dataclass fields, skip_reason and check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .data import RunData
from .flags import Flag


@dataclass
class Rule:
    """A diagnosis rule. Subclasses are dataclasses whose fields are the thresholds (with defaults
    and a docstring saying where each comes from); `check` turns RunData into flags.

    Calling a rule skips it quietly (returns []) when the run lacks what it needs.
    """

    rule: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs_layer_stats: ClassVar[bool] = False

    def skip_reason(self, data: RunData) -> str | None:
        """Why this rule cannot run on `data` (None when it can)."""
        if self.needs_layer_stats and not data.has_layer_stats:
            return "no per-layer statistics recorded"
        return None

    def check(self, data: RunData) -> list[Flag]:
        raise NotImplementedError

    def __call__(self, data: RunData) -> list[Flag]:
        if self.skip_reason(data) is not None:
            return []
        return self.check(data)

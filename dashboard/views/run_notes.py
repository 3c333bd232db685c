"""Team notes on the Run page: adding one (read-only mode and validation say why not)."""

from __future__ import annotations

from ..data import RunLogError, RunStore
from .run_url import int_or_none


def add_note_impl(store: RunStore, *, read_only: bool, run_id: str, text: str | None, author: str | None,
                  step, layer: str | None) -> dict:
    """Store a team note; {"ok", "message"} with the refusal or validation message on failure."""
    if read_only:
        return {"ok": False, "message": "This dashboard is read-only: notes cannot be added."}
    step_value = int_or_none(step)
    if step not in (None, "") and step_value is None:
        return {"ok": False, "message": f"step must be a non-negative integer, got {step!r}"}
    try:
        seq = store.add_note(run_id, text or "", author=(author or "").strip() or "anonymous", step=step_value,
                             layer=(layer or None))
    except (ValueError, RunLogError) as exc:
        return {"ok": False, "message": str(exc)}
    return {"ok": True, "message": "Note added.", "seq": seq}

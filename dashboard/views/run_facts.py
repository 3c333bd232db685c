"""Facts of a run that the Run page and its charts read: a layer's parameters, the histogram's layer,
the step slider's marks, the overfitting marks and the flags panel's data."""

from __future__ import annotations

import numpy as np

from ..data import RunStore


def layer_params(info: dict, layer: str | None) -> list[str]:
    """The parameters with histograms that the heatmaps can show for `layer`: its own, or for a module
    without parameters (an activation) those of the closest preceding layer that has some."""
    tensors = info.get("tensors") or []
    own = [t["param"] for t in tensors if t["layer"] == layer and t["role"] == "param"]
    if own:
        return own
    return [t["param"] for t in tensors if t["layer"] == histogram_layer(info, layer) and t["role"] == "param"]


def histogram_layer(info: dict, layer: str | None) -> str | None:
    param_layers = info.get("param_layers") or []
    if layer in param_layers or not param_layers:
        return layer if layer in param_layers else None
    order = info.get("layers") or []
    if layer not in order:
        return param_layers[0]
    position = order.index(layer)
    before = [p for p in param_layers if order.index(p) < position] if all(p in order for p in param_layers) else []
    return before[-1] if before else param_layers[0]


def layer_options(info: dict) -> list[dict]:
    types = {}
    for t in info.get("tensors") or []:
        types.setdefault(t["layer"], t["module_type"])
    return [{"label": f"{layer} ({types.get(layer, '')})", "value": layer} for layer in info.get("layers") or []]


def slider_marks(first: int | None, last: int | None, count: int = 5) -> dict:
    if first is None or last is None:
        return {}
    if last <= first:
        return {str(first): str(first)}
    return {str(int(v)): f"{int(v):,}" for v in np.unique(np.linspace(first, last, count).round())}


# ---- flags and overfitting marks ------------------------------------------------------------------
def overfitting_marks(flags: list[dict] | None) -> dict | None:
    """Best epoch and overfitting stretch from the overfitting flag's evidence (keys read defensively)."""
    for flag in flags or []:
        if flag.get("rule") != "overfitting":
            continue
        evidence = flag.get("evidence") or {}
        best = evidence.get("best_step", evidence.get("onset_step", flag.get("first_step")))
        onset = evidence.get("rising_since_step") or evidence.get("onset_step") or flag.get("first_step")
        return {"best_step": best, "best_epoch": evidence.get("best_epoch"), "onset_step": onset,
                "last_step": flag.get("last_step") or evidence.get("last_step")}
    return None


def flags_impl(store: RunStore, run_id: str, wait: bool = True) -> dict:
    """The flags panel's data; with wait=False a large run's diagnosis runs in the background and
    "pending" says to ask again."""
    result = store.flags(run_id, wait=wait)
    return {"flags": result["flags"], "note": result.get("note"), "error": result.get("error"),
            "pending": bool(result.get("pending"))}

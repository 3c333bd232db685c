"""Layers of a big model for display: filter by name, group repeated blocks by module path.

A model's layers are module paths in forward order (`transformer.h.3.attn.c_attn`). A repeated block
is the path up to its first numeric component (`transformer.h.3`): collapsing shows one row per
block (`transformer.h.3.*`) and leaves every other layer as it is, so the lesson's `net.0`, `net.1`
(one layer per "block") never change. Pure functions over names and step x layer tables.
"""

from __future__ import annotations

import fnmatch
import re
import warnings

import numpy as np
import pandas as pd

GLOB_CHARS = re.compile(r"[*?\[]")
COLLAPSE_AUTO_LAYERS = 48  # more rows than this and the heatmaps group repeated blocks by default


def block_of(layer: str) -> str | None:
    """The repeated block a layer belongs to (`blocks.3` of `blocks.3.mlp.fc1`), or None."""
    parts = str(layer).split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def matches(layer: str, pattern: str | None) -> bool:
    """A name filter: comma-separated terms, each a glob (`*.attn.*`) or a substring, case-insensitive."""
    terms = [t.strip().lower() for t in str(pattern or "").split(",") if t.strip()]
    if not terms:
        return True
    name = str(layer).lower()
    return any(fnmatch.fnmatchcase(name, t) if GLOB_CHARS.search(t) else t in name for t in terms)


def filter_layers(layers: list[str], pattern: str | None) -> list[str]:
    return [layer for layer in layers if matches(layer, pattern)]


def groups(layers: list[str]) -> list[tuple[str, list[str]]]:
    """(row label, member layers) in forward order: one row per repeated block with more than one
    member (`blocks.3.*`), every other layer its own row."""
    members: dict[str, list[str]] = {}
    for layer in layers:
        block = block_of(layer)
        members.setdefault(f"{block}.*" if block else layer, []).append(layer)
    out = []
    for label, names in members.items():
        if len(names) == 1 and label.endswith(".*"):
            out.append((names[0], names))
        else:
            out.append((label, names))
    return out


def should_collapse(layers: list[str], collapse: bool | None) -> bool:
    """An explicit choice wins; by default collapse when the rows would not fit one picture."""
    if collapse is not None:
        return bool(collapse)
    return len(layers) > COLLAPSE_AUTO_LAYERS and len(groups(layers)) < len(layers)


def aggregate(table: pd.DataFrame, how: str, rows: list[tuple[str, list[str]]]) -> pd.DataFrame:
    """A step x row table from a step x layer table: each row combines its members' values.

    how: "rss" (root of the sum of squares: a group's gradient norm is the norm of its parameters
    together), "rms" (typical member value: update ratios), "mean" (fractions), "max" (largest
    element), "sum" (counts)."""
    if table is None or table.empty:
        return pd.DataFrame(index=getattr(table, "index", pd.Index([], name="step")))
    out = {}
    for label, names in rows:
        present = [n for n in names if n in table.columns]
        if not present:
            continue
        block = table[present].to_numpy(dtype=float)
        # An all-NaN slice (no value for a group at a step) is a gap, not news.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if how == "rss":
                value = np.sqrt(np.nansum(block**2, axis=1))
                value[np.all(np.isnan(block), axis=1)] = np.nan
            elif how == "rms":
                value = np.sqrt(np.nanmean(block**2, axis=1))
            elif how == "mean":
                value = np.nanmean(block, axis=1)
            elif how == "max":
                value = np.nanmax(block, axis=1)
            elif how == "sum":
                value = np.nansum(block, axis=1)
            else:
                raise ValueError(f"unknown aggregation {how!r}; known: rss, rms, mean, max, sum")
        out[label] = value
    return pd.DataFrame(out, index=table.index)


def display_rows(layers: list[str], pattern: str | None, collapse: bool | None) -> tuple[list, bool]:
    """The rows a per-layer picture shows: filtered by name, grouped when collapsed; and whether it is."""
    kept = filter_layers(layers, pattern)
    grouped = should_collapse(kept, collapse)
    return (groups(kept) if grouped else [(layer, [layer]) for layer in kept]), grouped


def flagged_rows(rows: list[tuple[str, list[str]]], flags: list[dict] | None) -> dict[str, str]:
    """{row label: rule names} for the rows holding a flagged layer."""
    by_layer: dict[str, set] = {}
    for flag in flags or []:
        for layer in flag.get("layers") or []:
            by_layer.setdefault(str(layer), set()).add(str(flag.get("rule") or "flag"))
    out = {}
    for label, names in rows:
        rules = set().union(*(by_layer.get(n, set()) for n in names)) if names else set()
        if rules:
            out[label] = ", ".join(sorted(rules))
    return out

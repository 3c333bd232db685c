"""One flag per problem: the post-hoc diagnosis and the flags raised live merged, with their history.

The live trainer stores a flag each time a rule finds something new (a vanishing gradient that
spreads to another layer is raised again with the larger layer set); the post-hoc diagnosis of the
whole run finds the same problem once more. Shown side by side these read as three problems. Flags
of one rule whose layers overlap (run-level flags: whose steps overlap, or which both name no layer)
are one problem; the merged flag keeps the post-hoc finding's text and numbers (the most complete),
the worst severity seen, the union of layers and steps, and says how it evolved: first raised live
at step N, layers added later, still active in the post-hoc diagnosis or cleared since.
Flags are plain dicts (Flag.to_dict(), plus raised_step for stored ones) so the dashboard and the CLI
share this code without building Flag objects.
"""

from __future__ import annotations

from .flags import SEVERITY_RANK


def merge_flags(diagnosed: list[dict], stored: list[dict]) -> list[dict]:
    """Post-hoc flags (`diagnosed`) and stored live flags (`stored`) -> one dict per problem, critical
    first, then by first step. Each merged flag has `source` ("diagnosis" when the post-hoc diagnosis
    still finds it, else "live") and, when it merged several findings, `history`."""
    # A result merged before (diagnose_run merges, then the dashboard merges newer stored flags in):
    # its cleared problems are rebuilt from the stored flags, its text from the original finding.
    diagnosed = [f for f in diagnosed
                 if f.get("source") != "live" and (f.get("history") or {}).get("active", True)]
    items = [(dict(f), "diagnosis") for f in diagnosed] + [(dict(f), "live") for f in stored]
    groups: list[list[tuple[dict, str]]] = []
    for item in items:
        joined = [g for g in groups if any(_same_problem(item[0], other) for other, _ in g)]
        merged = [item]
        for group in joined:
            merged.extend(group)
            groups.remove(group)
        groups.append(merged)
    out = [_merge_group(group) for group in groups]
    out.sort(key=lambda f: (SEVERITY_RANK.get(f.get("severity"), 3), f.get("first_step") is None,
                            f.get("first_step") or 0, str(f.get("rule"))))
    return out


def _absorbed_rules(flag: dict) -> set:
    return {str(a.get("rule")) for a in flag.get("absorbed") or [] if isinstance(a, dict)}


def _same_problem(a: dict, b: dict) -> bool:
    # A cause-chain card (one_card_per_problem) is also the problem of the findings it absorbed.
    if b.get("rule") in _absorbed_rules(a) or a.get("rule") in _absorbed_rules(b):
        return True
    if a.get("rule") != b.get("rule"):
        return False
    # learning_rate "too high" and "too low" are two problems of one rule.
    da, db = (a.get("evidence") or {}).get("direction"), (b.get("evidence") or {}).get("direction")
    if da is not None and db is not None and da != db:
        return False
    la, lb = set(a.get("layers") or []), set(b.get("layers") or [])
    if la and lb:
        return bool(la & lb)
    if la or lb:
        return _steps_overlap(a, b)
    return True  # two run-level findings of one rule: one problem


def _steps_overlap(a: dict, b: dict) -> bool:
    a0, a1, b0, b1 = a.get("first_step"), a.get("last_step"), b.get("first_step"), b.get("last_step")
    if a0 is None or b0 is None:
        return False
    a1 = a0 if a1 is None else a1
    b1 = b0 if b1 is None else b1
    return a0 <= b1 and b0 <= a1


def _merge_group(group: list[tuple[dict, str]]) -> dict:
    posthoc = [f for f, source in group if source == "diagnosis"]
    live = sorted((f for f, source in group if source == "live"), key=lambda f: (f.get("raised_step") or 0))
    if len(group) == 1:
        flag, source = group[0]
        return dict(flag, source=source)
    base = min(posthoc or live[-1:], key=lambda f: SEVERITY_RANK.get(f.get("severity"), 3))
    worst = min((f for f, _ in group), key=lambda f: SEVERITY_RANK.get(f.get("severity"), 3))
    layers = list(base.get("layers") or [])
    for flag, _ in group:
        layers += [layer for layer in flag.get("layers") or [] if layer not in layers]
    firsts = [f.get("first_step") for f, _ in group if f.get("first_step") is not None]
    lasts = [f.get("last_step") for f, _ in group if f.get("last_step") is not None]

    events, seen = [], set()
    for flag in live:
        new = [layer for layer in flag.get("layers") or [] if layer not in seen]
        seen.update(new)
        events.append({"raised_step": flag.get("raised_step"), "severity": flag.get("severity"), "layers_added": new})
    history = {
        "findings": len(group),
        "raised_live": events,
        "first_raised_step": events[0]["raised_step"] if events else None,
        "active": bool(posthoc),
    }
    merged = dict(base, severity=worst.get("severity"), layers=layers,
                  first_step=min(firsts) if firsts else None, last_step=max(lasts) if lasts else None,
                  source="diagnosis" if posthoc else "live", history=history)
    finding = (base.get("finding") or base.get("explanation") or "").rstrip()
    merged["finding"] = finding
    merged["explanation"] = finding + " " + history_sentence(history, posthoc_layers=set(layers) - seen)
    return merged


def history_sentence(history: dict, posthoc_layers: set | None = None) -> str:
    """'First raised live at step 40 (fc1); fc2 added at step 80; still active.'"""
    parts = []
    for i, event in enumerate(history.get("raised_live") or []):
        added = event.get("layers_added") or []
        where = f" ({', '.join(added)})" if added else ""
        if i == 0:
            parts.append(f"First raised live at step {event.get('raised_step')}{where}")
        elif added:
            parts.append(f"{', '.join(added)} added at step {event.get('raised_step')}")
        elif event.get("severity") != (history["raised_live"][i - 1].get("severity")):
            parts.append(f"{event.get('severity')} at step {event.get('raised_step')}")
    if posthoc_layers and parts:
        parts.append(f"{', '.join(sorted(posthoc_layers))} found after the run")
    if history.get("active"):
        parts.append("still found by the diagnosis of the whole run")
    else:
        parts.append("no longer found by the diagnosis of the whole run (cleared)")
    return "; ".join(parts) + "."

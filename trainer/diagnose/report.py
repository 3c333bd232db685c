"""Diagnosing a run folder (`diagnose_run`) and the text report behind `gradwatch diagnose`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable

from ..runlog.reader import RunLogError, RunReader
from .data import RunData
from .engine import diagnose, resolve_rules, skipped_rules
from .flags import REMEDIES
from .merge import merge_flags
from .rule import Rule

NO_RECORDS_NOTE = "the run has no records yet (no scalars and no layer statistics); nothing to diagnose"
SCALARS_ONLY_NOTE = "the run has no per-layer statistics; only the loss-curve rules ran"


class DiagnosisError(RunLogError):
    """A run folder cannot be diagnosed; the message names the folder and the problem."""


def diagnose_run(run_dir: str | os.PathLike, rules: Iterable[Rule | str] | None = None) -> dict:
    """Diagnose one run folder: {"run", "status", "flags": [flag dicts], "note", "checked", "skipped"}.

    Raises DiagnosisError (with a one-line message) for a folder that is not a readable run.
    A run without records yet gives empty flags and a note; layer rules skip a scalars-only run.
    """
    rules = resolve_rules(rules)
    try:
        with RunReader(run_dir) as reader:
            status = reader.status()
            data = RunData.from_reader(reader)
            stored, _ = reader.flags()
    except RunLogError as exc:
        raise DiagnosisError(str(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DiagnosisError(f"run folder {str(run_dir)!r} holds malformed records ({exc})") from None
    result = {"run": data.run_id, "status": status, "flags": [], "note": None, "checked": [], "skipped": {},
              "preset": data.config.get("preset")}
    if not data.has_records:
        result["flags"] = merge_flags([], stored)
        result["note"] = NO_RECORDS_NOTE
        result["skipped"] = {rule.rule: "no records" for rule in rules}
        return result
    skipped = skipped_rules(data, rules)
    result["skipped"] = skipped
    result["checked"] = [rule.rule for rule in rules if rule.rule not in skipped]
    try:
        flags = diagnose(data, rules)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DiagnosisError(
            f"run {data.run_id!r}: the diagnosis rules failed on its records ({type(exc).__name__}: {exc})"
        ) from None
    # One flag per problem: what the trainer raised live merges with the post-hoc findings.
    result["flags"] = merge_flags([flag.to_dict() for flag in flags], stored)
    if not data.has_layer_stats:
        result["note"] = SCALARS_ONLY_NOTE
    return result


def format_report(result: dict, width: int = 100) -> str:
    """A readable text report of a diagnose_run result."""
    flags = result.get("flags") or []
    counts = {}
    for flag in flags:
        counts[flag["severity"]] = counts.get(flag["severity"], 0) + 1
    summary = ", ".join(f"{n} {severity}" for severity, n in counts.items()) or "no findings"
    lines = [f"Run {result.get('run', '?')} ({result.get('status', '?')}): {summary}"]
    if result.get("note"):
        lines.append(f"Note: {result['note']}")
    for number, flag in enumerate(flags, 1):
        steps = _step_range(flag.get("first_step"), flag.get("last_step"))
        layers = ", ".join(flag.get("layers") or [])
        lines.append("")
        lines.append(f"{number}. [{flag['severity'].upper()}] {flag['rule']}{steps}" + (f" - {layers}" if layers else ""))
        lines.extend(textwrap.wrap(flag.get("explanation", ""), width, initial_indent="   ", subsequent_indent="   "))
        remedies = flag.get("remedies") or [REMEDIES[r] for r in flag.get("remedy_ids") or [] if r in REMEDIES]
        # A run from a lesson preset tries remedies as other presets; any other run gets the code change.
        code = [] if result.get("preset") else list(flag.get("remedy_code") or [])
        if remedies:
            lines.append("   Try:")
            for i, remedy in enumerate(remedies):
                lines.extend(textwrap.wrap(remedy, width, initial_indent="   - ", subsequent_indent="     "))
                if i < len(code) and code[i]:
                    lines.extend("       " + line for line in code[i].splitlines())
    skipped = result.get("skipped") or {}
    if skipped and result.get("checked"):
        lines.append("")
        lines.append("Not checked: " + "; ".join(f"{rule} ({reason})" for rule, reason in skipped.items()))
    return "\n".join(lines)


def _step_range(first, last) -> str:
    if first is None:
        return ""
    if last is None or last == first:
        return f" at step {first}"
    return f" at steps {first}-{last}"

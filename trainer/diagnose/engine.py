"""Running a set of rules over one run: the default rule set and `diagnose`."""

from __future__ import annotations

from collections.abc import Iterable

from .activations import DeadUnits, SaturatedUnits
from .data import RunData
from .flags import Flag, sort_flags
from .generalisation import Overfitting, Underfitting
from .gradients import ExplodingGradient, VanishingGradient
from .learning_rate import LearningRate
from .loss import LossDivergence
from .mechanisms import WeightCollapse, ZeroGradients
from .nonfinite import NonFinite
from .remedies import fit_remedies
from .rule import Rule

RULE_CLASSES: dict[str, type[Rule]] = {
    cls.rule: cls
    for cls in (
        NonFinite, VanishingGradient, ExplodingGradient, DeadUnits, SaturatedUnits, Overfitting,
        Underfitting, LearningRate, LossDivergence, ZeroGradients, WeightCollapse,
    )
}


def default_rules() -> list[Rule]:
    """Every rule with its default thresholds."""
    return [cls() for cls in RULE_CLASSES.values()]


def resolve_rules(rules: Iterable[Rule | str] | None) -> list[Rule]:
    """Rule instances from instances and/or rule ids (None: every rule with defaults)."""
    if rules is None:
        return default_rules()
    resolved = []
    for rule in rules:
        if isinstance(rule, Rule):
            resolved.append(rule)
        elif isinstance(rule, str) and rule in RULE_CLASSES:
            resolved.append(RULE_CLASSES[rule]())
        else:
            raise ValueError(f"unknown diagnosis rule {rule!r}; known rules: {', '.join(RULE_CLASSES)}")
    return resolved


def diagnose(data: RunData, rules: Iterable[Rule | str] | None = None) -> list[Flag]:
    """Every flag the rules raise on `data`, critical first, then by first step.

    Rules that lack their inputs (layer rules on a scalars-only run, overfitting without val_loss)
    are skipped quietly; `skipped_rules` says which and why. Remedies are then checked against the
    run and against each other's findings (remedies.fit_remedies).
    """
    flags: list[Flag] = []
    for rule in resolve_rules(rules):
        flags.extend(rule(data))
    return fit_remedies(sort_flags(by_mechanism(after_blow_up(flags))), data)


BLOW_UP_RULES = ("exploding_gradient", "loss_divergence")


def after_blow_up(flags: list[Flag]) -> list[Flag]:
    """Vanishing gradients that begin at or after a critical blow-up are its aftermath (saturated
    gates, dead units after a huge step), not a second problem: they become info, pointing at it."""
    blow_ups = [f.first_step for f in flags if f.rule in BLOW_UP_RULES and f.severity == "critical"
                and f.first_step is not None]
    if not blow_ups:
        return flags
    start = min(blow_ups)
    for flag in flags:
        if flag.rule == "vanishing_gradient" and flag.severity != "info" and (flag.first_step or 0) >= start:
            flag.severity = "info"
            flag.explanation += (f" This began after the blow-up at step {start} (see the exploding-gradient / "
                                 "loss-divergence flag); fix that first.")
    return flags


# A mechanism finding explains what other rules see as a symptom: those become info, pointing at it.
SYMPTOMS = {
    "zero_gradients": ("underfitting", "learning_rate", "vanishing_gradient"),
    "weight_collapse": ("vanishing_gradient", "underfitting", "learning_rate", "exploding_gradient"),
}


def _is_symptom(flag: Flag, cause: Flag) -> bool:
    if flag.rule not in SYMPTOMS[cause.rule] or flag.severity == "info":
        return False
    if flag.rule == "exploding_gradient":
        # Only "huge updates" is the shrinking itself (decay moves the weights by a large share of
        # their size); a gradient that spikes, grows or blows up is a problem of its own.
        ev = flag.evidence
        return not (ev.get("spikes", 0) or (ev.get("growth_decades") or 0) >= 2 or "blowup_decades" in ev)
    return True


def by_mechanism(flags: list[Flag]) -> list[Flag]:
    """Symptoms of an active mechanism finding (all-zero gradients, weights collapsed under
    regularisation) become info: "raise the learning rate" or "use ReLU" would not cure them."""
    for cause in [f for f in flags if f.rule in SYMPTOMS and f.severity in ("critical", "warning")]:
        for flag in flags:
            if _is_symptom(flag, cause):
                flag.severity = "info"
                flag.explanation += (f" This follows from the {cause.rule.replace('_', ' ')} finding "
                                     f"from step {cause.first_step}; fix that first.")
    return flags


def skipped_rules(data: RunData, rules: Iterable[Rule | str] | None = None) -> dict[str, str]:
    """rule id -> why it did not run on `data`."""
    skipped = {}
    for rule in resolve_rules(rules):
        reason = rule.skip_reason(data)
        if reason is not None:
            skipped[rule.rule] = reason
    return skipped

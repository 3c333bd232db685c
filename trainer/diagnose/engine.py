"""Running a set of rules over one run: the default rule set and `diagnose`."""

from __future__ import annotations

from collections.abc import Iterable

from .activations import DeadUnits, SaturatedUnits
from .data import RunData
from .flags import SEVERITY_RANK, Flag, layer_list, sort_flags
from .generalisation import Overfitting, Underfitting
from .gradients import ExplodingGradient, VanishingGradient
from .large_model import AdamSecondMomentLag, AttentionLogitGrowth, OutputLogitDrift
from .learning_rate import LearningRate
from .loss import LossDivergence
from .mechanisms import VanishingThroughTime, WeightCollapse, ZeroGradients
from .nonfinite import NonFinite
from .remedies import fit_remedies
from .rule import Rule

RULE_CLASSES: dict[str, type[Rule]] = {
    cls.rule: cls
    for cls in (
        NonFinite, VanishingGradient, ExplodingGradient, DeadUnits, SaturatedUnits, Overfitting,
        Underfitting, LearningRate, LossDivergence, ZeroGradients, WeightCollapse, AttentionLogitGrowth,
        OutputLogitDrift, AdamSecondMomentLag, VanishingThroughTime,
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
    return fit_remedies(sort_flags(one_card_per_problem(by_mechanism(after_blow_up(flags)))), data)


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
    "vanishing_through_time": ("underfitting", "learning_rate"),
}


def _is_symptom(flag: Flag, cause: Flag) -> bool:
    if flag.rule not in SYMPTOMS[cause.rule] or flag.severity == "info":
        return False
    if flag.rule == "exploding_gradient":
        # Only "huge updates" is the shrinking itself (decay moves the weights by a large share of
        # their size); a gradient that spikes, grows or blows up is a problem of its own.
        ev = flag.evidence
        return not (ev.get("spikes", 0) or (ev.get("growth_decades") or 0) >= 2 or "blowup_decades" in ev)
    if flag.rule == "learning_rate" and cause.rule == "vanishing_through_time":
        return flag.evidence.get("direction") == -1  # "too low" is the symptom; "too high" is not
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


# The blow-up story: gradients surge, the loss diverges, values turn NaN/Inf. Told as one card,
# its causes in order; the first of these rules present names the card.
CHAIN = ("exploding_gradient", "loss_divergence", "nonfinite")
CHAIN_TEXT = {
    "exploding_gradient": "gradients surged{layers} at step {step}",
    "loss_divergence": "the loss diverged from step {step}",
    "nonfinite": "values turned NaN/Inf at step {step}{layers}",
}


def one_card_per_problem(flags: list[Flag]) -> list[Flag]:
    """An exploding run's exploding-gradient, loss-divergence and NaN flags are one problem: one card,
    named by the earliest rule in CHAIN present, its explanation opening with the cause chain in
    step order, severity the worst of them, remedies the lead flag's first (its fix), then the
    others'. The merged findings stay in `absorbed` (the evaluation and the merge with live flags
    read them)."""
    story = [f for f in flags if f.rule in CHAIN and f.severity in ("critical", "warning")]
    if len({f.rule for f in story}) < 2:
        return flags
    lead = min(story, key=lambda f: CHAIN.index(f.rule))
    links = sorted(story, key=lambda f: (f.first_step if f.first_step is not None else 1 << 62, CHAIN.index(f.rule)))
    chain_parts, chain = [], []
    for flag in links:
        where = flag.layers if flag.rule != "nonfinite" else flag.layers[:1]
        text = CHAIN_TEXT[flag.rule].format(step=flag.first_step, layers=f" in {layer_list(where)}" if where else "")
        chain_parts.append(text)
        chain.append({"rule": flag.rule, "step": flag.first_step, "layers": list(flag.layers)})
    others = [f for f in story if f is not lead]
    remedies = list(lead.remedy_ids)
    for flag in others:
        remedies += [r for r in flag.remedy_ids if r not in remedies]
    worst = min((f.severity for f in story), key=lambda s: SEVERITY_RANK[s])
    firsts = [f.first_step for f in story if f.first_step is not None]
    lasts = [f.last_step for f in story if f.last_step is not None]
    chain_sentence = chain_parts[0][0].upper() + chain_parts[0][1:] + "".join(f" -> {p}" for p in chain_parts[1:])
    card = Flag(
        rule=lead.rule, severity=worst, layers=list(lead.layers), first_step=min(firsts) if firsts else None,
        last_step=max(lasts) if lasts else None, evidence=dict(lead.evidence, chain=chain),
        explanation=chain_sentence + ". " + lead.explanation + "".join(" " + f.explanation for f in others),
        remedy_ids=remedies, absorbed=[f.to_dict() for f in others],
    )
    return [card if f is lead else f for f in flags if f not in others]


def expand_absorbed(flags: list[Flag]) -> list[Flag]:
    """The flags with the findings of each cause-chain card listed again on their own (scoring and
    tests that ask "did rule R fire?")."""
    out = []
    for flag in flags:
        out.append(flag)
        out.extend(Flag.from_dict(a) for a in flag.absorbed)
    return out


def skipped_rules(data: RunData, rules: Iterable[Rule | str] | None = None) -> dict[str, str]:
    """rule id -> why it did not run on `data`."""
    skipped = {}
    for rule in resolve_rules(rules):
        reason = rule.skip_reason(data)
        if reason is not None:
            skipped[rule.rule] = reason
    return skipped

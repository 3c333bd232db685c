"""The held-out truth: what went wrong in a run, from when, and where, read off TruthProbe's
plain-torch measurements with fixed, simple tests. No gradwatch rule, threshold object or record is
used; the numbers below are the textbook readings, chosen before any held-out run was looked at.

Findings, in the order they decide the run's kind (the first that holds is the problem; the others
are listed as consequences a diagnosis may also name):

1. `divergence` - the run blew up: a NaN/Inf loss or gradient; or the loss rose above
   `DIVERGED` (1.5) x the untrained level (max(step-0 loss, ln K)) and either went above 3x it or
   ended (median of the last quarter) no better than it; or the total gradient norm surged
   `SURGE` (100) x over the median of the steps before it while the loss rose above the untrained
   level within `SURGE_LOSS_STEPS` steps. Onset: the earliest of the surge, the rise and the NaN.
   Layers: those whose own gradient norm at the onset step was 10x or more their median before it.
2. `vanishing` - the largest gradient norm among the first quarter of the depth path (weighted
   layers without embeddings, in order) below `VANISH` (1e-3) x the last layer's, on at least 80 %
   of the steps from the onset on (at least `MIN_STEPS` steps). Layers: the depth layers whose
   median ratio to the last layer over that stretch is below 1e-3.
3. `dead_units` - a ReLU site with more than half its units silent for a whole batch on at least
   80 % of the steps from the onset on. Layers: those sites and the weighted layers they belong to.
4. `overfitting` - at least 4 evaluations, at least 2 after the lowest validation loss, the last
   one at least 5 % above that minimum (Prechelt's GL_5), while the training loss went on falling
   (mean over the last evaluation interval below the mean over the interval that ended at the
   best one). Onset: the best evaluation's step.
5. `underfitting` - the training loss never left the untrained level: the median of the last
   quarter at least `AT_CHANCE` (0.9) x the untrained level. Onset: the first step.

Otherwise the run is `healthy`. Steps here are optimizer steps counted from 0 (the probe's count);
the evaluation adds the stack's offset (HF counts from 1).
"""

from __future__ import annotations

import math

import numpy as np

DIVERGED = 1.5
BLOWN_UP = 3.0
SURGE = 100.0
SURGE_LOSS_STEPS = 5
SURGED_LAYER = 10.0
VANISH = 1e-3
DEAD = 0.5
SUSTAINED = 0.8
MIN_STEPS = 5
GL = 0.05
AT_CHANCE = 0.9
MIN_EVALUATIONS = 4
KINDS = ("divergence", "vanishing", "dead_units", "overfitting", "underfitting")  # in the order they decide


def truth(record: dict) -> dict:
    """The run's truth label: {"kind", "onset", "layers", "findings", "evidence"}. `record` is
    TruthProbe.record() with "num_classes" added for a K-way classifier or a language model (K =
    its vocabulary)."""
    num_classes = record.get("num_classes")
    loss_steps = sorted(record["loss"])
    loss = np.array([record["loss"][s] for s in loss_steps], dtype=float)
    untrained = untrained_level(loss, num_classes)
    findings = {}
    tests = (_divergence, _vanishing, _dead, _overfitting, _underfitting)
    for name, test in zip(KINDS, tests):
        found = test(record, loss_steps, loss, untrained)
        if found is not None:
            findings[name] = found
    kind = next(iter(findings), "healthy")
    main = findings.get(kind, {})
    return {
        "kind": kind,
        "onset": main.get("onset"),
        "layers": main.get("layers", []),
        "findings": findings,
        "evidence": {"untrained_loss": _num(untrained), "step0_loss": _num(loss[0]) if len(loss) else None,
                     "ln_k": _num(math.log(num_classes)) if num_classes else None,
                     "final_loss": _num(_tail_median(loss)), "steps": record["steps"]},
    }


def untrained_level(loss: np.ndarray, num_classes: int | None) -> float:
    """The loss of the untrained model: its step-0 loss, or ln K for a K-way classifier when higher
    (an overconfident initialisation can start below a uniform guess and still be untrained)."""
    first = float(loss[0]) if len(loss) and math.isfinite(loss[0]) else math.nan
    if num_classes:
        return max(first, math.log(num_classes)) if math.isfinite(first) else math.log(num_classes)
    return first


# ---- the tests ------------------------------------------------------------------------------------
def _divergence(record, loss_steps, loss, untrained):
    norms = record["grad_norms"]
    total = np.array([_total(n) for n in norms], dtype=float)
    nan_steps = [s for s, v in zip(loss_steps, loss) if not math.isfinite(v)]
    nan_steps += [s for s, n in enumerate(record["nonfinite_grads"]) if n]
    nan_step = min(nan_steps) if nan_steps else None
    rise_step = None
    if math.isfinite(untrained) and untrained > 0:
        above = [s for s, v in zip(loss_steps, loss) if math.isfinite(v) and v > DIVERGED * untrained]
        finite = loss[np.isfinite(loss)]
        if above and (finite.max() > BLOWN_UP * untrained or _tail_median(loss) >= untrained):
            rise_step = above[0]
    surge_step = None
    for s in range(1, len(total)):
        before = total[max(0, s - 20):s]
        before = before[np.isfinite(before) & (before > 0)]
        if not len(before) or not (math.isfinite(total[s]) and total[s] >= SURGE * np.median(before)):
            continue
        later = [v for t, v in zip(loss_steps, loss) if s <= t <= s + SURGE_LOSS_STEPS]
        if any(not math.isfinite(v) or v > untrained for v in later):
            surge_step = s
            break
    signs = [s for s in (nan_step, rise_step, surge_step) if s is not None]
    if nan_step is None and rise_step is None and surge_step is None:
        return None
    onset = min(signs)
    return {"onset": onset, "layers": _surged_layers(norms, onset), "nan_step": nan_step, "rise_step": rise_step,
            "surge_step": surge_step}


def _surged_layers(norms: list[dict], step: int) -> list[str]:
    """Layers whose gradient norm at `step` is SURGED_LAYER x their median before it (the first
    step has no history: nothing can be said)."""
    if step >= len(norms) or step == 0:
        return []
    layers = []
    for layer, value in norms[step].items():
        before = np.array([n.get(layer, math.nan) for n in norms[max(0, step - 20):step]], dtype=float)
        before = before[np.isfinite(before) & (before > 0)]
        if len(before) and (not math.isfinite(value) or value >= SURGED_LAYER * np.median(before)):
            layers.append(layer)
    return layers


def _vanishing(record, loss_steps, loss, untrained):
    depth = list(record["depth_layers"])
    norms = record["grad_norms"]
    if len(depth) < 2 or not norms:
        return None
    # The gradient that reaches the input end: the largest norm among the first quarter of the
    # depth path (a transformer block's query and key gradients are tiny at initialisation while
    # its value and MLP gradients are not: that is no vanishing).
    early, last = depth[:max(1, (len(depth) - 1) // 4)], depth[-1]
    ratio = np.array([_ratio(_largest(n, early), n.get(last)) for n in norms], dtype=float)
    onset = _sustained_onset(ratio < VANISH)
    if onset is None:
        return None
    layers = []
    for layer in depth[:-1]:
        r = np.array([_ratio(n.get(layer), n.get(last)) for n in norms[onset:]], dtype=float)
        if np.isfinite(r).any() and np.nanmedian(r) < VANISH:
            layers.append(layer)
    return {"onset": onset, "layers": layers, "median_early_over_last": _num(np.nanmedian(ratio[onset:]))}


def _largest(norms: dict, layers: list[str]):
    values = [norms[layer] for layer in layers if layer in norms and math.isfinite(norms[layer])]
    return max(values) if values else None


def _dead(record, loss_steps, loss, untrained):
    best = None
    for site, values in record["dead"].items():
        if not values:
            continue
        steps = sorted(values)
        onset = _sustained_onset(np.array([values[s] > DEAD for s in steps]))
        if onset is None:
            continue
        step = steps[onset]
        if best is None or step < best[0]:
            best = (step, [])
        if step <= best[0] + MIN_STEPS:
            best[1].append(site)
    if best is None:
        return None
    sites = best[1]
    layers = sites + [record["layer_of_site"][s] for s in sites if s in record["layer_of_site"]]
    fractions = {s: _num(np.median(list(record["dead"][s].values()))) for s in sites}
    return {"onset": best[0], "layers": layers, "median_dead_fraction": fractions}


def _overfitting(record, loss_steps, loss, untrained):
    val = [(s, v) for s, v in record["val"] if math.isfinite(v)]
    if len(val) < MIN_EVALUATIONS:
        return None
    values = np.array([v for _, v in val])
    best = int(np.argmin(values))
    if len(val) - 1 - best < 2 or values[-1] < (1 + GL) * values[best]:
        return None
    best_step, last_step = val[best][0], val[-1][0]
    start_best = val[best - 1][0] if best else -1
    at_best = [v for s, v in zip(loss_steps, loss) if start_best < s <= best_step]
    at_end = [v for s, v in zip(loss_steps, loss) if val[-2][0] < s <= last_step]
    if not at_best or not at_end or not np.mean(at_end) < np.mean(at_best):
        return None
    return {"onset": best_step, "layers": [], "best_val": _num(values[best]), "last_val": _num(values[-1]),
            "gl_percent": _num(100 * (values[-1] / values[best] - 1)),
            "evaluation_interval": int(np.median(np.diff([s for s, _ in val])))}


def _underfitting(record, loss_steps, loss, untrained):
    if len(loss) < 2 * MIN_STEPS or not math.isfinite(untrained):
        return None
    if _tail_median(loss) >= AT_CHANCE * untrained:
        return {"onset": loss_steps[0], "layers": [], "final_over_untrained": _num(_tail_median(loss) / untrained)}
    return None


# ---- helpers --------------------------------------------------------------------------------------
def _sustained_onset(mask: np.ndarray) -> int | None:
    """First index from which `mask` holds on SUSTAINED of the remaining points (MIN_STEPS or more
    of them), starting on a point where it holds."""
    n = len(mask)
    for i in np.flatnonzero(mask):
        rest = mask[i:]
        if len(rest) >= MIN_STEPS and rest.mean() >= SUSTAINED:
            return int(i)
    return None if n else None


def _total(norms: dict) -> float:
    values = np.array(list(norms.values()), dtype=float)
    if not len(values):
        return math.nan
    return float(np.sqrt((values ** 2).sum())) if np.isfinite(values).all() else math.inf


def _ratio(a, b) -> float:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0 or a <= 0:
        return math.nan
    return a / b


def _tail_median(loss: np.ndarray) -> float:
    if not len(loss):
        return math.nan
    tail = loss[-max(1, len(loss) // 4):]
    if not np.isfinite(tail).all():
        return math.inf
    return float(np.median(tail))


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None

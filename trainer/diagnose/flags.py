"""What a diagnosis rule reports: the Flag record, severities and the lesson's remedies.

Remedies are stable ids with one sentence each so the dashboard can link an id to a training preset
and the text can change without breaking links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..runlog.validate import FLAG_SEVERITIES as SEVERITIES  # one list for the writer, readers and rules

# Sort key: critical first.
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

# The course lesson's remedies (first block), then three that the lesson implies but does not name.
REMEDIES = {
    "relu": "Use ReLU (or another ReLU-family activation) instead of sigmoid/tanh in the hidden layers.",
    "batchnorm": "Add batch normalisation between layers to keep activations and gradients in a healthy range.",
    "clipping": "Clip the gradient norm (torch.nn.utils.clip_grad_norm_, max_norm around 1).",
    "smaller": "Use a smaller network (fewer layers or units) so it cannot memorise the training set.",
    "l1": "Add an L1 penalty on the weights.",
    "l2": "Add an L2 penalty (weight decay) on the weights.",
    "dropout": "Add dropout between layers.",
    "early-stopping": "Stop early: keep the weights from the epoch with the lowest validation loss.",
    "augment": "Train on more data, or augment the data you have.",
    "lstm": "Use an LSTM (or GRU) instead of a plain RNN.",
    "lower-lr": "Lower the learning rate (try 3-10x smaller).",
    "higher-lr": "Raise the learning rate (try 3-10x larger).",
    "init": "Use a better weight initialisation (Xavier/Glorot for sigmoid/tanh, He/Kaiming for ReLU).",
    # Not named in the lesson, but the standard fixes for the conditions below.
    "leaky-relu": "Use LeakyReLU (a small slope for negative inputs) so a unit cannot die completely.",
    "bigger": "Use a larger network or train for longer.",
    "less-regularisation": "Reduce regularisation (dropout rate, weight decay) if it is set high.",
    "qk-norm": "Normalise queries and keys (QK layer norm) before the attention dot product, so attention logits stay bounded.",
    "z-loss": "Add a z-loss (1e-4 x log^2 of the softmax normaliser) so the output logits cannot drift as a whole.",
    "gate-bias": ("Initialise the LSTM forget-gate bias to about 1 (Jozefowicz et al. 2015) so the cell carries its "
                  "state through time; make sure no code sets the gate biases strongly negative."),
    "warmup": "Warm the learning rate up linearly over the first ~1-5% of steps.",
    "adam-beta2": "Lower Adam's beta2 (e.g. 0.95) or raise eps, so the second moment keeps up with sudden gradients.",
    "zero-grad": ("Find what zeroes every gradient: a clip threshold of 0, the loss computed under torch.no_grad() "
                  "or from .detach()ed outputs, or every parameter frozen (requires_grad=False)."),
}


@dataclass
class Flag:
    """One finding of one rule.

    layers: module paths in forward order ([] for run-level findings).
    first_step / last_step: optimizer steps where the condition first and last held.
    evidence: the numbers behind the finding (plain ints/floats; `per_layer` may map layer -> number).
    remedy_ids: keys of REMEDIES, most relevant first; `remedies` gives their sentences.
    remedy_code: for each remedy, the code change in the run's stack ("" where none fits), set by
        remedies.fit_remedies.
    history: how a merged flag evolved (merge.merge_flags); empty for a single finding.
    """

    rule: str
    severity: str
    layers: list[str]
    first_step: int | None
    last_step: int | None
    evidence: dict
    explanation: str
    remedy_ids: list[str] = field(default_factory=list)
    remedy_code: list[str] = field(default_factory=list)
    history: dict = field(default_factory=dict)
    absorbed: list[dict] = field(default_factory=list)  # findings told as this card's causes (to_dict of each)

    @property
    def rules(self) -> list[str]:
        """This flag's rule, then those of the findings merged into its cause chain."""
        return [self.rule] + [str(a.get("rule")) for a in self.absorbed]

    def __post_init__(self):
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"flag severity must be one of {SEVERITIES}, got {self.severity!r}")
        unknown = [r for r in self.remedy_ids if r not in REMEDIES]
        if unknown:
            raise ValueError(f"unknown remedy ids {unknown}; known: {sorted(REMEDIES)}")

    @property
    def remedies(self) -> list[str]:
        return [REMEDIES[r] for r in self.remedy_ids]

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """Identity used to tell a new finding from one already raised: rule and layers."""
        return self.rule, tuple(self.layers)

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "layers": list(self.layers),
            "first_step": _plain(self.first_step),
            "last_step": _plain(self.last_step),
            "evidence": _plain(self.evidence),
            "explanation": self.explanation,
            "remedies": self.remedies,
            "remedy_ids": list(self.remedy_ids),
            "remedy_code": list(self.remedy_code),
            "history": _plain(self.history),
            "absorbed": _plain(self.absorbed),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Flag:
        return cls(
            rule=data["rule"],
            severity=data["severity"],
            layers=list(data.get("layers") or []),
            first_step=data.get("first_step"),
            last_step=data.get("last_step"),
            evidence=dict(data.get("evidence") or {}),
            explanation=data.get("explanation", ""),
            remedy_ids=[r for r in data.get("remedy_ids") or [] if r in REMEDIES],
            remedy_code=[str(c) for c in data.get("remedy_code") or []],
            history=dict(data.get("history") or {}),
            absorbed=[dict(a) for a in data.get("absorbed") or [] if isinstance(a, dict)],
        )


def sort_flags(flags: list[Flag]) -> list[Flag]:
    """Critical first, then by first step (flags without a step last), then rule id."""
    return sorted(
        flags,
        key=lambda f: (
            SEVERITY_RANK[f.severity],
            f.first_step is None,
            f.first_step if f.first_step is not None else 0,
            f.rule,
        ),
    )


def _plain(value):
    """numpy scalars -> Python numbers, non-finite floats -> None, recursively: JSON for browsers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def fmt(value: float, digits: int = 2) -> str:
    """A number for an explanation sentence: 3.2e-05, 0.041, 12.5, 1.2e+04."""
    if value is None or not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-2 or magnitude >= 1e4):
        return f"{value:.{digits - 1}e}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits + 1}g}"


def layer_list(layers: list[str], limit: int = 4) -> str:
    """'fc1, fc2 and fc3' / 'fc1, fc2, fc3 and 5 more'."""
    if not layers:
        return "no layer"
    if len(layers) == 1:
        return layers[0]
    if len(layers) <= limit:
        return ", ".join(layers[:-1]) + " and " + layers[-1]
    return ", ".join(layers[:limit]) + f" and {len(layers) - limit} more"

"""Diagnosis rules that turn a run's statistics into flags. Torch-free (numpy/pandas only).

The same code runs live in the trainer (LiveDiagnoser), in the dashboard and in the CLI
(diagnose_run / format_report). docs/diagnosis.md lists every rule, threshold and source.
"""

from .activations import DeadUnits, SaturatedUnits
from .data import LayerViews, RunData
from .engine import RULE_CLASSES, default_rules, diagnose, expand_absorbed, resolve_rules, skipped_rules
from .flags import REMEDIES, SEVERITIES, Flag, sort_flags
from .generalisation import Overfitting, Underfitting, evaluation_table, overfitting_onset
from .gradients import ExplodingGradient, VanishingGradient
from .learning_rate import LearningRate
from .live import LiveDiagnoser
from .mechanisms import WeightCollapse, ZeroGradients
from .nonfinite import NonFinite
from .report import DiagnosisError, diagnose_run, format_report
from .rule import Rule

__all__ = [
    "DeadUnits", "DiagnosisError", "ExplodingGradient", "Flag", "LayerViews", "LearningRate",
    "LiveDiagnoser", "NonFinite", "Overfitting", "REMEDIES", "RULE_CLASSES", "Rule", "RunData",
    "SEVERITIES", "SaturatedUnits", "Underfitting", "VanishingGradient", "WeightCollapse", "ZeroGradients", "default_rules", "diagnose",
    "diagnose_run", "evaluation_table", "expand_absorbed", "format_report", "overfitting_onset", "resolve_rules",
    "skipped_rules", "sort_flags",
]

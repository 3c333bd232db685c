"""Classification metrics from predicted and true class ids (numpy; no torch)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: examples of true class i predicted as class j."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts


def per_class_f1(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class; 0 for a class never predicted nor present."""
    true_pos = np.diag(confusion).astype(float)
    predicted = confusion.sum(0).astype(float)
    actual = confusion.sum(1).astype(float)
    denominator = predicted + actual
    return np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """accuracy, macro_f1, per-class F1 and the confusion matrix, as plain JSON values."""
    confusion = confusion_matrix(y_true, y_pred, len(class_names))
    f1 = per_class_f1(confusion)
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "macro_f1": float(f1.mean()),
        "f1_per_class": {name: float(v) for name, v in zip(class_names, f1)},
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "n": total,
    }

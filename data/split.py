"""Seeded, stratified train/validation/test splits and subsets, as index arrays."""

from collections.abc import Sequence

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """The (train, validation, test) fractions as floats; raises ValueError unless valid."""
    fractions = tuple(float(fraction) for fraction in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be three positive numbers (train, validation, test) summing to 1, "
            f"got {fractions!r}"
        )
    return fractions


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = DEFAULT_FRACTIONS, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted row indices of the train, validation and test splits.

    Each class is shuffled with the seed and cut by the fractions, so every split keeps the class
    proportions to within one row per class. The same labels and seed give the same split.
    """
    fractions = check_fractions(fractions)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # Cutting at rounded cumulative fractions makes the pieces add up to the class exactly.
        cuts = np.rint(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for part, piece in zip(parts, np.split(members, cuts), strict=True):
            part.append(piece)
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in parts)


def stratified_subset(labels: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of `size` rows whose class proportions follow the whole set's.

    Classes get floor shares first and the leftover rows go to the largest remainders, so the
    subset has exactly `size` rows.
    """
    labels = np.asarray(labels)
    if not 1 <= size <= len(labels):
        raise ValueError(f"subset size must be between 1 and {len(labels)} rows, got {size!r}")
    rng = np.random.default_rng(seed)
    classes, class_sizes = np.unique(labels, return_counts=True)
    shares = class_sizes * size / len(labels)
    quotas = np.floor(shares).astype(int)
    leftover = size - quotas.sum()
    quotas[np.argsort(-(shares - quotas), kind="stable")[:leftover]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:quota]
        for label, quota in zip(classes, quotas, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)

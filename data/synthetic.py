"""Small generated datasets for the gradient demonstrations, shaped like every other dataset.

Two concentric circles are the lesson's vanishing-gradient example (a deep sigmoid network learns
them slowly, a ReLU one quickly); the bar images give the diagnosis evaluation a task a small CNN
learns in seconds. Both return a PreparedDataset with a descriptor marked as generated.
"""

from collections.abc import Sequence

import numpy as np

from gradwatch.data.prepared import (
    GENERATED_SOURCE,
    SYNTHETIC_BAR_IMAGES,
    SYNTHETIC_CIRCLES,
    DatasetDescriptor,
    PreparedDataset,
)
from gradwatch.data.split import DEFAULT_FRACTIONS, SPLIT_NAMES, stratified_split

CIRCLE_CLASSES = ("outer", "inner")
BAR_IMAGE_CLASSES = ("horizontal bars", "vertical bars", "blob")


def make_circles_dataset(
    n_samples: int = 1000,
    *,
    noise: float = 0.1,
    factor: float = 0.5,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> PreparedDataset:
    """Points on two concentric circles (radius 1: class 0, radius `factor`: class 1), with
    Gaussian noise of standard deviation `noise`; X is float32 (n, 2).
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples!r}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor (inner radius / outer radius) must be in (0, 1), got {factor!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % 2
    angles = rng.uniform(0.0, 2.0 * np.pi, n_samples)
    radii = np.where(labels == 0, 1.0, factor)
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    points += rng.normal(0.0, noise, points.shape)
    settings = {"n_samples": n_samples, "noise": noise, "factor": factor, "seed": seed}
    features = points.astype(np.float32)
    return _prepared(features, labels, CIRCLE_CLASSES, SYNTHETIC_CIRCLES, settings, seed, fractions)


def make_bar_images_dataset(
    n_per_class: int = 300,
    *,
    size: int = 16,
    noise: float = 0.2,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> PreparedDataset:
    """1 x size x size float32 images of horizontal bars, vertical bars or one Gaussian blob.

    Bars are 1-3 lines of width 1-2 at random positions and brightness 0.6-1; blobs have a random
    centre and width. Pixel noise of standard deviation `noise` is added to all images.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class!r}")
    if size < 6:
        raise ValueError(f"size must be at least 6 pixels, got {size!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(BAR_IMAGE_CLASSES)), n_per_class)
    drawers = (_horizontal_bars, _vertical_bars, _blob)
    images = np.stack([drawers[label](size, rng) for label in labels])
    images += rng.normal(0.0, noise, images.shape)
    settings = {"n_per_class": n_per_class, "size": size, "noise": noise, "seed": seed}
    return _prepared(
        images[:, None].astype(np.float32),
        labels,
        BAR_IMAGE_CLASSES,
        SYNTHETIC_BAR_IMAGES,
        settings,
        seed,
        fractions,
    )


def _horizontal_bars(size: int, rng: np.random.Generator) -> np.ndarray:
    image = np.zeros((size, size))
    for _ in range(rng.integers(1, 4)):
        row, width = rng.integers(0, size - 1), rng.integers(1, 3)
        image[row : row + width, :] = rng.uniform(0.6, 1.0)
    return image


def _vertical_bars(size: int, rng: np.random.Generator) -> np.ndarray:
    return _horizontal_bars(size, rng).T.copy()


def _blob(size: int, rng: np.random.Generator) -> np.ndarray:
    centre = rng.uniform(size * 0.25, size * 0.75, 2)
    width = rng.uniform(size * 0.08, size * 0.2)
    rows, columns = np.mgrid[0:size, 0:size]
    distance_squared = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2
    return rng.uniform(0.6, 1.0) * np.exp(-distance_squared / (2 * width**2))


def _prepared(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    name: str,
    settings: dict,
    seed: int,
    fractions: Sequence[float],
) -> PreparedDataset:
    labels = labels.astype(np.int64)
    train, validation, test = stratified_split(labels, fractions, seed=seed)
    counts = np.bincount(labels, minlength=len(class_names))
    descriptor = DatasetDescriptor(
        name=name,
        source=GENERATED_SOURCE,
        sha256=None,
        n_rows_raw=len(labels),
        n_duplicates_removed=0,
        n_rows=len(labels),
        class_names=class_names,
        class_counts={cls: int(n) for cls, n in zip(class_names, counts, strict=True)},
        split_counts=dict(zip(SPLIT_NAMES, (len(train), len(validation), len(test)), strict=True)),
        seed=seed,
        generator=settings,
    )
    return PreparedDataset(
        X_train=features[train],
        y_train=labels[train],
        X_val=features[validation],
        y_val=labels[validation],
        X_test=features[test],
        y_test=labels[test],
        class_names=list(class_names),
        descriptor=descriptor,
        preparation={"fractions": list(fractions)},
    )

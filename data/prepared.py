"""What the trainer receives: split arrays plus a descriptor saying exactly which data they are."""

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gradwatch.data.vocab import Vocabulary

TWEETS_CSV = "tweets-csv"
BUILTIN_AIRLINE = "builtin-airline-synthetic"
SYNTHETIC_CIRCLES = "synthetic-circles"
SYNTHETIC_BAR_IMAGES = "synthetic-bar-images"
BUILTIN_SOURCE = "built-in"
GENERATED_SOURCE = "generated"


@dataclass(frozen=True)
class DatasetDescriptor:
    """Identifies the data behind a run; every view of a run shows it, so a stand-in is never
    mistaken for the real Tweets.csv.

    name: "tweets-csv", "builtin-airline-synthetic", "synthetic-circles" or "synthetic-bar-images".
    source: the absolute file path, "built-in" or "generated".
    sha256: of the file's bytes; None for generated data (see `generator` for how it was made).
    n_rows_raw: rows read or generated; n_duplicates_removed: dropped as repeated (tweet_id, text);
    n_rows: rows actually used (after de-duplication and `limit`), which class_counts and
    split_counts describe (split_counts before augmentation).
    """

    name: str
    source: str
    sha256: str | None
    n_rows_raw: int
    n_duplicates_removed: int
    n_rows: int
    class_names: tuple[str, ...]
    class_counts: dict[str, int]
    split_counts: dict[str, int]
    seed: int
    limit: int | None = None
    generator: dict[str, Any] | None = None

    @property
    def is_generated(self) -> bool:
        return self.sha256 is None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for run metadata."""
        values = asdict(self)
        values["class_names"] = list(self.class_names)
        return values

    def summary(self) -> str:
        """One line for a log, a CLI or a dashboard header."""
        origin = f"{self.source}, sha256 {self.sha256[:12]}" if self.sha256 else self.source
        classes = " / ".join(f"{name} {self.class_counts[name]:,}" for name in self.class_names)
        splits = "/".join(f"{count:,}" for count in self.split_counts.values())
        duplicates = ""
        if self.n_duplicates_removed:
            duplicates = f" ({self.n_duplicates_removed:,} duplicates removed)"
        n_unique = self.n_rows_raw - self.n_duplicates_removed
        subset = f", a stratified subset of {n_unique:,}" if self.n_rows < n_unique else ""
        return (
            f"{self.name} ({origin}): {self.n_rows:,} rows{subset}{duplicates}: {classes}; "
            f"train/validation/test {splits}; seed {self.seed}"
        )


@dataclass
class PreparedDataset:
    """Split arrays ready to wrap in tensors: X float32 (or int64 id sequences), y int64 class ids.

    vocab is None for the non-text synthetic sets. preparation records the options used
    (representation, min_freq, ...) so a run's metadata can store them next to the descriptor.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    descriptor: DatasetDescriptor
    vocab: Vocabulary | None = None
    preparation: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (vocabulary size,), (max_len,), (2,) or (1, 16, 16)."""
        return tuple(self.X_train.shape[1:])

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"train": (X, y), "validation": (X, y), "test": (X, y)}."""
        return {
            "train": (self.X_train, self.y_train),
            "validation": (self.X_val, self.y_val),
            "test": (self.X_test, self.y_test),
        }

"""The entry point the trainer calls: source -> clean rows -> splits -> tokens -> arrays."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gradwatch.data.augment import augment_training_set
from gradwatch.data.prepared import DatasetDescriptor, PreparedDataset
from gradwatch.data.source import TweetSource, resolve_source
from gradwatch.data.split import (
    DEFAULT_FRACTIONS,
    SPLIT_NAMES,
    check_fractions,
    stratified_split,
    stratified_subset,
)
from gradwatch.data.text import tokenize_tweets
from gradwatch.data.tweets import LABEL_COLUMN, SENTIMENT_CLASSES, TEXT_COLUMN, deduplicate_tweets
from gradwatch.data.vectorize import documents_to_matrix, documents_to_sequences
from gradwatch.data.vocab import build_vocabulary

# 'bow' is the lesson's name for Keras' 'count' mode.
REPRESENTATIONS = ("bow", "binary", "freq", "tfidf", "sequence")
_MATRIX_MODE = {"bow": "count", "binary": "binary", "freq": "freq", "tfidf": "tfidf"}


@dataclass(frozen=True)
class TextPreparation:
    """How tweets become arrays; checked on creation so a bad option fails before any work.

    seed drives the split, the `limit` subset and augmentation. max_vocab counts <pad> and <unk>.
    Augmentation runs only when both augment_rate and augment_copies are above zero.
    """

    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    min_freq: int = 2
    max_vocab: int | None = 5000
    max_len: int = 40
    stopwords: bool = False
    representation: str = "bow"
    augment_rate: float = 0.0
    augment_copies: int = 0
    limit: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be None or a positive number of rows, got {self.limit!r}")
        if not 0.0 <= self.augment_rate <= 1.0:
            raise ValueError(f"augment_rate must be between 0 and 1, got {self.augment_rate!r}")
        if self.augment_copies < 0:
            raise ValueError(f"augment_copies must be >= 0, got {self.augment_copies!r}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len!r}")

    @property
    def augments(self) -> bool:
        return self.augment_rate > 0 and self.augment_copies > 0


def load_dataset(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    min_freq: int = 2,
    max_vocab: int | None = 5000,
    max_len: int = 40,
    stopwords: bool = False,
    representation: str = "bow",
    augment_rate: float = 0.0,
    augment_copies: int = 0,
    limit: int | None = None,
) -> PreparedDataset:
    """Tweets as model-ready arrays, with a descriptor naming their source.

    path None uses data/Tweets.csv when it exists, else the built-in synthetic dataset (the
    descriptor's name says which); a given path must be a valid Tweets.csv or DatasetError is
    raised. representation: 'bow' counts, 'binary', 'freq', 'tfidf' (dense float32 matrices; see
    data.vectorize for memory) or 'sequence' (int64 ids padded to max_len). Other options: see
    TextPreparation.
    """
    preparation = TextPreparation(
        seed=seed,
        fractions=fractions,
        min_freq=min_freq,
        max_vocab=max_vocab,
        max_len=max_len,
        stopwords=stopwords,
        representation=representation,
        augment_rate=augment_rate,
        augment_copies=augment_copies,
        limit=limit,
    )
    return prepare_dataset(resolve_source(path), preparation)


def prepare_dataset(source: TweetSource, preparation: TextPreparation) -> PreparedDataset:
    """load_dataset for an already chosen source, e.g. data.source.builtin_source()."""
    frame = deduplicate_tweets(source.frame, by_tweet_id=source.has_tweet_ids)
    labels = frame[LABEL_COLUMN].map(SENTIMENT_CLASSES.index).to_numpy(dtype=np.int64)
    n_deduplicated = len(frame)
    if preparation.limit is not None and preparation.limit < len(frame):
        subset = stratified_subset(labels, preparation.limit, seed=preparation.seed)
        frame, labels = frame.iloc[subset].reset_index(drop=True), labels[subset]

    split_rows = stratified_split(labels, preparation.fractions, seed=preparation.seed)
    documents = tokenize_tweets(frame[TEXT_COLUMN], remove_stopwords=preparation.stopwords)
    split_documents = [[documents[row] for row in rows] for rows in split_rows]
    split_labels = [labels[rows] for rows in split_rows]
    vocab = build_vocabulary(
        split_documents[0], min_freq=preparation.min_freq, max_size=preparation.max_vocab
    )
    if preparation.augments:
        split_documents[0], split_labels[0] = augment_training_set(
            split_documents[0],
            split_labels[0],
            rate=preparation.augment_rate,
            copies=preparation.augment_copies,
            seed=preparation.seed,
            insertion_words=vocab.words,
        )
    if preparation.representation == "sequence":
        features = [documents_to_sequences(d, vocab, preparation.max_len) for d in split_documents]
    else:
        mode = _MATRIX_MODE[preparation.representation]
        features = [documents_to_matrix(d, vocab, mode) for d in split_documents]

    descriptor = DatasetDescriptor(
        name=source.name,
        source=source.source,
        sha256=source.sha256,
        n_rows_raw=len(source.frame),
        n_duplicates_removed=len(source.frame) - n_deduplicated,
        n_rows=len(frame),
        class_names=SENTIMENT_CLASSES,
        class_counts=_class_counts(labels),
        split_counts={name: len(rows) for name, rows in zip(SPLIT_NAMES, split_rows, strict=True)},
        seed=preparation.seed,
        limit=preparation.limit,
        generator=source.generator,
    )
    return PreparedDataset(
        X_train=features[0],
        y_train=split_labels[0],
        X_val=features[1],
        y_val=split_labels[1],
        X_test=features[2],
        y_test=split_labels[2],
        class_names=list(SENTIMENT_CLASSES),
        descriptor=descriptor,
        vocab=vocab,
        preparation={
            **asdict(preparation),
            "fractions": list(preparation.fractions),
            "vocab_size": len(vocab),
            "n_train_after_augmentation": len(split_labels[0]),
        },
    )


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(SENTIMENT_CLASSES))
    return {name: int(count) for name, count in zip(SENTIMENT_CLASSES, counts, strict=True)}

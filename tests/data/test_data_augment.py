"""EDA-style augmentation: each operation, determinism, and that only training rows change."""

import numpy as np
import pytest

from gradwatch.data.augment import augment_tokens, augment_training_set
from gradwatch.data.load import TextPreparation, prepare_dataset
from gradwatch.data.source import builtin_source

TWEET = ["<user>", "the", "crew", "was", "not", "helpful", "at", "all", "!"]
WORDS = ["great", "late", "bag"]


def test_deletion_removes_tokens_keeping_order_and_never_empties():
    rng = np.random.default_rng(0)
    shorter = augment_tokens(TWEET, rate=0.5, rng=rng, insertion_words=WORDS, operation="delete")

    assert 0 < len(shorter) < len(TWEET)
    positions = [TWEET.index(token) for token in shorter]
    assert positions == sorted(positions)
    assert augment_tokens(
        ["one"], rate=1.0, rng=rng, insertion_words=WORDS, operation="delete"
    ) == ["one"]


def test_swap_keeps_the_same_tokens_in_another_order():
    swapped = augment_tokens(
        TWEET, rate=0.3, rng=np.random.default_rng(1), insertion_words=WORDS, operation="swap"
    )

    assert sorted(swapped) == sorted(TWEET) and swapped != TWEET


def test_insertion_adds_rate_times_length_vocabulary_words():
    longer = augment_tokens(
        TWEET, rate=0.3, rng=np.random.default_rng(2), insertion_words=WORDS, operation="insert"
    )

    added = list(longer)
    for token in TWEET:
        added.remove(token)
    assert len(added) == round(0.3 * len(TWEET)) and set(added) <= set(WORDS)


def test_rate_zero_changes_nothing_and_bad_options_are_refused():
    rng = np.random.default_rng(0)
    assert augment_tokens(TWEET, rate=0.0, rng=rng, insertion_words=WORDS) == TWEET
    with pytest.raises(ValueError, match="rate must be between 0 and 1"):
        augment_tokens(TWEET, rate=1.5, rng=rng, insertion_words=WORDS)
    with pytest.raises(ValueError, match="operation must be one of"):
        augment_tokens(TWEET, rate=0.0, rng=rng, insertion_words=WORDS, operation="synonym")


def test_training_set_is_originals_then_copies_with_labels_and_is_seeded():
    documents = [TWEET, ["late", "again", "!"]]
    labels = np.array([0, 2])

    augmented, augmented_labels = augment_training_set(
        documents, labels, rate=0.3, copies=3, seed=5, insertion_words=WORDS + ["<url>"]
    )
    again, _ = augment_training_set(
        documents, labels, rate=0.3, copies=3, seed=5, insertion_words=WORDS + ["<url>"]
    )

    assert augmented[:2] == documents
    assert augmented_labels.tolist() == [0, 2] * 4
    assert augmented == again
    assert any(copy != documents[i % 2] for i, copy in enumerate(augmented[2:]))
    assert not any("<url>" in copy for copy in augmented)  # placeholders are never inserted


def test_load_augments_the_training_split_only():
    source = builtin_source(n_rows=600)
    plain = prepare_dataset(source, TextPreparation(limit=300, seed=4))
    augmented = prepare_dataset(
        source, TextPreparation(limit=300, seed=4, augment_rate=0.2, augment_copies=2)
    )

    n_train = len(plain.y_train)
    assert augmented.X_train.shape == (3 * n_train, plain.X_train.shape[1])
    np.testing.assert_array_equal(augmented.X_train[:n_train], plain.X_train)
    np.testing.assert_array_equal(augmented.y_train, np.tile(plain.y_train, 3))
    assert not np.array_equal(augmented.X_train[n_train:], np.tile(plain.X_train, (2, 1)))
    for split in ("X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(augmented, split), getattr(plain, split))
    assert augmented.vocab == plain.vocab
    assert augmented.descriptor.split_counts == plain.descriptor.split_counts
    assert augmented.preparation["n_train_after_augmentation"] == 3 * n_train

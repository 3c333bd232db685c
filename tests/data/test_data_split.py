"""Stratified, seeded splits and subsets."""

import numpy as np
import pytest

from gradwatch.data.split import stratified_split, stratified_subset

# Imbalanced like Tweets.csv: 63% / 21% / 16%
LABELS = np.repeat([0, 1, 2], [630, 210, 160])


def test_splits_partition_the_rows():
    train, validation, test = stratified_split(LABELS, seed=3)

    everything = np.concatenate([train, validation, test])
    assert len(everything) == len(LABELS)
    assert set(everything.tolist()) == set(range(len(LABELS)))
    assert (len(train), len(validation), len(test)) == (700, 150, 150)


def test_every_split_keeps_the_class_proportions_within_one_row_per_class():
    for rows, fraction in zip(
        stratified_split(LABELS, (0.6, 0.25, 0.15), seed=1), (0.6, 0.25, 0.15)
    ):
        class_sizes = np.bincount(LABELS[rows], minlength=3)
        np.testing.assert_allclose(class_sizes, np.array([630, 210, 160]) * fraction, atol=1)


def test_same_seed_same_split_other_seed_other_split():
    first = stratified_split(LABELS, seed=7)
    again = stratified_split(LABELS, seed=7)
    other = stratified_split(LABELS, seed=8)

    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.2), (0.7, 0.2, 0.2), (1.0, 0.0, 0.0), (-0.1, 0.6, 0.5)]
)
def test_invalid_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="three positive numbers"):
        stratified_split(LABELS, fractions)


def test_subset_has_the_exact_size_and_the_class_proportions():
    rows = stratified_subset(LABELS, 101, seed=0)

    assert len(rows) == 101 and len(set(rows.tolist())) == 101
    np.testing.assert_allclose(np.bincount(LABELS[rows]), [63.63, 21.21, 16.16], atol=1)
    assert np.array_equal(rows, stratified_subset(LABELS, 101, seed=0))


def test_subset_size_must_fit():
    with pytest.raises(ValueError, match="between 1 and 1000"):
        stratified_subset(LABELS, 1001)

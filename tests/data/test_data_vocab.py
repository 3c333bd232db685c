"""Vocabulary limits and the vectorisers, checked against slow, obvious reference computations."""

import math

import numpy as np
import pytest

from gradwatch.data.vectorize import documents_to_matrix, documents_to_sequences
from gradwatch.data.vocab import PAD_ID, UNK_ID, build_vocabulary

TRAIN = [
    ["late", "flight", "late", "bag"],
    ["great", "crew", "great", "great"],
    ["flight", "on", "time"],
    ["late", "crew", "!"],
    ["lost", "bag", "bag"],
]
UNSEEN = [["late", "zebra", "crew"], [], ["great", "great", "bag", "qux", "qux"]]


def test_reserved_ids_come_first_then_tokens_by_frequency_ties_alphabetical():
    vocab = build_vocabulary(TRAIN)

    assert vocab.tokens[:2] == ("<pad>", "<unk>")
    assert (PAD_ID, UNK_ID) == (0, 1)
    # bag 4, great 3, late 3, crew 2, flight 2, then the singletons alphabetically
    assert vocab.words == ("bag", "great", "late", "crew", "flight", "!", "lost", "on", "time")
    assert vocab.id_of("bag") == 2
    assert vocab.id_of("never-seen") == UNK_ID


def test_min_freq_drops_rare_tokens_into_unk():
    vocab = build_vocabulary(TRAIN, min_freq=2)

    assert vocab.words == ("bag", "great", "late", "crew", "flight")
    assert vocab.encode(["lost", "bag"]) == [UNK_ID, 2]
    assert vocab.token_counts[UNK_ID] == 4  # on, time, !, lost


def test_max_size_counts_the_reserved_ids():
    vocab = build_vocabulary(TRAIN, max_size=4)

    assert len(vocab) == 4
    assert vocab.words == ("bag", "great")


@pytest.mark.parametrize(("option", "value"), [("min_freq", 0), ("max_size", 2)])
def test_invalid_limits_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        build_vocabulary(TRAIN, **{option: value})


def test_document_counts_count_documents_not_occurrences():
    vocab = build_vocabulary(TRAIN, min_freq=2)

    assert vocab.n_documents == len(TRAIN)
    assert vocab.document_counts[vocab.id_of("great")] == 1
    assert vocab.document_counts[vocab.id_of("bag")] == 2
    assert vocab.document_counts[UNK_ID] == 3  # documents 3, 4 and 5 hold an unknown word
    assert vocab.document_counts[PAD_ID] == 0


def reference_counts(documents, vocab):
    counts = np.zeros((len(documents), len(vocab)))
    for row, document in enumerate(documents):
        for token in document:
            counts[row, vocab.id_of(token)] += 1
    return counts


def reference_tfidf(documents, vocab):
    """Keras' texts_to_matrix(mode='tfidf'), written out cell by cell."""
    counts = reference_counts(documents, vocab)
    expected = np.zeros_like(counts)
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            if counts[row, column] > 0:
                document_count = sum(
                    1 for document in TRAIN if column in {vocab.id_of(t) for t in document}
                )
                tf = 1 + math.log(counts[row, column])
                idf = math.log(1 + len(TRAIN) / (1 + document_count))
                expected[row, column] = tf * idf
    return expected


@pytest.mark.parametrize("documents", [TRAIN, UNSEEN], ids=["train", "unseen"])
def test_matrix_modes_match_reference_computations(documents):
    vocab = build_vocabulary(TRAIN, min_freq=2)
    counts = reference_counts(documents, vocab)
    lengths = np.array([max(len(d), 1) for d in documents])[:, None]

    expected = {
        "count": counts,
        "binary": (counts > 0).astype(float),
        "freq": counts / lengths,
        "tfidf": reference_tfidf(documents, vocab),
    }
    for mode, reference in expected.items():
        matrix = documents_to_matrix(documents, vocab, mode)
        assert matrix.dtype == np.float32, mode
        assert matrix.shape == (len(documents), len(vocab)), mode
        np.testing.assert_allclose(matrix, reference, rtol=1e-6, err_msg=mode)
        assert not matrix[:, PAD_ID].any(), mode


def test_unknown_matrix_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        documents_to_matrix(TRAIN, build_vocabulary(TRAIN), "onehot")


def test_sequences_pad_and_truncate_at_the_front_by_default():
    vocab = build_vocabulary(TRAIN)
    ids = vocab.encode

    sequences = documents_to_sequences([["late", "bag"], ["a", "b", "c", "bag", "crew"]], vocab, 3)

    assert sequences.dtype == np.int64
    assert sequences.tolist() == [[0] + ids(["late", "bag"]), ids(["c", "bag", "crew"])]


def test_sequences_pad_and_truncate_at_the_end_on_request():
    vocab = build_vocabulary(TRAIN)
    ids = vocab.encode
    documents = [["late", "bag"], ["crew", "bag", "lost", "on"], []]

    sequences = documents_to_sequences(documents, vocab, 3, padding="post", truncating="post")

    assert sequences.tolist() == [ids(["late", "bag"]) + [0], ids(["crew", "bag", "lost"]), [0] * 3]

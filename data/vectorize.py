"""Turns token lists into the numpy arrays models take: count matrices or padded id sequences.

Matrices are dense float32, one column per vocabulary id (column 0, <pad>, is always zero, as in
Keras' texts_to_matrix). Memory is rows x vocabulary size x 4 bytes: the full Tweets.csv training
split with the default 5,000-word vocabulary is about 10,000 x 5,000 x 4 B = 200 MB; lower
max_vocab (or use the 'sequence' representation) on small machines.
"""

from collections.abc import Sequence

import numpy as np

from gradwatch.data.vocab import PAD_ID, Vocabulary

MATRIX_MODES = ("binary", "count", "freq", "tfidf")
SIDES = ("pre", "post")


def documents_to_matrix(
    documents: Sequence[Sequence[str]], vocab: Vocabulary, mode: str = "count"
) -> np.ndarray:
    """A (documents, len(vocab)) float32 matrix in one of Keras' texts_to_matrix modes.

    'count': occurrences; 'binary': 1 where present; 'freq': count / tokens in the document;
    'tfidf': (1 + ln count) * ln(1 + n_documents / (1 + document_count)), with document counts
    taken from the training documents the vocabulary was built on.
    """
    if mode not in MATRIX_MODES:
        raise ValueError(f"mode must be one of {MATRIX_MODES}, got {mode!r}")
    counts = _count_matrix(documents, vocab)
    if mode == "count":
        return counts
    if mode == "binary":
        return (counts > 0).astype(np.float32)
    if mode == "freq":
        lengths = np.array([len(document) for document in documents], dtype=np.float32)
        # An empty document has no tokens to share out; its row stays zero instead of 0/0.
        return counts / np.maximum(lengths, 1.0)[:, None]
    idf = np.log1p(vocab.n_documents / (1.0 + vocab.document_counts)).astype(np.float32)
    present = counts > 0
    counts[present] = (1.0 + np.log(counts[present])) * np.broadcast_to(idf, counts.shape)[present]
    return counts


def documents_to_sequences(
    documents: Sequence[Sequence[str]],
    vocab: Vocabulary,
    max_len: int,
    *,
    padding: str = "pre",
    truncating: str = "pre",
) -> np.ndarray:
    """A (documents, max_len) int64 matrix of token ids, padded with <pad> = 0.

    Defaults follow Keras' pad_sequences: pad at the front so a recurrent model's last steps are
    real tokens, and cut long documents at the front (a tweet's start is mostly @handles).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}")
    for name, side in (("padding", padding), ("truncating", truncating)):
        if side not in SIDES:
            raise ValueError(f"{name} must be one of {SIDES}, got {side!r}")
    sequences = np.full((len(documents), max_len), PAD_ID, dtype=np.int64)
    for row, document in enumerate(documents):
        ids = vocab.encode(document)
        ids = ids[-max_len:] if truncating == "pre" else ids[:max_len]
        if not ids:
            continue
        if padding == "pre":
            sequences[row, max_len - len(ids) :] = ids
        else:
            sequences[row, : len(ids)] = ids
    return sequences


def _count_matrix(documents: Sequence[Sequence[str]], vocab: Vocabulary) -> np.ndarray:
    lengths = np.array([len(document) for document in documents], dtype=np.int64)
    rows = np.repeat(np.arange(len(documents), dtype=np.int64), lengths)
    columns = np.fromiter(
        (vocab.id_of(token) for document in documents for token in document), dtype=np.int64
    )
    # Counting unique flat positions avoids a rows x vocabulary integer histogram.
    cells, occurrences = np.unique(rows * len(vocab) + columns, return_counts=True)
    matrix = np.zeros((len(documents), len(vocab)), dtype=np.float32)
    matrix.flat[cells] = occurrences
    return matrix

"""EDA-style text augmentation for the "more data" remedy against overfitting.

Without a thesaurus (nltk's WordNet would need a download) only the three synonym-free operations
of Wei & Zou's EDA are used: random deletion, random swap and random insertion of a word from the
training vocabulary. Augmentation is applied to the training split only - augmented validation or
test rows would measure the augmenter rather than the model.
"""

from collections.abc import Sequence

import numpy as np

from gradwatch.data.text import SPECIAL_TOKENS

OPERATIONS = ("delete", "swap", "insert")


def augment_tokens(
    tokens: Sequence[str],
    *,
    rate: float,
    rng: np.random.Generator,
    insertion_words: Sequence[str],
    operation: str | None = None,
) -> list[str]:
    """One altered copy of a token list, changed by one operation at the given rate.

    rate is the fraction of tokens touched (at least one): 'delete' drops each token with
    probability rate but never all of them; 'swap' exchanges rate * len pairs of positions;
    'insert' puts rate * len words from insertion_words at random positions. With operation None
    one of the three is drawn at random.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
    if operation is None:
        operation = OPERATIONS[rng.integers(len(OPERATIONS))]
    elif operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS} or None, got {operation!r}")
    tokens = list(tokens)
    if rate == 0.0 or not tokens:
        return tokens
    n_changes = max(1, round(rate * len(tokens)))
    if operation == "delete":
        return _random_deletion(tokens, rate, rng)
    if operation == "swap":
        return _random_swap(tokens, n_changes, rng)
    return _random_insertion(tokens, n_changes, rng, insertion_words)


def augment_training_set(
    documents: Sequence[Sequence[str]],
    labels: np.ndarray,
    *,
    rate: float,
    copies: int,
    seed: int,
    insertion_words: Sequence[str],
) -> tuple[list[list[str]], np.ndarray]:
    """The training documents followed by `copies` augmented versions of each, with their labels.

    The originals come first and unchanged, so row i < len(documents) is still example i. Each
    copy of an example draws its own operation; the same seed gives the same output.
    """
    if copies < 0:
        raise ValueError(f"copies must be an integer >= 0, got {copies!r}")
    if len(documents) != len(labels):
        raise ValueError(f"{len(documents)} documents but {len(labels)} labels; they must match")
    rng = np.random.default_rng(seed)
    # Special placeholders inserted at random would fake a mention or a link that was never there.
    words = [word for word in insertion_words if word not in SPECIAL_TOKENS]
    augmented = [list(document) for document in documents]
    for _ in range(copies):
        augmented.extend(
            augment_tokens(document, rate=rate, rng=rng, insertion_words=words)
            for document in documents
        )
    return augmented, np.tile(np.asarray(labels), copies + 1)


def _random_deletion(tokens: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    keep = rng.random(len(tokens)) >= rate
    if not keep.any():
        keep[rng.integers(len(tokens))] = True  # an empty tweet carries no label evidence at all
    return [token for token, kept in zip(tokens, keep, strict=True) if kept]


def _random_swap(tokens: list[str], n_swaps: int, rng: np.random.Generator) -> list[str]:
    if len(tokens) < 2:
        return tokens
    for _ in range(n_swaps):
        i, j = rng.choice(len(tokens), size=2, replace=False)
        tokens[i], tokens[j] = tokens[j], tokens[i]
    return tokens


def _random_insertion(
    tokens: list[str], n_insertions: int, rng: np.random.Generator, words: Sequence[str]
) -> list[str]:
    if not words:
        raise ValueError("insertion needs at least one insertion word; got an empty vocabulary")
    for _ in range(n_insertions):
        tokens.insert(int(rng.integers(len(tokens) + 1)), words[rng.integers(len(words))])
    return tokens

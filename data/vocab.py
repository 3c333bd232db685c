"""The token <-> id mapping, built from the training split only so no test word leaks into it."""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN)


@dataclass(frozen=True)
class Vocabulary:
    """Ids 0 and 1 are <pad> and <unk>; other ids follow training frequency, most frequent first.

    document_counts[i] is how many training documents contain id i (out-of-vocabulary words count
    as <unk>); with n_documents it gives the inverse document frequency for TF-IDF.
    """

    tokens: tuple[str, ...]
    token_counts: tuple[int, ...]
    document_counts: np.ndarray = field(repr=False, compare=False)
    n_documents: int
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def id_of(self, token: str) -> int:
        return self._ids.get(token, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self._ids.get(token, UNK_ID) for token in tokens]

    @property
    def words(self) -> tuple[str, ...]:
        """The learned tokens, without the reserved <pad> and <unk>."""
        return self.tokens[len(RESERVED_TOKENS) :]


def build_vocabulary(
    documents: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int | None = None
) -> Vocabulary:
    """Vocabulary of tokens seen at least min_freq times, capped at max_size ids in all.

    max_size counts the two reserved ids, like Keras' num_words, so it is also the width of the
    bag-of-words matrix. Ties in frequency are broken alphabetically so the result is deterministic.
    """
    if min_freq < 1:
        raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
    if max_size is not None and max_size < len(RESERVED_TOKENS) + 1:
        raise ValueError(
            f"max_size must be None or >= {len(RESERVED_TOKENS) + 1} (it counts <pad> and <unk>), "
            f"got {max_size!r}"
        )
    documents = list(documents)
    counts = Counter(token for document in documents for token in document)
    ranked = sorted(
        (item for item in counts.items() if item[1] >= min_freq and item[0] not in RESERVED_TOKENS),
        key=lambda item: (-item[1], item[0]),
    )
    if max_size is not None:
        ranked = ranked[: max_size - len(RESERVED_TOKENS)]
    kept = {token for token, _ in ranked}
    unknown_count = sum(count for token, count in counts.items() if token not in kept)
    tokens = RESERVED_TOKENS + tuple(token for token, _ in ranked)
    token_counts = (0, unknown_count) + tuple(count for _, count in ranked)

    ids = {token: i for i, token in enumerate(tokens)}
    document_counts = np.zeros(len(tokens), dtype=np.int64)
    for document in documents:
        present = {ids.get(token, UNK_ID) for token in document}
        document_counts[list(present)] += 1
    return Vocabulary(tokens, token_counts, document_counts, len(documents))

"""Options -> the dataset a run trains on (Tweets.csv or built-in tweets, circles, bar images)."""

from __future__ import annotations

from gradwatch.data import PreparedDataset, load_dataset, make_bar_images_dataset, make_circles_dataset

# options.py names the bag-of-words representation 'count' (the lesson's Keras mode); data says 'bow'.
_REPRESENTATION = {"count": "bow", "binary": "binary", "tfidf": "tfidf", "sequence": "sequence"}
CIRCLES_DEFAULT_SAMPLES = 2000
IMAGES_DEFAULT_PER_CLASS = 300


def load_training_data(options: dict) -> PreparedDataset:
    """The data `options` describe; raises data.DatasetError for an unusable Tweets.csv.

    For the synthetic sets, `limit` is the total number of examples and the seed also draws the data.
    `data` (a Tweets.csv path) only applies to dataset tweets.
    """
    dataset, seed, limit = options["dataset"], options["seed"], options["limit"]
    if dataset == "circles":
        return make_circles_dataset(limit or CIRCLES_DEFAULT_SAMPLES, seed=seed)
    if dataset == "images":
        per_class = max(1, limit // 3) if limit else IMAGES_DEFAULT_PER_CLASS
        return make_bar_images_dataset(per_class, seed=seed)
    return load_dataset(
        options["data"],
        seed=seed,
        min_freq=options["min_freq"],
        max_vocab=options["max_vocab"],
        max_len=options["max_len"],
        stopwords=options["stopwords"],
        representation=_REPRESENTATION[options["representation"]],
        augment_rate=options["augment_rate"],
        augment_copies=options["augment_copies"],
        limit=limit,
    )

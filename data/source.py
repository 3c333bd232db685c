"""Where the tweets come from - a Tweets.csv file or the built-in generator - and its identity."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradwatch.data.builtin import (
    DEFAULT_ROWS,
    DEFAULT_SEED,
    generate_builtin_tweets,
    generator_settings,
)
from gradwatch.data.prepared import BUILTIN_AIRLINE, BUILTIN_SOURCE, TWEETS_CSV
from gradwatch.data.tweets import DEFAULT_TWEETS_PATH, read_tweets


@dataclass(frozen=True)
class TweetSource:
    """Validated rows (the loader's columns) plus the facts a DatasetDescriptor reports."""

    frame: pd.DataFrame
    name: str  # "tweets-csv" or "builtin-airline-synthetic"
    source: str  # absolute path or "built-in"
    sha256: str | None
    has_tweet_ids: bool
    generator: dict[str, Any] | None = None


def tweets_file_source(path: str | Path) -> TweetSource:
    """A Tweets.csv file; raises DatasetError if it cannot be used."""
    tweets = read_tweets(path)
    return TweetSource(
        tweets.frame, TWEETS_CSV, str(tweets.path), tweets.sha256, tweets.has_tweet_ids
    )


def builtin_source(n_rows: int = DEFAULT_ROWS, *, seed: int = DEFAULT_SEED) -> TweetSource:
    """The built-in synthetic airline tweets (see data.builtin)."""
    return TweetSource(
        generate_builtin_tweets(n_rows, seed=seed),
        BUILTIN_AIRLINE,
        BUILTIN_SOURCE,
        None,
        has_tweet_ids=True,
        generator=generator_settings(n_rows, seed=seed),
    )


def resolve_source(path: str | Path | None = None) -> TweetSource:
    """The given file; with None, data/Tweets.csv if present, else the built-in dataset.

    A file that exists but is broken raises rather than falling back, so a bad Tweets.csv is
    never silently replaced by synthetic data.
    """
    if path is not None:
        return tweets_file_source(path)
    if DEFAULT_TWEETS_PATH.exists():
        return tweets_file_source(DEFAULT_TWEETS_PATH)
    return builtin_source()

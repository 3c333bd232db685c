"""Reads and checks Kaggle's "Twitter US Airline Sentiment" Tweets.csv and removes its duplicates.

The loader's output is a small, fixed frame (TWEET_COLUMNS) that the built-in dataset reproduces,
so everything downstream works the same on either source.
"""

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gradwatch.data.errors import DatasetError

# The package sits at the project root, so data/Tweets.csv is found wherever the process runs.
DEFAULT_TWEETS_PATH = Path(__file__).resolve().parent / "Tweets.csv"
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
TEXT_COLUMN = "text"
LABEL_COLUMN = "airline_sentiment"
REQUIRED_COLUMNS = (TEXT_COLUMN, LABEL_COLUMN)
TWEET_COLUMNS = ("tweet_id", "airline", TEXT_COLUMN, LABEL_COLUMN)


@dataclass(frozen=True)
class TweetsFile:
    """The validated rows of one CSV file, with what identifies the file."""

    frame: pd.DataFrame  # columns TWEET_COLUMNS, every value a str, labels lower-case
    path: Path
    sha256: str
    has_tweet_ids: bool  # False when the file had no tweet_id column and ids were made up


def read_tweets(path: str | Path) -> TweetsFile:
    """Reads a Tweets.csv-shaped file; raises DatasetError naming the path for any unusable input.

    Only `text` and `airline_sentiment` are required; `tweet_id` and `airline` are kept when
    present. tweet_id stays a string: the 18-digit ids do not survive a float.
    """
    path = Path(path)
    raw = _read_bytes(path)
    frame = _parse_csv(_decode_utf8(raw, path), path)
    _check_columns(frame, path)
    has_tweet_ids = "tweet_id" in frame.columns
    if not has_tweet_ids:
        frame["tweet_id"] = [f"row-{row}" for row in range(1, len(frame) + 1)]
    if "airline" not in frame.columns:
        frame["airline"] = ""
    frame = frame.loc[:, list(TWEET_COLUMNS)].copy()
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].str.strip().str.lower()
    _check_labels(frame, path)
    _check_texts(frame, path)
    return TweetsFile(frame, path.resolve(), hashlib.sha256(raw).hexdigest(), has_tweet_ids)


def deduplicate_tweets(frame: pd.DataFrame, *, by_tweet_id: bool = True) -> pd.DataFrame:
    """The frame without rows that repeat an earlier (tweet_id, text) pair, first one kept.

    Kaggle's file repeats 155 such pairs; left in, copies land on both sides of a split and
    validation accuracy measures memorisation. Without real ids only the text identifies a tweet.
    """
    key = ["tweet_id", TEXT_COLUMN] if by_tweet_id else [TEXT_COLUMN]
    return frame.drop_duplicates(subset=key, keep="first").reset_index(drop=True)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DatasetError(
            f"dataset file not found: {str(path)!r}; give the path of a Tweets.csv file, "
            f"or put one at {str(DEFAULT_TWEETS_PATH)!r}"
        )
    if not path.is_file():
        raise DatasetError(f"dataset path is not a file: {str(path)!r}; give a CSV file's path")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {str(path)!r}: {error.strerror}") from error
    if not raw.strip():
        raise DatasetError(
            f"dataset file is empty: {str(path)!r}; expected a CSV with a header line "
            f"including {', '.join(REQUIRED_COLUMNS)} and one row per tweet"
        )
    return raw


def _decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")  # tolerates the BOM spreadsheet programs write
    except UnicodeDecodeError as error:
        bad_byte = raw[error.start]
        raise DatasetError(
            f"dataset file is not UTF-8 text: {str(path)!r} has byte 0x{bad_byte:02x} at offset "
            f"{error.start}; save it as UTF-8 (Kaggle's Tweets.csv is UTF-8)"
        ) from error


def _parse_csv(text: str, path: Path) -> pd.DataFrame:
    try:
        # All columns as text: no float ids, and a tweet reading "NA" stays a tweet.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DatasetError(f"dataset file is not valid CSV: {str(path)!r}: {reason}") from error
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


COLUMN_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]{0,39}")


def _check_columns(frame: pd.DataFrame, path: Path) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        # Only header cells that look like column names are echoed: a file that is not a CSV (a
        # config, a key file) must not have its first line shown in an error message.
        names = [c for c in frame.columns[:8] if COLUMN_NAME_PATTERN.fullmatch(c)]
        hidden = min(len(frame.columns), 8) - len(names)
        found = ", ".join(names + ([f"{hidden} other(s) not shown"] if hidden else [])) + \
            (", ..." if len(frame.columns) > 8 else "")
        raise DatasetError(
            f"dataset file {str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}; found: {found}"
        )
    if frame.empty:
        raise DatasetError(
            f"dataset file {str(path)!r} has a header but no data rows; expected one row per tweet"
        )


def _check_labels(frame: pd.DataFrame, path: Path) -> None:
    labels = frame[LABEL_COLUMN]
    unknown = labels[~labels.isin(SENTIMENT_CLASSES)]
    if not unknown.empty:
        first_row = int(unknown.index[0]) + 1
        values = ", ".join(repr(value) for value in unknown.value_counts().index[:5])
        raise DatasetError(
            f"dataset file {str(path)!r} has {len(unknown)} row(s) with unknown "
            f"{LABEL_COLUMN} {values} (first at data row {first_row}); "
            f"valid labels: {', '.join(SENTIMENT_CLASSES)}"
        )


def _check_texts(frame: pd.DataFrame, path: Path) -> None:
    empty = frame[frame[TEXT_COLUMN].str.strip() == ""]
    if not empty.empty:
        raise DatasetError(
            f"dataset file {str(path)!r} has {len(empty)} row(s) with empty {TEXT_COLUMN} "
            f"(first at data row {int(empty.index[0]) + 1}); every row needs the tweet's text"
        )

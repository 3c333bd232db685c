"""Tweets.csv loading: validation errors for each bad input, ids, quoting, de-duplication."""

import csv
from pathlib import Path

import pytest

from gradwatch.data.errors import DatasetError
from gradwatch.data.tweets import DEFAULT_TWEETS_PATH, deduplicate_tweets, read_tweets

# The real file sits in shared/ beside the checkout (the CI copy too); /work/shared is where
# the developers' machines keep it.
REAL_TWEETS = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "data" / "Tweets.csv",
               Path("/work/shared/data/Tweets.csv")) if p.exists()),
    Path("/work/shared/data/Tweets.csv"),
)
HEADER = ["tweet_id", "airline_sentiment", "airline", "text"]


def write_csv(path: Path, rows, header=HEADER, encoding="utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def small_tweets(path: Path) -> Path:
    """A Tweets.csv look-alike: 8 rows, 2 repeat an earlier (tweet_id, text) pair."""
    rows = [
        ["570306133677760513", "neutral", "Virgin America", "@VirginAmerica What @dhepburn said."],
        ["570301130888122368", "positive", "Virgin America", "@VirginAmerica plus you've added"],
        ["570301083672813571", "negative", "United", "@united line one\nline two &amp; more"],
        ["570306133677760513", "neutral", "Virgin America", "@VirginAmerica What @dhepburn said."],
        ["570301031407624196", "negative", "Delta", "@JetBlue it's really aggressive"],
        ["570301031407624196", "negative", "Delta", "@JetBlue a different text, same id"],
        ["570300817074462722", "positive", "United", "@united thanks!"],
        ["570301083672813571", "negative", "United", "@united line one\nline two &amp; more"],
    ]
    return write_csv(path / "Tweets.csv", rows)


# (how to get the file, rows in it, rows repeating an earlier (tweet_id, text) pair)
SOURCES = [pytest.param(lambda tmp: small_tweets(tmp), 8, 2, id="written-csv")]
if REAL_TWEETS.exists():
    SOURCES.append(pytest.param(lambda tmp: REAL_TWEETS, 14640, 155, id="kaggle-tweets-csv"))


@pytest.mark.parametrize(("make_file", "n_rows", "n_repeats"), SOURCES)
def test_reads_every_row_and_removes_repeated_id_text_pairs(tmp_path, make_file, n_rows, n_repeats):
    tweets = read_tweets(make_file(tmp_path))

    unique = deduplicate_tweets(tweets.frame)

    assert len(tweets.frame) == n_rows
    assert len(tweets.frame) - len(unique) == n_repeats
    assert not unique.duplicated(["tweet_id", "text"]).any()
    assert list(tweets.frame.columns) == ["tweet_id", "airline", "text", "airline_sentiment"]


@pytest.mark.parametrize(("make_file", "n_rows", "n_repeats"), SOURCES)
def test_tweet_ids_keep_all_18_digits_and_quoted_newlines_stay_in_text(
    tmp_path, make_file, n_rows, n_repeats
):
    frame = read_tweets(make_file(tmp_path)).frame

    assert frame["tweet_id"].iloc[0] == "570306133677760513"
    assert frame["tweet_id"].str.fullmatch(r"\d{18}").all()
    assert frame["text"].str.contains("\n").sum() >= 1
    assert set(frame["airline_sentiment"]) <= {"negative", "neutral", "positive"}


def test_a_file_without_ids_is_deduplicated_by_text_alone(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        [["a", "negative"], ["b", "neutral"], ["a", "negative"]],
        header=["text", "airline_sentiment"],
    )
    tweets = read_tweets(path)

    assert not tweets.has_tweet_ids
    assert len(deduplicate_tweets(tweets.frame, by_tweet_id=False)) == 2


def test_sha256_and_path_identify_the_file(tmp_path):
    import hashlib

    path = small_tweets(tmp_path)
    tweets = read_tweets(path)

    assert tweets.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tweets.path == path.resolve()


def test_labels_are_accepted_whatever_their_case_and_spacing(tmp_path):
    path = write_csv(tmp_path / "t.csv", [["1", " Negative ", "United", "late again"]])

    assert read_tweets(path).frame["airline_sentiment"].tolist() == ["negative"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", [["1", "positive", "Delta", "merci ✈️"]], encoding="utf-8-sig"
    )

    assert read_tweets(path).frame["tweet_id"].tolist() == ["1"]


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bad file, words its error message must contain)."""
    latin1 = tmp / "latin1.csv"
    latin1.write_bytes(
        "tweet_id,airline_sentiment,text\n1,negative,caf\xe9 closed\n".encode("latin-1")
    )
    empty = tmp / "empty.csv"
    empty.write_bytes(b"")
    blank = tmp / "blank.csv"
    blank.write_text("\n\n  \n", encoding="utf-8")
    broken_quotes = tmp / "broken.csv"
    broken_quotes.write_text('text,airline_sentiment\n"never closed,negative\n', encoding="utf-8")
    return {
        "missing": (tmp / "nowhere" / "Tweets.csv", "not found"),
        "directory": (tmp, "not a file"),
        "empty": (empty, "empty"),
        "blank": (blank, "empty"),
        "header only": (write_csv(tmp / "header.csv", []), "no data rows"),
        "no text column": (
            write_csv(
                tmp / "notext.csv", [["1", "negative"]], header=["tweet_id", "airline_sentiment"]
            ),
            "lacks column(s) text",
        ),
        "no label column": (
            write_csv(tmp / "nolabel.csv", [["1", "hi"]], header=["tweet_id", "text"]),
            "lacks column(s) airline_sentiment",
        ),
        "unknown label": (
            write_csv(
                tmp / "label.csv", [["1", "positive", "x", "ok"], ["2", "angry", "x", "grr"]]
            ),
            "unknown airline_sentiment 'angry'",
        ),
        "empty text": (
            write_csv(tmp / "notweet.csv", [["1", "positive", "x", "  "]]),
            "empty text",
        ),
        "not utf-8": (latin1, "not UTF-8"),
        "broken quoting": (broken_quotes, "not valid CSV"),
    }


BAD_FILE_NAMES = [
    "missing",
    "directory",
    "empty",
    "blank",
    "header only",
    "no text column",
    "no label column",
    "unknown label",
    "empty text",
    "not utf-8",
    "broken quoting",
]


@pytest.mark.parametrize("case", BAD_FILE_NAMES)
def test_each_bad_file_raises_one_line_dataset_error_naming_problem_and_path(tmp_path, case):
    path, problem = _bad_files(tmp_path)[case]

    with pytest.raises(DatasetError) as raised:
        read_tweets(path)

    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "\n" not in message
    assert problem in message
    assert str(path) in message


def test_errors_say_what_would_be_valid(tmp_path):
    path, _ = _bad_files(tmp_path)["unknown label"]
    with pytest.raises(DatasetError, match="valid labels: negative, neutral, positive"):
        read_tweets(path)
    path, _ = _bad_files(tmp_path)["no text column"]
    with pytest.raises(DatasetError, match="required: text, airline_sentiment; found: tweet_id"):
        read_tweets(path)
    path, _ = _bad_files(tmp_path)["not utf-8"]
    with pytest.raises(DatasetError, match="byte 0xe9 at offset 46; save it as UTF-8"):
        read_tweets(path)


def test_default_path_is_data_tweets_csv_at_the_project_root():
    project_root = Path(__file__).resolve().parents[2]

    assert DEFAULT_TWEETS_PATH == project_root / "data" / "Tweets.csv"

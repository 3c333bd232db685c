"""load_dataset: source choice, representations, determinism, limit and the descriptor."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from gradwatch.data import DatasetError, load_dataset
from gradwatch.data import source as data_source
from gradwatch.data.load import TextPreparation, prepare_dataset
from gradwatch.data.source import builtin_source

# The real file sits in shared/ beside the checkout (the CI copy too); /work/shared is where
# the developers' machines keep it.
REAL_TWEETS = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "data" / "Tweets.csv",
               Path("/work/shared/data/Tweets.csv")) if p.exists()),
    Path("/work/shared/data/Tweets.csv"),
)


@pytest.fixture(scope="module")
def builtin():
    return builtin_source(n_rows=900)


def write_tweets(path: Path, n_per_class: int = 20) -> Path:
    words = {"negative": "late rude awful", "neutral": "when gate time", "positive": "great thanks"}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "airline_sentiment", "text"])
        for i in range(n_per_class):
            for j, (label, text) in enumerate(words.items()):
                row = 3 * i + j
                writer.writerow([str(570306133677760513 + row), label, f"@united {text} w{row}"])
        writer.writerow([str(570306133677760513), "negative", "@united late rude awful w0"])
    return path


def test_no_path_and_no_default_file_gives_the_labelled_builtin_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(data_source, "DEFAULT_TWEETS_PATH", tmp_path / "Tweets.csv")

    prepared = load_dataset(limit=150)

    descriptor = prepared.descriptor
    assert descriptor.name == "builtin-airline-synthetic"
    assert descriptor.source == "built-in" and descriptor.sha256 is None
    assert descriptor.generator["seed"] == 2015 and descriptor.generator["n_rows"] == 6000
    assert descriptor.n_rows_raw == 6000 and descriptor.n_rows == 150
    assert "builtin-airline-synthetic (built-in)" in descriptor.summary()


def test_no_path_uses_the_default_file_when_present(tmp_path, monkeypatch):
    default = write_tweets(tmp_path / "Tweets.csv")
    monkeypatch.setattr(data_source, "DEFAULT_TWEETS_PATH", default)

    descriptor = load_dataset(min_freq=1).descriptor

    assert descriptor.name == "tweets-csv" and descriptor.source == str(default)
    assert descriptor.n_rows_raw == 61 and descriptor.n_duplicates_removed == 1


def test_a_broken_default_file_raises_instead_of_falling_back(tmp_path, monkeypatch):
    default = tmp_path / "Tweets.csv"
    default.write_text("tweet_id,text\n1,hello\n", encoding="utf-8")
    monkeypatch.setattr(data_source, "DEFAULT_TWEETS_PATH", default)

    with pytest.raises(DatasetError, match="lacks column"):
        load_dataset()


def test_a_given_path_that_does_not_exist_raises(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing.csv")


def test_descriptor_counts_and_json_form(tmp_path):
    path = write_tweets(tmp_path / "t.csv")

    descriptor = load_dataset(path, min_freq=1, seed=2).descriptor

    assert descriptor.class_counts == {"negative": 20, "neutral": 20, "positive": 20}
    assert descriptor.split_counts == {"train": 42, "validation": 9, "test": 9}
    assert len(descriptor.sha256) == 64 and descriptor.seed == 2
    as_json = json.loads(json.dumps(descriptor.as_dict()))
    assert as_json["name"] == "tweets-csv" and as_json["class_names"][0] == "negative"
    assert "\n" not in descriptor.summary()


@pytest.mark.parametrize(
    ("representation", "dtype"),
    [("bow", np.float32), ("binary", np.float32), ("freq", np.float32), ("tfidf", np.float32)],
)
def test_matrix_representations_are_float32_one_column_per_vocabulary_id(
    builtin, representation, dtype
):
    prepared = prepare_dataset(
        builtin, TextPreparation(representation=representation, max_vocab=300, limit=300)
    )

    assert prepared.X_train.dtype == dtype
    assert prepared.input_shape == (len(prepared.vocab),) and len(prepared.vocab) <= 300
    assert prepared.y_train.dtype == np.int64 and prepared.n_classes == 3
    assert prepared.X_val.shape[1] == prepared.X_test.shape[1] == len(prepared.vocab)


def test_sequence_representation_is_int64_ids_of_max_len(builtin):
    prepared = prepare_dataset(builtin, TextPreparation(representation="sequence", max_len=12))

    assert prepared.X_train.dtype == np.int64 and prepared.input_shape == (12,)
    assert prepared.X_train.max() < len(prepared.vocab) and prepared.X_val.min() >= 0
    assert prepared.preparation["max_len"] == 12


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    path = write_tweets(tmp_path / "t.csv")

    prepared = load_dataset(path, min_freq=1)

    # Every tweet ends in a word of its own, so each validation and test tweet has one unknown
    # word, and every vocabulary word occurs in the training matrix.
    assert prepared.vocab.n_documents == len(prepared.y_train)
    assert (prepared.X_val[:, 1] == 1).all() and (prepared.X_test[:, 1] == 1).all()
    assert (prepared.X_train[:, 2:].sum(axis=0) > 0).all()
    assert not prepared.X_train[:, 1].any()


def test_same_seed_same_arrays_other_seed_other_split(builtin):
    first = prepare_dataset(builtin, TextPreparation(seed=1, limit=200))
    again = prepare_dataset(builtin, TextPreparation(seed=1, limit=200))
    other = prepare_dataset(builtin, TextPreparation(seed=2, limit=200))

    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.y_train, other.y_train)


def test_limit_takes_a_stratified_subset_before_splitting(builtin):
    prepared = prepare_dataset(builtin, TextPreparation(limit=90))

    assert len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test) == 90
    assert prepared.descriptor.n_rows == 90 and prepared.descriptor.limit == 90
    assert sorted(prepared.descriptor.class_counts.values()) in ([30, 30, 30], [29, 30, 31])


def test_stopword_option_shrinks_the_vocabulary(builtin):
    kept = prepare_dataset(builtin, TextPreparation(min_freq=1))
    removed = prepare_dataset(builtin, TextPreparation(min_freq=1, stopwords=True))

    assert "the" in kept.vocab and "the" not in removed.vocab
    assert "not" in removed.vocab


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("representation", "onehot", "representation must be one of"),
        ("limit", 0, "limit must be None or a positive"),
        ("fractions", (0.5, 0.5), "three positive numbers"),
        ("augment_rate", 2.0, "augment_rate"),
    ],
)
def test_invalid_options_fail_before_reading_anything(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(tmp_path / "missing.csv", **{option: value})


# The real file adds ~4 s of tokenising; it is covered when present and replaced when not.
REAL_OR_WRITTEN = [
    pytest.param(lambda tmp: (REAL_TWEETS, 14485, 155), id="kaggle-tweets-csv")
    if REAL_TWEETS.exists()
    else pytest.param(lambda tmp: (write_tweets(tmp / "t.csv"), 60, 1), id="written-csv")
]


@pytest.mark.parametrize("make_file", REAL_OR_WRITTEN)
def test_loading_a_tweets_file_end_to_end(tmp_path, make_file):
    path, n_unique, n_repeats = make_file(tmp_path)

    prepared = load_dataset(path, representation="sequence", min_freq=1, seed=0)

    descriptor = prepared.descriptor
    assert descriptor.n_rows == n_unique and descriptor.n_duplicates_removed == n_repeats
    assert sum(descriptor.split_counts.values()) == n_unique
    assert len(prepared.y_train) == descriptor.split_counts["train"]
    shares = np.bincount(prepared.y_val, minlength=3) / len(prepared.y_val)
    overall = np.array(list(descriptor.class_counts.values())) / n_unique
    np.testing.assert_allclose(shares, overall, atol=0.02)

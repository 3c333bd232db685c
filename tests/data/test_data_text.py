"""Tweet tokenization and the project stopword list."""

import pytest

from gradwatch.data.stopwords import ENGLISH_STOPWORDS, NEGATIONS, is_negation
from gradwatch.data.text import tokenize_tweet, tokenize_tweets


def test_lower_cases_and_replaces_handles_and_links():
    tokens = tokenize_tweet("@United Flight DELAYED see http://t.co/AbC123 and www.united.com")

    assert tokens == ["<user>", "flight", "delayed", "see", "<url>", "and", "<url>"]


def test_an_email_address_is_not_a_handle():
    assert "<user>" not in tokenize_tweet("write to help@united.com")


def test_html_entities_are_unescaped():
    assert tokenize_tweet("bags &amp; seats &lt;3 &gt;:(") == ["bags", "&", "seats", "<3", ">:("]


def test_contractions_and_emoticons_stay_whole():
    tokens = tokenize_tweet("I can't fly :D #fail")

    assert tokens == ["i", "can't", "fly", ":D", "#fail"]


def test_typographic_apostrophes_become_plain_so_negations_match():
    assert tokenize_tweet("I don\u2019t care") == ["i", "don't", "care"]


def test_letter_runs_are_capped_at_three():
    assert tokenize_tweet("sooooo goooood") == ["sooo", "goood"]


def test_stopword_removal_keeps_negations_and_sentiment_words():
    text = "@united I did not get my bag and it isn't there, nor is it never coming? No thanks"

    tokens = tokenize_tweet(text, remove_stopwords=True)

    assert tokens == [
        "<user>",
        "not",
        "get",
        "bag",
        "isn't",
        ",",
        "nor",
        "never",
        "coming",
        "?",
        "no",
        "thanks",
    ]


def test_stopwords_are_kept_unless_asked():
    assert "the" in tokenize_tweet("the flight")
    assert "the" not in tokenize_tweet("the flight", remove_stopwords=True)


@pytest.mark.parametrize(
    "negation", ["not", "no", "nor", "never", "don't", "didn't", "can't", "dont"]
)
def test_the_stopword_list_holds_no_negation(negation):
    assert negation not in ENGLISH_STOPWORDS
    assert is_negation(negation)


def test_stopword_and_negation_lists_are_disjoint_and_substantial():
    # A stopword list that swallowed a negation would silently invert sentiment features.
    assert not ENGLISH_STOPWORDS & NEGATIONS
    assert {"the", "a", "is", "i", "you", "to", "of"} <= ENGLISH_STOPWORDS
    assert len(ENGLISH_STOPWORDS) > 100


def test_tokenize_tweets_keeps_order():
    assert tokenize_tweets(["a b", "c"]) == [["a", "b"], ["c"]]


def test_nltk_needs_no_download(monkeypatch):
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("nltk.download must never be called")

    monkeypatch.setattr(nltk, "download", refuse)
    assert tokenize_tweet("@delta ok", remove_stopwords=True) == ["<user>", "ok"]

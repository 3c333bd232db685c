"""Turns raw tweet text into lists of tokens for the vocabulary and the augmenter.

Uses nltk's TweetTokenizer, which needs no downloaded corpus: emoticons (":)"), hashtags and
contractions ("can't") stay whole, which matters for sentiment.
"""

import html
import re
from collections.abc import Iterable

from nltk.tokenize import TweetTokenizer

from gradwatch.data.stopwords import ENGLISH_STOPWORDS

USER_TOKEN = "<user>"
URL_TOKEN = "<url>"
SPECIAL_TOKENS = frozenset({USER_TOKEN, URL_TOKEN})

# reduce_len caps letter runs at three ("sooooo" -> "sooo"): elongations share one vocabulary id.
_TOKENIZER = TweetTokenizer(preserve_case=False, reduce_len=True, strip_handles=False)
_URL = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)
# Typographic apostrophes would make "can’t" a different word from "can't" and hide the negation.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def tokenize_tweet(text: str, *, remove_stopwords: bool = False) -> list[str]:
    """Lower-cased tokens of one tweet, with @handles as <user> and links as <url>.

    HTML entities are unescaped first ("&amp;" -> "&"). With remove_stopwords, words in the
    project's ENGLISH_STOPWORDS are dropped; negations are never in that list.
    """
    # The tokenizer unescapes entities too, but only after the apostrophe fix would have run.
    plain = html.unescape(text).translate(_APOSTROPHES)
    tokens = [_normalise_token(token) for token in _TOKENIZER.tokenize(plain)]
    if remove_stopwords:
        tokens = [token for token in tokens if token not in ENGLISH_STOPWORDS]
    return tokens


def tokenize_tweets(texts: Iterable[str], *, remove_stopwords: bool = False) -> list[list[str]]:
    """tokenize_tweet applied to each text, in order."""
    return [tokenize_tweet(text, remove_stopwords=remove_stopwords) for text in texts]


def _normalise_token(token: str) -> str:
    # Handles and links are nearly unique per tweet: as words they would only teach memorisation.
    if token.startswith("@") and len(token) > 1:
        return USER_TOKEN
    if _URL.match(token):
        return URL_TOKEN
    return token  # lower-cased by the tokenizer, which keeps emoticons such as ":D" as typed

"""The built-in stand-in for Tweets.csv: seeded, template-made airline tweets in three classes.

Used when no Tweets.csv is available, so the project runs (and its tests pass) anywhere. It is
made to show the lesson's point: templates share most of their words across classes, some tweets
read like another class (sarcasm, mixed feelings), a share of labels is flipped at random, and
rare slot fillers (flight numbers, cities, times) let a large network memorise the noise - so an
unregularised MLP overfits while a regularised model still generalises well above chance.
Its descriptor always says "builtin-airline-synthetic"; nothing here pretends to be real data.
"""

import numpy as np
import pandas as pd

from gradwatch.data.tweets import LABEL_COLUMN, SENTIMENT_CLASSES, TEXT_COLUMN, TWEET_COLUMNS

# Bump when templates or sampling change: the same seed then gives different tweets.
GENERATOR_VERSION = 1
DEFAULT_ROWS = 6000
DEFAULT_SEED = 2015
DEFAULT_LABEL_NOISE = 0.12
DEFAULT_AMBIGUITY = 0.10

AIRLINES = {
    "@united": "United",
    "@AmericanAir": "American",
    "@SouthwestAir": "Southwest",
    "@JetBlue": "Delta",  # Kaggle's file lists JetBlue tweets under "Delta"
    "@USAirways": "US Airways",
    "@VirginAmerica": "Virgin America",
}

# Phrase tables read better as paragraphs than one phrase per line.
# fmt: off
SLOTS = {
    "subject": (
        "my flight", "the flight", "the crew", "the gate agent", "the pilot", "customer service",
        "the app", "the website", "the wifi", "my bag", "my luggage", "the seat", "the upgrade",
        "the lounge", "the boarding process", "the rebooking", "the connection", "the snacks",
        "the check in", "the flight attendant", "the phone line", "the refund", "the legroom",
        "the entertainment", "my reservation", "the hold music", "the baggage claim",
    ),
    "city": (
        "Boston", "Denver", "Chicago", "LAX", "JFK", "Dallas", "Newark", "Phoenix", "Seattle",
        "Atlanta", "Charlotte", "Philly", "DCA", "SFO", "Vegas", "Austin", "Nashville", "Miami",
        "Houston", "Orlando", "Portland", "Detroit", "Tampa", "San Diego",
    ),
    "negative_adjective": (
        "terrible", "awful", "rude", "broken", "useless", "horrible", "slow", "ridiculous",
        "unacceptable", "dirty", "the worst", "a joke", "a disaster", "pathetic", "disappointing",
    ),
    "positive_adjective": (
        "great", "amazing", "awesome", "friendly", "smooth", "excellent", "helpful", "perfect",
        "wonderful", "comfortable", "the best", "fantastic", "so nice", "top notch", "impressive",
    ),
    "negative_event": (
        "delayed", "cancelled", "lost", "overbooked", "stuck on the tarmac", "missed",
        "rebooked twice", "on hold for hours", "left behind", "charged again",
    ),
    "time": ("today", "tonight", "this morning", "yesterday", "tomorrow", "this weekend", "again"),
    "people": ("my family", "my kids", "my wife", "my husband", "my team", "my mom", "a friend"),
}

TEMPLATES = {
    "negative": (
        "{subject} was {negative_adjective}",
        "{subject} is {negative_adjective} {time}",
        "flight {number} {negative_event} {time} and {subject} was {negative_adjective}",
        "still waiting on {subject} after {hours} hours",
        "why is {subject} always so {negative_adjective}",
        "{subject} was not {positive_adjective} at all",
        "never flying with you again, {subject} was {negative_adjective}",
        "my flight to {city} got {negative_event} {time}",
        "no one can help with {subject}, {hours} hours now",
        "thanks for nothing, {subject} was {negative_adjective}",
        "{negative_event} in {city} with {people} and {subject} is {negative_adjective}",
        "can't believe {subject} {time}, {negative_adjective}",
    ),
    "neutral": (
        "is flight {number} to {city} on time {time}",
        "what is the policy for {subject}",
        "can I change my flight to {city} {time}",
        "does flight {number} have wifi",
        "how do I check {subject} online",
        "flying to {city} {time} with {people}",
        "any update on flight {number} from {city}",
        "do I need to print {subject} for {city}",
        "where do I find {subject} at {city}",
        "is there a way to add {people} to my reservation",
        "what time does boarding start for flight {number}",
        "will {subject} be open in {city} {time}",
    ),
    "positive": (
        "{subject} was {positive_adjective}",
        "thanks for {subject}, {positive_adjective} {time}",
        "love {subject}, {positive_adjective}",
        "{subject} was not {negative_adjective} at all, {positive_adjective}",
        "great job on flight {number} to {city}",
        "{subject} made my day {time}",
        "shoutout to {subject} in {city}, {positive_adjective}",
        "thank you for getting {people} to {city} {time}",
        "{subject} on flight {number} was {positive_adjective}",
        "best flight ever with {people}, {subject} was {positive_adjective}",
        "you guys rock, {subject} was {positive_adjective}",
        "finally home in {city}, {subject} was {positive_adjective} thanks",
    ),
}

# Shared asides carry no label information; they make texts longer and more varied.
ASIDES = (
    "", "", "", "#travel", "on my way to {city}", "flight {number}", "with {people}", "{time}",
    "first time flying", "#{city}", "from {city}", "at gate {gate}",
)
# Endings lean towards a class but are often "wrong", like real punctuation and emoticons.
ENDINGS = {
    "negative": ("", "!", "!!", " :(", " #fail", "?"),
    "neutral": ("", "?", "??", ".", " thanks", "!"),
    "positive": ("", "!", "!!", " :)", " <3", "."),
}
# fmt: on


def generate_builtin_tweets(
    n_rows: int = DEFAULT_ROWS,
    *,
    seed: int = DEFAULT_SEED,
    label_noise: float = DEFAULT_LABEL_NOISE,
    ambiguity: float = DEFAULT_AMBIGUITY,
) -> pd.DataFrame:
    """A frame with the loader's columns (tweet_id, airline, text, airline_sentiment).

    Classes are balanced before noise: row i is written as class i mod 3. `ambiguity` is the
    share of tweets written with another class's template (the label stays); `label_noise` is
    the share whose label is then replaced by a different class drawn at random.
    """
    if n_rows < len(SENTIMENT_CLASSES):
        raise ValueError(f"n_rows must be at least {len(SENTIMENT_CLASSES)}, got {n_rows!r}")
    for name, share in (("label_noise", label_noise), ("ambiguity", ambiguity)):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {share!r}")
    rng = np.random.default_rng(seed)
    n_classes = len(SENTIMENT_CLASSES)
    written_as = rng.permutation(np.arange(n_rows) % n_classes)
    looks_like = np.where(
        rng.random(n_rows) < ambiguity,
        (written_as + rng.integers(1, n_classes, n_rows)) % n_classes,
        written_as,
    )
    labels = np.where(
        rng.random(n_rows) < label_noise,
        (written_as + rng.integers(1, n_classes, n_rows)) % n_classes,
        written_as,
    )
    handles = list(AIRLINES)
    handle_ids = rng.integers(len(handles), size=n_rows)
    texts = [
        _write_tweet(handles[handle], SENTIMENT_CLASSES[style], rng)
        for handle, style in zip(handle_ids, looks_like, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "tweet_id": [str(900_000_000_000_000_000 + row) for row in range(n_rows)],
            "airline": [AIRLINES[handles[handle]] for handle in handle_ids],
            TEXT_COLUMN: texts,
            LABEL_COLUMN: [SENTIMENT_CLASSES[label] for label in labels],
        }
    )
    return frame.loc[:, list(TWEET_COLUMNS)]


def generator_settings(
    n_rows: int = DEFAULT_ROWS,
    *,
    seed: int = DEFAULT_SEED,
    label_noise: float = DEFAULT_LABEL_NOISE,
    ambiguity: float = DEFAULT_AMBIGUITY,
) -> dict:
    """The values that reproduce a built-in dataset, for its descriptor."""
    return {
        "version": GENERATOR_VERSION,
        "n_rows": n_rows,
        "seed": seed,
        "label_noise": label_noise,
        "ambiguity": ambiguity,
    }


def _write_tweet(handle: str, style: str, rng: np.random.Generator) -> str:
    templates = TEMPLATES[style]
    clause = _fill(templates[rng.integers(len(templates))], rng)
    aside = _fill(ASIDES[rng.integers(len(ASIDES))], rng)
    endings = ENDINGS[style] if rng.random() < 0.6 else ENDINGS[SENTIMENT_CLASSES[rng.integers(3)]]
    ending = endings[rng.integers(len(endings))]
    parts = [handle, aside, clause] if rng.random() < 0.3 else [handle, clause, aside]
    return " ".join(part for part in parts if part) + ending


def _fill(template: str, rng: np.random.Generator) -> str:
    values = {slot: options[rng.integers(len(options))] for slot, options in SLOTS.items()}
    values["number"] = str(int(rng.integers(100, 3000)))
    values["hours"] = str(int(rng.integers(2, 9)))
    values["gate"] = f"{'ABCDE'[rng.integers(5)]}{int(rng.integers(1, 40))}"
    return template.format(**values)

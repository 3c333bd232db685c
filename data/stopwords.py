"""The project's own English stopword list, which keeps every negation.

Owned here rather than taken from nltk's corpus so that runs are reproducible offline and so that
negations - the strongest sentiment cue in short complaints ("not helpful", "didn't arrive") - are
never thrown away.
"""

# Word lists read better as paragraphs than one word per line.
# fmt: off
# Words that flip or deny what follows; removing them turns "not great" into "great".
NEGATIONS = frozenset(
    {
        "not", "no", "nor", "never", "none", "nobody", "nothing", "nowhere", "neither", "cannot",
        "ain't", "aren't", "can't", "couldn't", "didn't", "doesn't", "don't", "hadn't", "hasn't",
        "haven't", "isn't", "mightn't", "mustn't", "needn't", "shan't", "shouldn't", "wasn't",
        "weren't", "won't", "wouldn't",
        # Tweets often drop the apostrophe.
        "aint", "arent", "cant", "couldnt", "didnt", "doesnt", "dont", "hadnt", "hasnt", "havent",
        "isnt", "shouldnt", "wasnt", "werent", "wont", "wouldnt",
    }
)

ENGLISH_STOPWORDS = frozenset(
    {
        # articles, determiners, quantifiers
        "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "both",
        "all", "few", "more", "most", "other", "such", "own", "same", "so", "than", "too", "very",
        "just", "only", "also",
        # pronouns and possessives
        "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours",
        "yourself", "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself",
        "it", "its", "itself", "they", "them", "their", "theirs", "themselves", "what", "which",
        "who", "whom", "whose",
        "i'm", "i've", "i'll", "i'd", "you're", "you've", "you'll", "you'd", "he's", "she's",
        "it's", "we're", "we've", "we'll", "they're", "they've", "they'll", "that's", "there's",
        "im", "ive", "youre", "theyre", "thats",
        # auxiliaries and modals (their negated forms are in NEGATIONS)
        "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "having",
        "do", "does", "did", "doing", "will", "would", "shall", "should", "can", "could", "may",
        "might", "must",
        # prepositions and conjunctions
        "and", "but", "if", "or", "because", "as", "until", "while", "of", "at", "by", "for",
        "with", "about", "against", "between", "into", "through", "during", "before", "after",
        "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over", "under",
        "again", "further", "then", "once",
        # adverbs of place and time with no sentiment
        "here", "there", "when", "where", "why", "how", "now",
    }
)
# fmt: on


def is_negation(token: str) -> bool:
    """Whether a lower-cased token denies what follows ("not", "never", any n't form)."""
    return token in NEGATIONS or token.endswith("n't")

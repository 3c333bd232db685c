"""gradwatch's datasets as code: Tweets.csv loading, text preparation, splits, augmentation,
the built-in stand-in dataset and the synthetic gradient demonstrations.

Torch-free on purpose (numpy, pandas, nltk): the trainer wraps these arrays in tensors, and the
dashboard can show a dataset descriptor without importing torch.
"""

from gradwatch.data.augment import augment_tokens, augment_training_set
from gradwatch.data.builtin import generate_builtin_tweets
from gradwatch.data.errors import DatasetError
from gradwatch.data.load import REPRESENTATIONS, TextPreparation, load_dataset, prepare_dataset
from gradwatch.data.prepared import DatasetDescriptor, PreparedDataset
from gradwatch.data.source import TweetSource, builtin_source, resolve_source, tweets_file_source
from gradwatch.data.split import stratified_split, stratified_subset
from gradwatch.data.stopwords import ENGLISH_STOPWORDS, NEGATIONS
from gradwatch.data.synthetic import make_bar_images_dataset, make_circles_dataset
from gradwatch.data.text import tokenize_tweet, tokenize_tweets
from gradwatch.data.tweets import (
    DEFAULT_TWEETS_PATH,
    SENTIMENT_CLASSES,
    deduplicate_tweets,
    read_tweets,
)
from gradwatch.data.vectorize import documents_to_matrix, documents_to_sequences
from gradwatch.data.vocab import PAD_ID, UNK_ID, Vocabulary, build_vocabulary

__all__ = [
    "DEFAULT_TWEETS_PATH",
    "ENGLISH_STOPWORDS",
    "NEGATIONS",
    "PAD_ID",
    "REPRESENTATIONS",
    "SENTIMENT_CLASSES",
    "UNK_ID",
    "DatasetDescriptor",
    "DatasetError",
    "PreparedDataset",
    "TextPreparation",
    "TweetSource",
    "Vocabulary",
    "augment_tokens",
    "augment_training_set",
    "build_vocabulary",
    "builtin_source",
    "deduplicate_tweets",
    "documents_to_matrix",
    "documents_to_sequences",
    "generate_builtin_tweets",
    "load_dataset",
    "make_bar_images_dataset",
    "make_circles_dataset",
    "prepare_dataset",
    "read_tweets",
    "resolve_source",
    "stratified_split",
    "stratified_subset",
    "tokenize_tweet",
    "tokenize_tweets",
    "tweets_file_source",
]

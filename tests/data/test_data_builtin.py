"""The built-in stand-in dataset: deterministic, balanced, loader-shaped, noisy but learnable."""

import numpy as np
import pytest

from gradwatch.data.builtin import generate_builtin_tweets
from gradwatch.data.load import TextPreparation, prepare_dataset
from gradwatch.data.source import builtin_source


def test_same_seed_same_tweets_other_seed_other_tweets():
    first = generate_builtin_tweets(300, seed=1)

    assert first.equals(generate_builtin_tweets(300, seed=1))
    assert not first["text"].equals(generate_builtin_tweets(300, seed=2)["text"])


def test_has_the_loaders_columns_and_value_types():
    frame = generate_builtin_tweets(60)

    assert list(frame.columns) == ["tweet_id", "airline", "text", "airline_sentiment"]
    assert frame["tweet_id"].str.fullmatch(r"\d{18}").all() and frame["tweet_id"].is_unique
    assert frame["text"].str.startswith("@").all()


def test_default_size_and_classes_are_balanced():
    frame = generate_builtin_tweets()
    shares = frame["airline_sentiment"].value_counts(normalize=True)

    assert len(frame) == 6000
    assert set(shares.index) == {"negative", "neutral", "positive"}
    np.testing.assert_allclose(shares.to_numpy(), 1 / 3, atol=0.03)


def test_label_noise_flips_about_the_requested_share():
    clean = generate_builtin_tweets(3000, seed=9, label_noise=0.0)
    noisy = generate_builtin_tweets(3000, seed=9, label_noise=0.12)

    flipped = (clean["airline_sentiment"] != noisy["airline_sentiment"]).mean()
    assert 0.09 < flipped < 0.15


@pytest.mark.parametrize(("option", "value"), [("label_noise", 1.0), ("ambiguity", -0.1)])
def test_invalid_noise_options_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        generate_builtin_tweets(30, **{option: value})


def _softmax_regression(X, y, *, steps=100, learning_rate=2.0, l2=1e-3):
    """Full-batch L2-regularised multinomial logistic regression: the 'regularised model'."""
    weights = np.zeros((X.shape[1], 3), np.float32)
    bias = np.zeros(3, np.float32)
    targets = np.eye(3, dtype=np.float32)[y]
    for _ in range(steps):
        logits = X @ weights + bias
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        gradient = (probabilities - targets) / np.float32(len(X))
        weights -= np.float32(learning_rate) * (X.T @ gradient + np.float32(l2) * weights)
        bias -= np.float32(learning_rate) * gradient.sum(axis=0)
    return lambda features: (features @ weights + bias).argmax(axis=1)


def test_a_regularised_model_generalises_well_above_chance_but_cannot_fit_the_noise():
    data = prepare_dataset(builtin_source(), TextPreparation(representation="binary"))
    predict = _softmax_regression(data.X_train, data.y_train)

    train_accuracy = (predict(data.X_train) == data.y_train).mean()
    validation_accuracy = (predict(data.X_val) == data.y_val).mean()
    assert validation_accuracy > 0.7  # chance is 1/3
    assert train_accuracy < 0.9  # ~12% flipped labels and ~10% misleading texts

"""Synthetic stand-ins for the datasets the third-party scripts download, generated locally (no
downloads): character text for nanoGPT's shakespeare_char, MNIST-shaped digits, CIFAR-shaped colour
images, the sine waves of time_sequence_prediction (its own generator's recipe), and token sequences
for sequence classification. Each is learnable well below the untrained loss, so a healthy run
shows learning and a broken one shows its failure."""

from __future__ import annotations

import numpy as np
import torch

WORDS = ("the", "king", "queen", "shall", "speak", "of", "love", "and", "war", "my", "lord", "good", "night",
         "sweet", "prince", "what", "is", "a", "name", "to", "be", "or", "not", "thou", "art", "here")


def char_text(seed: int, n_chars: int) -> str:
    """Verse-like text from a small word-level Markov chain: the shape of shakespeare_char's input."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, len(WORDS), size=(len(WORDS), 3))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out, word, size = [], 0, 0
    while size < n_chars:
        word = int(successors[word, rng.choice(3, p=[0.6, 0.3, 0.1])])
        # one word in four a made-up name: text that memorising the training split cannot predict
        text = WORDS[word] if rng.random() < 0.75 else "".join(rng.choice(letters, size=rng.integers(3, 7)))
        out.append(text + ("\n" if rng.random() < 0.15 else " "))
        size += len(out[-1])
    return "".join(out)[:n_chars]


def encode_chars(text: str) -> tuple[np.ndarray, int]:
    """shakespeare_char's prepare step: the sorted character set is the vocabulary."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return np.array([index[c] for c in text], dtype=np.int64), len(chars)


def prototype_images(seed: int, n: int, *, channels: int = 1, size: int = 28, classes: int = 10,
                     noise: float = 0.3, label_noise: float = 0.0, sample: int = 0):
    """Images of `classes` classes: each class a fixed pattern of soft blobs, each image its class's
    pattern shifted by up to 2 pixels, plus Gaussian noise; normalised like MNIST (mean 0, std 1).
    `seed` picks the patterns (the task), `sample` the images; `label_noise` relabels that share of
    images at random (what makes a tiny training set overfit)."""
    task = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    patterns = np.zeros((classes, channels, size, size))
    for k in range(classes):
        for _ in range(4):
            cy, cx = task.uniform(4, size - 4, size=2)
            width = task.uniform(1.5, 3.5)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
            patterns[k] += blob * task.uniform(0.5, 1.0, size=(channels, 1, 1))
    rng = np.random.default_rng([seed, sample, 7])
    labels = rng.integers(0, classes, size=n)
    images = np.empty((n, channels, size, size))
    for i, k in enumerate(labels):
        dy, dx = rng.integers(-2, 3, size=2)
        images[i] = np.roll(patterns[k], (dy, dx), axis=(1, 2))
    images += noise * rng.normal(size=images.shape)
    images = (images - images.mean()) / images.std()
    if label_noise:
        flip = rng.random(n) < label_noise
        labels[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return torch.tensor(images, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def sine_waves(n: int = 24, length: int = 200, period: float = 20.0, seed: int = 2) -> torch.Tensor:
    """time_sequence_prediction's generate_sine_wave.py recipe, smaller (N=100, L=1000 there):
    sin((t + random shift) / T), float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) + rng.integers(-4 * period, 4 * period, size=n).reshape(n, 1)
    return torch.from_numpy(np.sin(t / period).astype("float64"))


def keyword_sequences(seed: int, n: int, *, vocab: int = 120, length: int = 16, classes: int = 4,
                      keywords_per_sequence: int = 5, label_noise: float = 0.0, sample: int = 0):
    """Token sequences whose class is told by a few keywords: each class owns 5 keyword tokens, and
    each sequence holds `keywords_per_sequence` of its class's keywords among random filler tokens (token 0 is [PAD],
    1 [CLS], 2 [SEP]; the sequence starts with [CLS])."""
    keywords = np.arange(3, 3 + 5 * classes).reshape(classes, 5)
    rng = np.random.default_rng([seed, sample, 11])
    labels = rng.integers(0, classes, size=n)
    ids = rng.integers(3 + 5 * classes, vocab, size=(n, length))
    ids[:, 0] = 1
    for i, k in enumerate(labels):
        positions = rng.choice(np.arange(1, length), size=keywords_per_sequence, replace=False)
        ids[i, positions] = rng.choice(keywords[k], size=keywords_per_sequence)
    if label_noise:
        flip = rng.random(n) < label_noise
        labels[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64)

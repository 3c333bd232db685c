"""The lesson's experiments as named presets: each is a set of option overrides. Torch-free.

`overfit` is the lesson's starting point; the remedies change one thing each, so a comparison
shows what that one change does. Gradient presets come in pairs (problem, fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import OptionsError, validate

_OVERFIT = dict(model="mlp", representation="tfidf", max_vocab=5000, depth=2, width=256, activation="relu",
                optimizer="adam", lr=1e-3, batch_size=128, epochs=20)
# Plain SGD: Adam would rescale each layer's tiny gradient back up and hide the vanishing. Xavier
# initialisation (with each activation's gain) for both, so relu differs from vanishing only in the
# activation; no momentum: with it (or a larger learning rate) the deep ReLU net diverges or spikes.
_DEEP_SIGMOID = dict(dataset="circles", model="mlp", depth=8, width=32, activation="sigmoid", init="xavier",
                     optimizer="sgd", lr=0.05, momentum=0.0, batch_size=64, epochs=20, every=5)
# N(0, 0.5^2) weights multiply activations by ~2.8 per layer (sqrt(64 / 2) * 0.5): the gradient norm
# starts in the hundreds and overflows within a few SGD steps.
_EXPLODING = dict(dataset="circles", model="mlp", depth=6, width=64, activation="relu", init="normal",
                  init_std=0.5, optimizer="sgd", lr=0.05, batch_size=32, epochs=15, every=2,
                  halt_on_nonfinite=True)


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    overrides: dict = field(default_factory=dict)
    group: str = "regularisation"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("overfit", "MLP (2 x 256 ReLU) on TF-IDF of 5,000 words, Adam, no regularisation, 20 epochs: training "
               "loss -> 0 while validation loss climbs",
               _OVERFIT),
        Preset("l1", "overfit + L1 penalty 3e-5 * sum|w| in the loss (sparser weights)", {**_OVERFIT, "l1": 3e-5}),
        Preset("l2", "overfit + L2 penalty 1e-3 * sum w^2 in the loss (smaller weights)", {**_OVERFIT, "l2": 1e-3}),
        Preset("dropout", "overfit + dropout 0.5 after each hidden layer (training only)",
               {**_OVERFIT, "dropout": 0.5}),
        Preset("early-stopping", "overfit + early stopping on validation loss (patience 3, best weights restored)",
               {**_OVERFIT, "early_stopping": True, "patience": 3}),
        Preset("smaller", "a smaller network: one hidden layer of 32 units", {**_OVERFIT, "depth": 1, "width": 32}),
        Preset("batchnorm", "overfit + batch normalisation before each activation", {**_OVERFIT, "batchnorm": True}),
        Preset("augment", "overfit + text augmentation: 4 noisy copies of each training tweet (30% of words "
               "deleted, swapped or inserted); 4 epochs over the 5x data = overfit's number of optimizer steps",
               {**_OVERFIT, "augment_rate": 0.3, "augment_copies": 4, "epochs": 4}),
        Preset("regularized", "a good combination: narrower MLP (2 x 128), dropout 0.5, L2 1e-3, early stopping",
               {**_OVERFIT, "depth": 2, "width": 128, "dropout": 0.5, "l2": 1e-3, "early_stopping": True,
                "patience": 3}),
        Preset("vanishing", "deep sigmoid MLP (8 layers, plain SGD) on two circles: early layers' gradients "
               "vanish and it does not learn", _DEEP_SIGMOID,
               group="gradients"),
        Preset("relu", "the vanishing net with ReLU instead of sigmoid: gradients reach the first layer and it "
               "learns", {**_DEEP_SIGMOID, "activation": "relu"},
               group="gradients"),
        Preset("exploding", "deep ReLU MLP with large initial weights (N(0, 0.5^2)) and no clipping: gradient "
               "norms overflow to Inf within a few steps (the run halts, failed)",
               _EXPLODING, group="gradients"),
        Preset("clipping", "the exploding net with gradient-norm clipping at 1.0", {**_EXPLODING, "clip_norm": 1.0},
               group="gradients"),
        Preset("lstm", "LSTM classifier on token sequences (gated: gradients survive long inputs)",
               dict(model="lstm", representation="sequence", embedding_dim=64, width=64, depth=1,
                    optimizer="adam", lr=2e-3, batch_size=64, epochs=8), group="gradients"),
    )
}

# The lesson suite, in the order its comparison table lists runs.
LESSON_SUITE = ("overfit", "l1", "l2", "dropout", "early-stopping", "smaller", "batchnorm", "augment",
                "regularized", "vanishing", "relu", "exploding", "clipping", "lstm")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise OptionsError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve(preset: str | None, overrides: dict | None = None) -> dict:
    """Full validated options: defaults <- preset <- user overrides."""
    base = dict(get_preset(preset).overrides) if preset else {}
    base.update(overrides or {})
    return validate(base)

"""The labelled matrix of the diagnosis evaluation: small training runs, each with the rules that
must fire (`expected`), may fire (`allowed`: plausible side effects, e.g. a net whose gradients
vanish also underfits) and, for the lesson's fixes, the problem they fix (`fixes`).

Every run goes through the real training loop (trainer.train.train_setup: the same logging and live
diagnosis as `gradwatch train`); a case only chooses options, and where the lesson's
networks cannot show a pathology, a network or data tweak from bench/diagnosis_models.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bench import diagnosis_models as tweaks
from gradwatch.data import make_bar_images_dataset
from gradwatch.trainer.models import initialise

# Sizes that keep one run to a few CPU-seconds.
TWEETS_TFIDF = dict(dataset="tweets", representation="tfidf", limit=3000, max_vocab=2000)
TWEETS_SEQ = dict(dataset="tweets", representation="sequence", limit=3000, max_vocab=2000, max_len=30)
CIRCLES = dict(dataset="circles", limit=1000)
IMAGES = dict(dataset="images", limit=300)

ALL_RULES = ("nonfinite", "vanishing_gradient", "exploding_gradient", "dead_units", "saturated_units",
             "overfitting", "underfitting", "learning_rate", "loss_divergence")


@dataclass(frozen=True)
class Case:
    """One labelled run.

    options: trainer option overrides (on top of `preset` when given).
    model: builds a network the lesson's models do not offer, from (options, dataset).
    tweak: changes the built network in place (initialisation) and returns it.
    data: builds or transforms the dataset, from (options, loaded dataset or None).
    quick: extra overrides for the --quick matrix; None leaves the case out of it.
    fixes: for a lesson fix preset, the rule it must not carry at warning or critical.
    """

    id: str
    arch: str
    group: str  # pathology, healthy or lesson
    expected: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    preset: str | None = None
    options: dict = field(default_factory=dict)
    model: Callable | None = None
    tweak: Callable | None = None
    data: Callable | None = None
    quick: dict | None = None
    fixes: tuple[str, ...] = ()
    note: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expected


def _rnn(options, dataset):
    return tweaks.RNNClassifier(len(dataset.vocab), dataset.n_classes, embedding_dim=options["embedding_dim"],
                                width=options["width"], depth=options["depth"])


def _plain_cnn(options, dataset):
    model = tweaks.PlainCNN(dataset.input_shape, dataset.n_classes, depth=options["depth"], width=options["width"])
    initialise(model, options["init"], activation=options["activation"], std=options["init_std"])
    return model


def _post_padded(length: int):
    def build(options, dataset):
        return tweaks.post_padded(dataset, length)
    return build


def _few_images(per_class: int, noise: float):
    """A small, noisy image set with most of it held out: few training images to memorise, and
    enough validation images for a smooth validation curve."""
    def build(options, dataset):
        return make_bar_images_dataset(per_class, noise=noise, seed=options["seed"], fractions=(0.25, 0.5, 0.25))
    return build


def _corrupt(options, dataset):
    return tweaks.with_corrupt_example(dataset, index=5)


def _negative_bias(value: float):
    def tweak(model):
        return tweaks.negative_bias(model, value)
    return tweak


def _forget_bias(value: float):
    def tweak(model):
        return tweaks.forget_gate_bias(model, value)
    return tweak


def _recurrence(scale: float):
    def tweak(model):
        return tweaks.scaled_recurrence(model, scale)
    return tweak


SGD = dict(optimizer="sgd", momentum=0.0)
# A net whose gradients vanish or whose units saturate learns little: these may come along.
SATURATION_SIDE_EFFECTS = ("vanishing_gradient", "underfitting", "learning_rate")
VANISHING_SIDE_EFFECTS = ("saturated_units", "underfitting", "learning_rate")

CASES: tuple[Case, ...] = (
    # ---- the lesson's presets ------------------------------------------------------------------
    Case("lesson-vanishing", "mlp", "lesson", ("vanishing_gradient",), ("underfitting", "saturated_units",
         "learning_rate"), preset="vanishing", quick=dict(epochs=3, limit=300, every=1)),
    Case("lesson-relu", "mlp", "lesson", preset="relu", fixes=("vanishing_gradient",),
         quick=dict(epochs=3, limit=300, every=1)),
    Case("lesson-exploding", "mlp", "lesson", ("exploding_gradient", "nonfinite"), ("learning_rate", "dead_units"),
         preset="exploding", quick=dict(limit=300)),
    Case("lesson-clipping", "mlp", "lesson", preset="clipping", fixes=("exploding_gradient",),
         quick=dict(epochs=2, limit=300)),
    Case("lesson-overfit", "mlp", "lesson", ("overfitting",), preset="overfit"),
    Case("lesson-regularized", "mlp", "lesson", preset="regularized", fixes=("overfitting",)),

    # ---- vanishing gradients -------------------------------------------------------------------
    Case("vanishing-cnn", "cnn", "pathology", ("vanishing_gradient",), VANISHING_SIDE_EFFECTS,
         options=dict(IMAGES, model="cnn", depth=6, width=8, activation="sigmoid", init="xavier", **SGD, lr=0.05,
                      batch_size=32, epochs=6, every=2),
         quick={}, note="6 sigmoid conv blocks, plain SGD"),
    Case("vanishing-embedding", "embedding", "pathology", ("vanishing_gradient",), VANISHING_SIDE_EFFECTS,
         options=dict(TWEETS_SEQ, model="embedding", depth=8, width=32, embedding_dim=32, activation="sigmoid",
                      init="xavier", **SGD, lr=0.05, batch_size=64, epochs=4, every=2),
         note="embedding + mean pooling + 8 sigmoid layers, plain SGD"),
    Case("vanishing-rnn", "rnn", "pathology", ("vanishing_gradient",), ("underfitting", "learning_rate",
         "saturated_units"),
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=32, depth=1, **SGD, lr=0.1,
                      batch_size=64, epochs=4, every=2),
         model=_rnn, data=_post_padded(40),
         note="plain tanh RNN; tweets padded at the end to 40 tokens, read at the last position"),

    # ---- exploding gradients -------------------------------------------------------------------
    Case("exploding-cnn", "cnn", "pathology", ("exploding_gradient",), ("nonfinite", "learning_rate", "dead_units"),
         options=dict(IMAGES, model="cnn", depth=6, width=16, activation="relu", init="normal", init_std=0.4,
                      **SGD, lr=0.05, batch_size=32, epochs=2, every=1),
         model=_plain_cnn, quick=dict(limit=90),
         note="6 ReLU convolutions without pooling, N(0, 0.4^2) kernels, SGD, no clipping: overflows or dies"),
    Case("exploding-rnn", "rnn", "pathology", ("exploding_gradient",), ("learning_rate", "underfitting",
         "saturated_units"),
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=64, depth=1, optimizer="sgd", lr=0.5,
                      momentum=0.9, batch_size=64, epochs=6, every=1),
         model=_rnn, tweak=_recurrence(1.5),
         note="plain tanh RNN, recurrent weights 1.5x PyTorch's init, SGD lr 0.5 with momentum, no clipping: "
              "gradient spikes (cliffs) and a diverging loss"),

    # ---- NaN / Inf -----------------------------------------------------------------------------
    Case("nonfinite-mlp", "mlp", "pathology", ("nonfinite",),
         options=dict(TWEETS_TFIDF, model="mlp", depth=2, width=64, lr=1e-3, batch_size=64, epochs=2, every=2),
         data=_corrupt, quick=dict(CIRCLES, limit=300),
         note="one training row's features are NaN (a document normalised 0/0)"),
    Case("nonfinite-cnn", "cnn", "pathology", ("nonfinite",),
         options=dict(IMAGES, model="cnn", depth=2, width=8, lr=1e-3, batch_size=32, epochs=2, every=1),
         data=_corrupt, quick=dict(limit=90),
         note="one training image holds a NaN pixel"),

    # ---- dead ReLU units -----------------------------------------------------------------------
    Case("dead-mlp", "mlp", "pathology", ("dead_units",), ("underfitting", "learning_rate", "vanishing_gradient"),
         options=dict(TWEETS_TFIDF, model="mlp", depth=3, width=64, lr=1e-3, batch_size=64, epochs=3, every=2),
         tweak=_negative_bias(-1.0), quick=dict(CIRCLES, limit=300, every=1),
         note="hidden biases initialised to -1"),
    Case("dead-cnn", "cnn", "pathology", ("dead_units",), ("underfitting", "learning_rate", "vanishing_gradient"),
         options=dict(IMAGES, model="cnn", depth=3, width=16, lr=1e-3, batch_size=32, epochs=4, every=2),
         tweak=_negative_bias(-2.0), quick={},
         note="conv biases initialised to -2"),

    Case("dead-embedding", "embedding", "pathology", ("dead_units",), ("underfitting", "learning_rate"),
         options=dict(TWEETS_SEQ, model="embedding", depth=2, width=64, embedding_dim=32, lr=1e-3, batch_size=64,
                      epochs=3, every=2),
         tweak=_negative_bias(-1.0),
         note="embedding model, hidden biases initialised to -1"),

    # ---- saturated units -----------------------------------------------------------------------
    Case("saturated-mlp", "mlp", "pathology", ("saturated_units",), SATURATION_SIDE_EFFECTS,
         options=dict(TWEETS_TFIDF, model="mlp", depth=3, width=64, activation="tanh", init="normal", init_std=1.0,
                      lr=1e-3, batch_size=64, epochs=3, every=2),
         quick=dict(CIRCLES, limit=300, every=1),
         note="tanh MLP with N(0, 1) weights"),
    Case("saturated-cnn", "cnn", "pathology", ("saturated_units",), SATURATION_SIDE_EFFECTS,
         options=dict(IMAGES, model="cnn", depth=3, width=16, activation="tanh", init="normal", init_std=1.0,
                      lr=1e-3, batch_size=32, epochs=4, every=2),
         quick={}, note="tanh CNN with N(0, 1) kernels"),

    Case("saturated-embedding", "embedding", "pathology", ("saturated_units",), SATURATION_SIDE_EFFECTS,
         options=dict(TWEETS_SEQ, model="embedding", depth=2, width=64, embedding_dim=32, activation="tanh",
                      init="normal", init_std=1.0, lr=1e-3, batch_size=64, epochs=3, every=2),
         note="embedding model, tanh head with N(0, 1) weights"),

    # ---- overfitting ---------------------------------------------------------------------------
    Case("overfit-embedding", "embedding", "pathology", ("overfitting",),
         options=dict(TWEETS_SEQ, limit=2000, model="embedding", depth=2, width=128, embedding_dim=64, lr=3e-3,
                      batch_size=32, epochs=12, every=5),
         note="embedding model on 1,400 training tweets, 12 epochs"),
    Case("overfit-cnn", "cnn", "pathology", ("overfitting",),
         options=dict(IMAGES, model="cnn", depth=2, width=8, lr=1e-3, batch_size=16, epochs=30, every=2),
         model=_plain_cnn, data=_few_images(60, 0.5), quick={},
         note="2 convolutions + a dense layer on the flattened map, 45 noisy training images, 30 epochs"),

    # ---- underfitting --------------------------------------------------------------------------
    Case("underfit-mlp", "mlp", "pathology", ("underfitting",),
         options=dict(TWEETS_TFIDF, model="mlp", depth=2, width=64, **SGD, lr=0.0, batch_size=64, epochs=5, every=2),
         quick=dict(CIRCLES, limit=600, batch_size=16, epochs=6, every=2),
         note="lr 0: nothing moves"),
    Case("underfit-embedding", "embedding", "pathology", ("underfitting",), ("learning_rate",),
         options=dict(TWEETS_SEQ, model="embedding", depth=1, width=32, embedding_dim=32, **SGD, lr=1e-3,
                      batch_size=64, epochs=5, every=2),
         note="plain SGD at lr 1e-3: far too small a step for this model"),

    Case("underfit-cnn", "cnn", "pathology", ("underfitting",), ("learning_rate",),
         options=dict(IMAGES, limit=1200, model="cnn", depth=1, width=1, lr=3e-3, batch_size=32, epochs=6, every=2),
         note="a CNN with one 3x3 filter: too small for the task"),

    # ---- learning rate -------------------------------------------------------------------------
    Case("lr-high-mlp", "mlp", "pathology", ("learning_rate",), ("exploding_gradient", "dead_units", "underfitting",
         "overfitting"),
         options=dict(TWEETS_TFIDF, model="mlp", depth=2, width=64, lr=0.1, batch_size=64, epochs=3, every=2),
         note="Adam lr 0.1"),
    Case("lr-high-cnn", "cnn", "pathology", ("learning_rate",), ("exploding_gradient", "dead_units", "underfitting",
         "overfitting"),
         options=dict(IMAGES, model="cnn", depth=2, width=16, lr=0.1, batch_size=32, epochs=4, every=2),
         quick={}, note="Adam lr 0.1"),
    Case("lr-high-lstm", "lstm", "pathology", ("learning_rate",), ("exploding_gradient", "underfitting",
         "overfitting"),
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=32, depth=1, lr=0.1, batch_size=64, epochs=3,
                      every=2),
         note="Adam lr 0.1"),
    Case("lr-low-mlp", "mlp", "pathology", ("learning_rate",), ("underfitting",),
         options=dict(TWEETS_TFIDF, model="mlp", depth=2, width=64, **SGD, lr=1e-4, batch_size=64, epochs=3, every=2),
         quick=dict(CIRCLES, limit=300, every=1),
         note="plain SGD at lr 1e-4"),
    Case("lr-low-lstm", "lstm", "pathology", ("learning_rate",), ("underfitting",),
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=32, depth=1, **SGD, lr=1e-4,
                      batch_size=64, epochs=3, every=2),
         note="plain SGD at lr 1e-4"),

    # ---- healthy controls ----------------------------------------------------------------------
    Case("healthy-mlp", "mlp", "healthy",
         options=dict(TWEETS_TFIDF, model="mlp", depth=2, width=64, dropout=0.3, lr=1e-3, batch_size=64, epochs=5,
                      every=5),
         quick=dict(CIRCLES, limit=600, batch_size=32, epochs=8, every=2, dropout=0.0, lr=3e-3)),
    Case("healthy-embedding", "embedding", "healthy",
         options=dict(TWEETS_SEQ, model="embedding", depth=1, width=64, embedding_dim=32, lr=2e-3, batch_size=64,
                      epochs=5, every=5)),
    Case("healthy-lstm", "lstm", "healthy", preset="lstm",
         options=dict(TWEETS_SEQ, embedding_dim=32, width=32, epochs=4, every=5)),
    Case("healthy-lstm-long", "lstm", "healthy",
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=32, depth=1, lr=3e-3, batch_size=64,
                      epochs=4, every=2),
         tweak=_forget_bias(3.0), data=_post_padded(40),
         note="vanishing-rnn's data with an LSTM (forget-gate bias 3): the gated fix"),
    Case("healthy-rnn", "rnn", "healthy",
         options=dict(TWEETS_SEQ, model="lstm", embedding_dim=32, width=32, depth=1, lr=2e-3, batch_size=64,
                      epochs=4, every=2),
         model=_rnn, note="plain tanh RNN on tweets padded at the front (the words next to the read-out)"),
    Case("healthy-mlp-deep", "mlp", "healthy",
         options=dict(TWEETS_TFIDF, model="mlp", depth=6, width=64, batchnorm=True, dropout=0.2, lr=1e-3,
                      batch_size=64, epochs=3, every=2),
         note="6 ReLU layers with batch norm and dropout"),
    Case("healthy-cnn-sgd", "cnn", "healthy",
         options=dict(IMAGES, limit=600, model="cnn", depth=3, width=16, init="kaiming", optimizer="sgd", lr=0.05,
                      momentum=0.9, batch_size=32, epochs=6, every=2),
         quick=dict(limit=300, epochs=4), note="SGD with momentum"),
    Case("healthy-cnn", "cnn", "healthy",
         options=dict(IMAGES, limit=600, model="cnn", depth=2, width=16, lr=3e-3, batch_size=32, epochs=6, every=2),
         quick=dict(limit=300, epochs=4)),
)



def replicate(case: Case, seed: int) -> Case:
    """The same case with another seed (data split, initialisation, batch order): a rule that fires
    only for one lucky draw is not detecting the pathology."""
    return replace(case, id=f"{case.id}-s{seed}", options={**case.options, "seed": seed}, quick=None)


def allow_divergence(case: Case) -> Case:
    """A run whose gradients explode, go NaN or take too-large steps may also diverge in its loss."""
    causes = {"exploding_gradient", "nonfinite", "learning_rate"}
    if causes & (set(case.expected) | set(case.allowed)) and "loss_divergence" not in case.expected + case.allowed:
        return replace(case, allowed=case.allowed + ("loss_divergence",))
    return case


CASES = tuple(allow_divergence(case) for case in CASES)
# Every custom case again with seeds 1 and 2; the lesson's presets run as the lesson defines them.
SEEDS = (1, 2)
CASES = CASES + tuple(replicate(case, seed) for seed in SEEDS for case in CASES if case.group != "lesson")
CASE_IDS = tuple(case.id for case in CASES)


def get_case(case_id: str) -> Case:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(f"unknown case {case_id!r}; valid cases: {', '.join(CASE_IDS)}")

"""Training options: their types, valid values and defaults, validated before anything runs.

Torch-free: the dashboard's Launch page validates with the same code and shows the same messages
as the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The largest integer option value without an explicit maximum (what a C int holds).
MAX_INT_OPTION = 2**31 - 1


class OptionsError(ValueError):
    """An invalid option; the message names the option, the value and what is valid."""


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int, float, bool, str
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_max: bool = False
    allow_none: bool = False

    def parse(self, raw: Any) -> Any:
        """Convert a CLI string or a form value to this option's type and check its range."""
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            if self.allow_none:
                return None
            if raw is None:
                raise OptionsError(f"option {self.name} needs a value ({self.describe()})")
        value = self._convert(raw)
        if self.choices is not None and value not in self.choices:
            raise OptionsError(
                f"invalid {self.name} {raw!r}: valid values are {', '.join(map(str, self.choices))}"
            )
        if self.minimum is not None and value < self.minimum:
            raise OptionsError(f"invalid {self.name} {raw!r}: must be >= {self.minimum} ({self.describe()})")
        if self.kind is int and self.maximum is None and value > MAX_INT_OPTION:
            # Integers reach C code (torch, numpy, DataLoader) that cannot hold more: refused here in
            # one line rather than overflowing there.
            raise OptionsError(f"invalid {self.name} {raw!r}: must be <= {MAX_INT_OPTION} ({self.describe()})")
        if self.kind is float and not math.isfinite(value):
            raise OptionsError(f"invalid {self.name} {raw!r}: must be a finite number ({self.describe()})")
        if self.maximum is not None:
            too_big = value >= self.maximum if self.exclusive_max else value > self.maximum
            if too_big:
                bound = "<" if self.exclusive_max else "<="
                raise OptionsError(f"invalid {self.name} {raw!r}: must be {bound} {self.maximum} ({self.describe()})")
        return value

    def _convert(self, raw: Any) -> Any:
        try:
            if self.kind is bool:
                if isinstance(raw, bool):
                    return raw
                text = str(raw).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if self.kind is int:
                if isinstance(raw, bool):
                    raise ValueError
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
            if self.kind is float:
                if isinstance(raw, bool):
                    raise ValueError
                value = float(raw)
                if value != value:
                    raise ValueError
                return value
            return str(raw).strip()
        except (TypeError, ValueError):
            raise OptionsError(f"invalid {self.name} {raw!r}: expected {self.describe()}") from None

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.exclusive_max else '<='} {self.maximum}")
        return kind + (f" {' and '.join(bounds)}" if bounds else "")


OPTIONS: tuple[Option, ...] = (
    # data
    Option("dataset", str, "tweets", "which data: tweets (Tweets.csv, or the built-in set without it), "
           "circles (2-D rings for gradient demos), images (synthetic 16x16 images)",
           choices=("tweets", "circles", "images")),
    Option("data", str, None, "path to Tweets.csv (default: data/Tweets.csv if present, else built-in)",
           allow_none=True),
    Option("representation", str, "tfidf", "text features: tfidf, binary, count (bag of words) or sequence",
           choices=("tfidf", "binary", "count", "sequence")),
    Option("max_vocab", int, 5000, "vocabulary size", minimum=10),
    Option("min_freq", int, 2, "minimum word count for the vocabulary", minimum=1),
    Option("max_len", int, 40, "tokens per tweet for sequence models", minimum=1),
    Option("stopwords", bool, False, "remove stopwords (negations are kept)"),
    Option("augment_rate", float, 0.0, "fraction of words changed per augmented tweet", minimum=0.0, maximum=0.9),
    Option("augment_copies", int, 0, "augmented copies of each training tweet", minimum=0, maximum=10),
    Option("limit", int, None, "use a stratified subset of this many rows (quick runs)", minimum=30,
           allow_none=True),
    # model
    Option("model", str, "mlp", "network: mlp, embedding (embedding + mean pooling + MLP), lstm, cnn",
           choices=("mlp", "embedding", "lstm", "cnn")),
    Option("depth", int, 2, "hidden layers", minimum=1, maximum=64),
    Option("width", int, 256, "units per hidden layer", minimum=1, maximum=8192),
    Option("activation", str, "relu", "hidden activation", choices=("relu", "sigmoid", "tanh")),
    Option("dropout", float, 0.0, "dropout rate after each hidden layer (training only)", minimum=0.0,
           maximum=1.0, exclusive_max=True),
    Option("batchnorm", bool, False, "batch normalisation before each activation"),
    Option("init", str, "default", "weight initialisation", choices=("default", "xavier", "kaiming", "normal")),
    Option("init_std", float, 1.0, "standard deviation for init=normal", minimum=0.0),
    Option("embedding_dim", int, 64, "embedding size (embedding, lstm)", minimum=1),
    # optimisation
    Option("optimizer", str, "adam", "optimizer", choices=("adam", "sgd")),
    Option("lr", float, 1e-3, "learning rate", minimum=0.0),
    Option("momentum", float, 0.0, "SGD momentum", minimum=0.0, maximum=1.0, exclusive_max=True),
    Option("batch_size", int, 64, "examples per batch", minimum=1),
    Option("epochs", int, 20, "passes over the training set", minimum=1, maximum=10000),
    Option("l1", float, 0.0, "L1 penalty coefficient (added to the loss)", minimum=0.0),
    Option("l2", float, 0.0, "L2 penalty coefficient (added to the loss)", minimum=0.0),
    Option("weight_decay", float, 0.0, "optimizer weight decay (decoupled for adam: AdamW)", minimum=0.0),
    Option("clip_norm", float, None, "clip the total gradient norm to this value", minimum=0.0, allow_none=True),
    Option("clip_value", float, None, "clip each gradient element to +/- this value", minimum=0.0,
           allow_none=True),
    Option("early_stopping", bool, False, "stop when validation loss stops improving"),
    Option("patience", int, 3, "evaluations without improvement before stopping", minimum=0),
    Option("min_delta", float, 0.0, "smallest validation-loss decrease that counts", minimum=0.0),
    Option("restore_best", bool, True, "restore the best weights when early stopping"),
    Option("stop_on_overfitting", bool, False, "stop when the overfitting rule fires"),
    Option("halt_on_nonfinite", bool, True, "stop (run failed) when the loss becomes NaN/Inf"),
    # logging and reproducibility
    Option("every", int, 10, "record layer statistics every N optimizer steps", minimum=1),
    Option("seed", int, 0, "random seed", minimum=0, maximum=2**32 - 1),  # numpy's seed range
    Option("device", str, "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
    Option("threads", int, 0, "CPU threads for PyTorch (0: PyTorch's default; 1 is often fastest on a "
           "busy shared machine)", minimum=0, maximum=1024),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


def defaults() -> dict:
    return {o.name: o.default for o in OPTIONS}


def validate(options: dict) -> dict:
    """Parse and check every given option; unknown names are an error listing valid ones."""
    unknown = sorted(set(options) - set(OPTIONS_BY_NAME))
    if unknown:
        raise OptionsError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid options: "
            + ", ".join(OPTIONS_BY_NAME)
        )
    parsed = {name: OPTIONS_BY_NAME[name].parse(value) for name, value in options.items()}
    merged = {**defaults(), **parsed}
    if merged["clip_norm"] is not None and merged["clip_norm"] <= 0:
        raise OptionsError(f"invalid clip_norm {merged['clip_norm']!r}: must be > 0 (or none for no clipping)")
    if merged["clip_value"] is not None and merged["clip_value"] <= 0:
        raise OptionsError(f"invalid clip_value {merged['clip_value']!r}: must be > 0 (or none for no clipping)")
    _check_model_fits_data(merged)
    if merged["model"] in ("embedding", "lstm"):
        merged["representation"] = "sequence"
    return merged


# Which networks each dataset can feed: token models need tweets, the CNN needs images.
MODELS_FOR_DATASET = {
    "tweets": ("mlp", "embedding", "lstm"),
    "circles": ("mlp",),
    "images": ("mlp", "cnn"),
}


def _check_model_fits_data(options: dict) -> None:
    model, dataset = options["model"], options["dataset"]
    valid = MODELS_FOR_DATASET[dataset]
    if model not in valid:
        raise OptionsError(f"invalid model {model!r} for dataset {dataset!r}: valid models for {dataset} are "
                           + ", ".join(valid))
    if model == "mlp" and dataset == "tweets" and options["representation"] == "sequence":
        raise OptionsError("invalid representation 'sequence' for model 'mlp': the MLP needs word features "
                           "(tfidf, binary or count); token sequences need model embedding or lstm")

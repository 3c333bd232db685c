"""The input of every diagnosis rule: a run's records (RunData) and per-layer tables derived once.

Rules never scan the raw statistics rows themselves: `LayerViews` turns them, in one vectorised pass,
into small step x layer tables (gradient norm per layer, update-to-weight ratio per layer, activation
saturated/dead fractions) plus the few rows holding NaN/Inf. The live trainer extends these tables
with each new chunk of rows instead of re-reading the run, so a check stays cheap however long the
run gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .. import derived
from ..runlog import schema
from ..runlog.schema import OPTIMIZER_LR, SENTINEL_GRAD_NORM
from ..runlog.step_norms import StepNorms

SCALAR_COLUMNS = ("step", "name", "value")
STATS_COLUMNS = ("step", "name", "layer", "param", "kind", *schema.STAT_FIELDS)
TENSOR_COLUMNS = (
    "tensor_id", "name", "layer", "param", "role", "module_type", "shape", "numel", "ord", "trainable",
)
KINDS = ("grad", "weight", "activation")
# A clip threshold this large never binds (users write clip=1e9 to switch clipping off).
NEVER_BINDS = 1e6

# Config keys the rules read from meta["config"] (first match wins, nested dicts searched too).
CLIP_KEYS = ("clip_grad_norm", "grad_clip", "clip_norm", "max_grad_norm", "gradient_clip_val", "clip")
NUM_CLASSES_KEYS = ("num_classes", "n_classes", "classes", "num_labels", "n_labels")
BATCH_SIZE_KEYS = ("batch_size", "batch")
VOCAB_KEYS = ("vocab_size", "n_vocab", "ntokens", "ntoken", "vocab")
# Module types by the part they play; the rules treat them differently (docs/diagnosis.md).
EMBEDDING_TYPES = frozenset({"Embedding", "EmbeddingBag"})
NORM_TYPES = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
                        "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "LlamaRMSNorm", "T5LayerNorm", "SyncBatchNorm"})
RECURRENT_TYPES = frozenset({"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"})
GATED_RECURRENT_TYPES = frozenset({"LSTM", "GRU", "LSTMCell", "GRUCell"})
# Attention modules (torch's and the usual transformers classes) mark a transformer.
ATTENTION_MARKERS = ("Attention", "TransformerEncoderLayer", "TransformerDecoderLayer", "MultiheadAttention")


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})


@dataclass
class LayerViews:
    """Per-layer tables derived from statistics rows; each indexed by step, columns in forward order.

    grad_norm, weight_norm, update_ratio, saturated (saturated_frac), dead (dead_frac): the tables
        of trainer.derived.layer_table (a layer's norm is sqrt(sum of its parameters' squared norms)).
    nonfinite: long table (step, layer, kind, nan_count, inf_count) of rows holding NaN or Inf.
    """

    grad_norm: pd.DataFrame
    weight_norm: pd.DataFrame
    update_ratio: pd.DataFrame
    saturated: pd.DataFrame
    dead: pd.DataFrame
    nonfinite: pd.DataFrame

    @classmethod
    def empty(cls) -> LayerViews:
        wide = pd.DataFrame(index=pd.Index([], dtype=np.int64, name="step"))
        return cls(wide, wide, wide, wide, wide, _empty(("step", "layer", "kind", "nan_count", "inf_count")))

    @classmethod
    def from_stats(cls, stats: pd.DataFrame, order: list[str]) -> LayerViews:
        if stats is None or len(stats) == 0:
            return cls.empty()
        layers = list(dict.fromkeys(list(order) + list(pd.unique(stats["layer"]))))
        steps = pd.Index(np.unique(stats["step"].to_numpy(dtype=np.int64)), name="step")

        def table(quantity):
            # Every table spans every step of the rows (NaN where a layer has no row of that kind).
            return derived.layer_table(stats, quantity, layers).reindex(steps)

        kind = stats["kind"].to_numpy(dtype=object)
        norm = stats["norm"].to_numpy(dtype=float)
        nan_count = stats["nan_count"].fillna(0).to_numpy(dtype=float)
        inf_count = stats["inf_count"].fillna(0).to_numpy(dtype=float)
        bad = (nan_count > 0) | (inf_count > 0) | np.isinf(norm)
        nonfinite = pd.DataFrame(
            {
                "step": stats["step"].to_numpy(dtype=np.int64)[bad],
                "layer": stats["layer"].to_numpy(dtype=object)[bad],
                "kind": kind[bad],
                "nan_count": nan_count[bad].astype(np.int64),
                "inf_count": inf_count[bad].astype(np.int64),
            }
        )
        return cls(table("grad_norm"), table("weight_norm"), table("update_ratio"), table("saturated_frac"),
                   table("dead_frac"), nonfinite)

    def extend(self, newer: LayerViews, order: list[str]) -> LayerViews:
        """These tables followed by `newer`'s; a step present in both keeps the newer values."""

        def join(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
            if new.empty:
                return old
            if old.empty:
                return new
            both = pd.concat([old[~old.index.isin(new.index)], new]).sort_index()
            columns = [c for c in dict.fromkeys(list(order) + list(both.columns)) if c in both.columns]
            return both[columns]

        nonfinite = self.nonfinite
        if len(newer.nonfinite):
            kept = nonfinite[~nonfinite["step"].isin(newer.nonfinite["step"])]
            nonfinite = newer.nonfinite if kept.empty else pd.concat([kept, newer.nonfinite], ignore_index=True)
        return LayerViews(
            join(self.grad_norm, newer.grad_norm),
            join(self.weight_norm, newer.weight_norm),
            join(self.update_ratio, newer.update_ratio),
            join(self.saturated, newer.saturated),
            join(self.dead, newer.dead),
            nonfinite,
        )

    @property
    def is_empty(self) -> bool:
        return all(
            frame.empty
            for frame in (self.grad_norm, self.weight_norm, self.update_ratio, self.saturated, self.dead)
        ) and self.nonfinite.empty


@dataclass
class RunData:
    """A run's records as the rules see them.

    scalars: step, name, value (rank 0). stats: reader.layer_stats() rows. tensors: reader.tensors()
    (forward order in `ord`). meta: the run's metadata; meta["config"] holds the training settings.
    views: derived per-layer tables; computed from `stats` unless given.
    scalar_series: name -> Series over steps; derived from `scalars` unless given.
    The live diagnoser passes views and scalar_series it extends incrementally and leaves the raw
    frames empty, so rules use only `views`, `scalar()` and `scalar_names`.
    """

    scalars: pd.DataFrame
    stats: pd.DataFrame
    tensors: pd.DataFrame
    meta: dict = field(default_factory=dict)
    run_id: str = ""
    views: LayerViews | None = None
    scalar_series: dict[str, pd.Series] | None = field(default=None, repr=False)
    # Every optimizer step's per-parameter gradient norms (runlog/step_norms.py); empty when none.
    step_norms: StepNorms = field(default_factory=StepNorms.empty_for, repr=False)

    def __post_init__(self):
        self.scalars = _normalise_scalars(self.scalars)
        self.stats = _normalise_stats(self.stats)
        self.tensors = _normalise_tensors(self.tensors)
        self.meta = dict(self.meta or {})
        if self.views is None:
            self.views = LayerViews.from_stats(self.stats, self.tensor_order())

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        scalars: pd.DataFrame | None = None,
        stats: pd.DataFrame | None = None,
        tensors: pd.DataFrame | None = None,
        meta: dict | None = None,
        run_id: str = "",
        step_norms: StepNorms | None = None,
    ) -> RunData:
        """Build from DataFrames (tests, notebooks). Missing frames and optional columns are allowed:
        scalars need step, name, value; stats need step, layer, kind and norm."""
        return cls(scalars, stats, tensors, meta or {}, run_id, step_norms=step_norms or StepNorms.empty_for())

    @classmethod
    def from_reader(cls, reader) -> RunData:
        """Everything one RunReader holds (rank-0 scalars)."""
        scalars, _ = reader.scalars()
        stats, _ = reader.layer_stats()
        return cls(scalars, stats, reader.tensors(), dict(reader.meta), reader.run_id,
                   step_norms=reader.step_norms())

    # ---- layers -------------------------------------------------------------------------------
    def tensor_order(self) -> list[str]:
        """Layers in forward order from the tensors table, then layers only seen in stats."""
        order = list(dict.fromkeys(self.tensors["layer"])) if len(self.tensors) else []
        if len(self.stats):
            order += [layer for layer in pd.unique(self.stats["layer"]) if layer not in set(order)]
        return order

    @cached_property
    def layer_order(self) -> list[str]:
        order = self.tensor_order()
        seen = set(order)
        for frame in (self.views.grad_norm, self.views.update_ratio, self.views.saturated, self.views.dead):
            for layer in frame.columns:
                if layer not in seen:
                    order.append(layer)
                    seen.add(layer)
        return order

    def position(self, layer: str) -> int:
        positions = self._positions
        return positions.get(layer, len(positions))

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {layer: i for i, layer in enumerate(self.layer_order)}

    @cached_property
    def weighted_layers(self) -> list[str]:
        """Layers with a weight matrix (a trainable parameter of 2+ dimensions: Linear, Conv, RNN,
        Embedding), in forward order and with gradient records. Norm layers and biases alone are left
        out. Without shapes in the tensors table every layer with gradient records counts."""
        recorded = list(self.views.grad_norm.columns)
        tensors = self.tensors
        if len(tensors) and "shape" in tensors and tensors["shape"].notna().any():
            params = tensors[(tensors["role"] == "param") & tensors["trainable"].astype(bool)]
            matrix = {
                layer
                for layer, shape in zip(params["layer"], params["shape"])
                if isinstance(shape, (list, tuple)) and len(shape) >= 2
            }
            if matrix:
                return [layer for layer in recorded if layer in matrix]
        return recorded

    @cached_property
    def depth_layers(self) -> list[str]:
        """Weighted layers that gradients flow *through* on their way to the input: the weighted
        layers without embeddings (an input lookup whose gradient is sparse - a batch touches a
        few rows - so its norm says nothing about how much signal survived the depth) and without
        frozen ones. Vanishing-gradient verdicts need evidence on these. Plain RNNs keep their
        embedding (below)."""
        if self.architecture == "rnn":
            # A plain RNN loses its gradient through time on the way back to the words: the
            # embedding is where that shows (the RNN's own weights still get gradient from the
            # last positions), so it stays on the path.
            return list(self.weighted_layers)
        types = self.module_types
        return [layer for layer in self.weighted_layers if types.get(layer, "") not in EMBEDDING_TYPES]

    def layer_kind(self, layer: str) -> str:
        """embedding, norm, recurrent, attention, conv, linear or other, from the module type."""
        kind = self.module_types.get(layer, "")
        if kind in EMBEDDING_TYPES:
            return "embedding"
        if kind in NORM_TYPES or kind.endswith("Norm"):
            return "norm"
        if kind in RECURRENT_TYPES:
            return "recurrent"
        if any(marker in kind for marker in ATTENTION_MARKERS):
            return "attention"
        if kind.startswith("Conv") and kind != "Conv1D":  # transformers' Conv1D is a Linear
            return "conv"
        if kind in ("Linear", "Conv1D", "Bilinear", "LazyLinear"):
            return "linear"
        return "other"

    @cached_property
    def architecture(self) -> str:
        """transformer, gated-rnn (LSTM/GRU), rnn (plain), cnn or mlp: what remedies must fit.
        Read from module types (and the layer names of attention blocks), else config["model"]."""
        types = set(self.module_types.values())
        layers = " ".join(self.module_types).lower()
        if any(marker in t for t in types for marker in ATTENTION_MARKERS) or ".attn" in layers or "attention" in layers:
            return "transformer"
        if types & GATED_RECURRENT_TYPES:
            return "gated-rnn"
        if types & RECURRENT_TYPES:
            return "rnn"
        model = str(self.config_value("model", "arch", default="")).lower()
        if model in ("lstm", "gru"):
            return "gated-rnn"
        if model == "rnn":
            return "rnn"
        if model in ("transformer", "gpt2", "bert"):
            return "transformer"
        if any(t.startswith("Conv") and t != "Conv1D" for t in types) or model == "cnn":
            return "cnn"
        return "mlp"

    def has_module_kind(self, *kinds: str) -> bool:
        return any(self.layer_kind(layer) in kinds for layer in self.module_types)

    @cached_property
    def module_types(self) -> dict[str, str]:
        if not len(self.tensors):
            return {}
        types = self.tensors[self.tensors["module_type"].astype(str) != ""]
        return dict(zip(types["layer"], types["module_type"].astype(str)))

    def hidden_layers(self, layers: list[str]) -> list[str]:
        """Those of `layers` that come before the last weighted layer in forward order: a network's
        final activation (a classifier's sigmoid) is meant to saturate and is left out."""
        weighted = self.weighted_layers
        if not weighted:
            return list(layers)
        last = self.position(weighted[-1])
        return [layer for layer in layers if self.position(layer) < last]

    @property
    def has_layer_stats(self) -> bool:
        return not self.views.is_empty

    @property
    def has_records(self) -> bool:
        return self.has_layer_stats or any(len(s) for s in self._series().values())

    # ---- scalars ------------------------------------------------------------------------------
    def scalar(self, name: str) -> pd.Series:
        """One scalar over steps (float, index step ascending; a later record for a step wins).
        Empty when the run never logged it."""
        found = self._series().get(name)
        if found is None:
            return pd.Series(dtype=float, index=pd.Index([], dtype=np.int64, name="step"))
        return found

    @property
    def scalar_names(self) -> list[str]:
        return list(self._series())

    def _series(self) -> dict[str, pd.Series]:
        if self.scalar_series is None:
            series = {}
            for key, group in self.scalars.groupby("name", sort=False):
                values = pd.Series(group["value"].to_numpy(dtype=float), index=group["step"].to_numpy(dtype=np.int64))
                values = values[~values.index.duplicated(keep="last")].sort_index()
                values.index.name = "step"
                series[key] = values
            self.scalar_series = series
        return self.scalar_series

    def has_scalar(self, name: str) -> bool:
        return len(self.scalar(name)) > 0

    # ---- configuration ------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    def config_value(self, *keys: str, default: Any = None) -> Any:
        """The first of `keys` found in meta["config"] (top level first, then nested dicts)."""
        return _find_key(self.config, keys, default)

    def clip_setting(self) -> float | None:
        """The clip threshold as configured (config keys, else meta "grad_clip"), 0 and huge values
        included; None when none is set."""
        value = self.config_value(*CLIP_KEYS)
        if value is None:
            value = self.meta.get("grad_clip")
        if isinstance(value, dict):
            value = _find_key(value, ("max_norm", "value", "norm"), None)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if not math.isnan(value) else None

    def clip_norm(self) -> float | None:
        """The gradient-clipping max norm that actually binds, or None when clipping is off/unknown.
        A threshold of 0 is not clipping but zeroing (zero_gradients names it); one of `NEVER_BINDS`
        (1e6) or more, or above 1000 x the largest gradient norm the run recorded, never clips
        anything - users write clip=1e9 to switch it off - so it does not count as clipping."""
        value = self.clip_setting()
        if value is None or not math.isfinite(value) or value <= 0 or value >= NEVER_BINDS:
            return None
        observed = self.scalar("grad_norm_total").dropna()
        if not len(observed):
            observed = self.scalar(SENTINEL_GRAD_NORM).dropna()
        finite = observed[np.isfinite(observed.to_numpy(dtype=float))]
        if len(finite) and value > 1000 * float(finite.max()):
            return None
        return value

    def weight_decay(self) -> float | None:
        """The regularisation strength: the optimizer's recorded weight_decay (largest over param
        groups, meta "optimizer"), else config weight_decay / l2; None when off."""
        optimizer = self.meta.get("optimizer")
        values = []
        if isinstance(optimizer, dict):
            for group in optimizer.get("param_groups") or []:
                if isinstance(group, dict) and isinstance(group.get("weight_decay"), (int, float)):
                    values.append(float(group["weight_decay"]))
        if not values:
            for key in ("weight_decay", "l2", "wd"):
                value = self.config_value(key)
                try:
                    values.append(float(value))
                    break
                except (TypeError, ValueError):
                    continue
        positive = [v for v in values if math.isfinite(v) and v > 0]
        return max(positive) if positive else None

    def num_classes(self) -> int | None:
        """Number of classes from the config, else the output width of the last weighted layer."""
        value = self.config_value(*NUM_CLASSES_KEYS)
        if isinstance(value, (list, tuple)):
            value = len(value)
        try:
            if value is not None and int(value) > 0:
                return int(value)
        except (TypeError, ValueError):
            pass
        weighted = self.weighted_layers
        if not weighted or not len(self.tensors):
            return None
        rows = self.tensors[(self.tensors["layer"] == weighted[-1]) & (self.tensors["role"] == "param")]
        for param, shape, module_type in zip(rows["param"], rows["shape"], rows["module_type"]):
            if module_type == "Linear" and param == "weight" and isinstance(shape, (list, tuple)) and shape:
                return int(shape[0])
        return None

    def model_config_classes(self) -> int | None:
        """K from the model's own config (meta "model_config", written by the HF integration):
        num_labels for a classifier, vocab_size for a language model."""
        model_config = self.meta.get("model_config")
        if not isinstance(model_config, dict):
            return None
        arch = " ".join(str(a) for a in model_config.get("architectures") or [model_config.get("model_class", "")])
        keys = ("num_labels", "vocab_size") if "Classification" in arch else ("vocab_size", "num_labels")
        for key in keys:
            value = model_config.get(key)
            if isinstance(value, int) and value > 1:
                return value
        return None

    def lr_series(self) -> pd.Series:
        """The learning rate over steps: the optimizer's own (param group 0, recorded by the
        capture), else a logged `lr` scalar; empty when neither exists."""
        return self._lr_series

    @cached_property
    def _lr_series(self) -> pd.Series:
        for name in (OPTIMIZER_LR, "lr", "learning_rate"):
            series = self.scalar(name).dropna()
            if len(series):
                return series
        return self.scalar(OPTIMIZER_LR)

    def clips_gradients(self) -> bool:
        """Whether the run already clips gradients: a clip norm in the config or meta "grad_clip",
        or a logged grad_norm_clipped."""
        return self.clip_norm() is not None or self.has_scalar("grad_norm_clipped")

    def uniform_loss(self) -> float | None:
        """ln K, the cross-entropy of a uniform guess over K classes (or K tokens), when K is known
        and the loss looks like a cross-entropy over them: from config num_classes / vocab_size,
        or the output width of the last Linear layer when the untrained loss sits near ln K (a
        regression loss is not compared with it)."""
        return self._uniform_loss

    @cached_property
    def _uniform_loss(self) -> float | None:
        configured = self.config_value(*NUM_CLASSES_KEYS, *VOCAB_KEYS)
        if configured is None:
            configured = self.model_config_classes()
        if isinstance(configured, (list, tuple)):
            configured = len(configured)
        try:
            k = int(configured) if configured is not None else None
        except (TypeError, ValueError):
            k = None
        from_config = k is not None and k > 1
        if not from_config:
            k = self.num_classes()
        if not k or k < 2:
            return None
        level = math.log(k)
        if from_config:
            return level
        loss = self.scalar("train_loss").dropna()
        if not len(loss):
            return None
        initial = float(np.median(loss.to_numpy(dtype=float)[:3]))
        return level if 0.5 * level <= initial <= 2.0 * level else None

    def first_optimizer_step(self) -> int | None:
        """The first optimizer step anything recorded (every-step norms, layer statistics, the
        capture's sentinel or lr scalars); None when nothing but user scalars exists."""
        candidates = []
        if not self.step_norms.empty:
            candidates.append(int(np.asarray(self.step_norms.steps)[0]))
        if not self.views.grad_norm.empty:
            candidates.append(int(self.views.grad_norm.index[0]))
        for name in (SENTINEL_GRAD_NORM, OPTIMIZER_LR, "grad_norm_total"):
            series = self.scalar(name)
            if len(series):
                candidates.append(int(series.index[0]))
        return min(candidates) if candidates else None

    def untrained_loss(self, loss: pd.Series | None = None) -> dict | None:
        """The loss of the untrained model, and where it comes from:
        - "step-0 loss": the per-step loss at the first optimizer step (its forward pass ran on the
          initial weights), when the loss is logged at that step;
        - "ln K": the cross-entropy of a uniform guess over K classes or tokens (uniform_loss).
        Returns {"loss", "source", "chance"} (chance = ln K or None), or None when neither is known.
        An averaged loss (HF logs the mean over logging_steps) or a loss first logged later is not
        a step-0 loss: it may already hold a blow-up, so ln K is the baseline then."""
        if loss is None:
            loss = self.scalar("train_loss")
            if not len(loss):
                loss = self.scalar("loss")
        loss = loss[np.isfinite(loss.to_numpy(dtype=float))]
        chance = self.uniform_loss()
        first = self.first_optimizer_step()
        if len(loss) and not self.averaged_loss() and (
                (first is not None and int(loss.index[0]) <= first)
                or (first is None and len(loss) >= 2 and int(loss.index[1]) - int(loss.index[0]) == 1
                    and int(loss.index[0]) <= 1)):
            return {"loss": float(loss.iloc[0]), "source": "step-0 loss", "chance": chance}
        if chance is not None:
            return {"loss": chance, "source": "ln K", "chance": chance}
        return None

    def averaged_loss(self) -> bool:
        """Whether the logged training loss is a mean over several steps (the HF Trainer logs the mean
        over logging_steps; Lightning's on_epoch means), not one step's loss."""
        if str(self.meta.get("integration") or "").lower() == "transformers":
            return True
        return bool(self.config_value("loss_averaged", default=False))

    def activation_name(self) -> str | None:
        """The hidden activation: config["activation"], else the most common activation module type."""
        value = self.config_value("activation", "act", "nonlinearity")
        if isinstance(value, str) and value:
            return value.lower()
        known = {"relu", "relu6", "leakyrelu", "elu", "gelu", "selu", "silu", "sigmoid", "tanh", "softplus"}
        types = [t.lower() for t in self.module_types.values() if t.lower() in known]
        if not types:
            rnn = {t for t in self.module_types.values() if t in ("RNN", "LSTM", "GRU")}
            return "tanh" if rnn else None
        return max(set(types), key=types.count)

    def is_plain_rnn(self) -> bool:
        return "RNN" in set(self.module_types.values()) or str(self.config_value("model", "arch", default="")).lower() == "rnn"


def _find_key(config: dict, keys, default):
    for key in keys:
        if key in config and config[key] is not None:
            return config[key]
    for value in config.values():
        if isinstance(value, dict):
            found = _find_key(value, keys, None)
            if found is not None:
                return found
    return default


def _normalise_scalars(scalars: pd.DataFrame | None) -> pd.DataFrame:
    if scalars is None or len(scalars) == 0:
        return _empty(SCALAR_COLUMNS)
    missing = [c for c in SCALAR_COLUMNS if c not in scalars]
    if missing:
        raise ValueError(f"scalars need columns {list(SCALAR_COLUMNS)}; missing {missing}")
    if "rank" in scalars:
        scalars = scalars[scalars["rank"] == 0]
    out = scalars[list(SCALAR_COLUMNS)].copy()
    out["step"] = out["step"].astype(np.int64)
    out["value"] = out["value"].astype(float)
    return out.reset_index(drop=True)


def _normalise_stats(stats: pd.DataFrame | None) -> pd.DataFrame:
    if stats is None or len(stats) == 0:
        return _empty(STATS_COLUMNS)
    missing = [c for c in ("step", "layer", "kind", "norm") if c not in stats]
    if missing:
        raise ValueError(f"stats need at least columns step, layer, kind, norm; missing {missing}")
    bad_kinds = set(pd.unique(stats["kind"])) - set(KINDS)
    if bad_kinds:
        raise ValueError(f"stats kind must be one of {KINDS}, got {sorted(map(str, bad_kinds))}")
    out = stats.copy()
    if "param" not in out:
        out["param"] = ""
    if "name" not in out:
        out["name"] = out["layer"].astype(str) + np.where(out["param"] != "", "." + out["param"].astype(str), "")
    for column in STATS_COLUMNS:
        if column not in out:
            out[column] = 0 if column in ("nan_count", "inf_count") else np.nan
    out["step"] = out["step"].astype(np.int64)
    return out


def _normalise_tensors(tensors: pd.DataFrame | None) -> pd.DataFrame:
    if tensors is None or len(tensors) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TENSOR_COLUMNS})
    if "layer" not in tensors:
        raise ValueError("tensors need at least a 'layer' column (and 'ord' for forward order)")
    out = tensors.copy()
    defaults = {"tensor_id": -1, "name": "", "param": "", "role": "param", "module_type": "",
                "shape": None, "numel": 0, "ord": np.arange(len(out)), "trainable": True}
    for column, default in defaults.items():
        if column not in out:
            out[column] = default
    out["module_type"] = out["module_type"].fillna("").astype(str)
    sort_keys = ["ord", "tensor_id"] if "tensor_id" in tensors else ["ord"]
    return out.sort_values(sort_keys, kind="stable").reset_index(drop=True)

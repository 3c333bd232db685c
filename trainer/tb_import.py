"""`gradwatch import-tensorboard`: TensorBoard event files -> gradwatch run folders.

Each folder holding event files (`events.out.tfevents.*`) is one run, read with TensorBoard's own
event reader (`tensorboard.backend.event_processing.event_accumulator`), never a parser of ours:
- scalars become scalar series under gradwatch's names (`Loss/train` is `train_loss`, see
  scalar_names.py), at their steps and wall times;
- histograms written by `SummaryWriter.add_histogram` become per-tensor layer records: a tag with a
  gradient word (`grad`, `grads`, `gradient(s)`, as a path part or a `.grad` / `_grad` suffix) is
  the gradient of the parameter it names, any other tag a weight (`weights/`, `params/`,
  `parameters/` prefixes dropped); a tag with an activation word as a path part (`activation(s)`,
  `output(s)`, or a leading `act/` / `acts/`) or suffix (`_activation(s)`, `_act`, `_output`) is
  the output of the module it names (`activations/fc1.relu`, `fc1/relu/activations`,
  `relu1_act`), recorded as activation statistics of that module (its type taken from the name:
  `relu1` is a ReLU): norm, mean, std, min, max and the zero fraction (the zero bucket). Dead and
  saturated fractions stay unknown: a dead unit needs the batch's per-unit outputs, and
  TensorBoard's bucket around 0.99 spans 0.92-1.01, too coarse for a saturation threshold. A tag
  that ends in a parameter name is a parameter whatever its path says
  (`bert/attention/output/dense/weight`). Norm, mean, std, min and max come exactly from the
  histogram's sum, sum of squares, count, min and max; the buckets are re-binned onto gradwatch's fixed
  log-magnitude bins at each bucket's geometric centre (TensorBoard's buckets are 10% wide, a
  tenth of one of our bins), the buckets either side of 0 (|x| < 1e-12) counting as zeros. NaN/Inf counts are not in a
  TensorBoard histogram and stay unknown.
Layer order is the order the tags first appear in the events (SummaryWriter users log
`model.named_parameters()` in order). Tensorboard is needed only by this command.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runlog import schema
from .runlog.writer import LayerRecord
from .scalar_names import gradwatch_name

EVENT_FILE = "events.out.tfevents."
ZERO_BUCKET = 1e-12  # TensorBoard's innermost bucket edge (SummaryWriter's default bins)
GRAD_WORDS = frozenset({"grad", "grads", "gradient", "gradients"})
# Activation histograms, as tutorials and forward-hook loggers name them. "act" is a namespace
# only as the first part: GPT-2 and timm name activation modules `act`, and "out" is a common
# layer name (self.out = nn.Linear), so neither marks an activation elsewhere.
ACT_WORDS = frozenset({"activation", "activations", "output", "outputs"})
ACT_PREFIXES = frozenset({"act", "acts"})
ACT_SUFFIXES = ("_activations", "_activation", ".activations", ".activation", "_act", "_output", "_outputs")
# The activation a tag's name says (its module type in the run).
ACT_KINDS = (("sigmoid", "Sigmoid"), ("tanh", "Tanh"), ("gelu", "GELU"), ("relu", "ReLU"), ("silu", "SiLU"))
WEIGHT_PREFIXES = frozenset({"weights", "weight", "params", "parameters", "param"})
PARAM_NAMES = frozenset({"weight", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "in_proj_weight",
                         "in_proj_bias", "gamma", "beta", "kernel"})


class TensorBoardImportError(ValueError):
    """Bad input to import-tensorboard (no such folder, no event files, tensorboard missing)."""


@dataclass(frozen=True)
class HistogramTag:
    tag: str
    tensor: str  # the parameter it describes ('fc1.weight') or the module whose output it is
    kind: int  # schema.KIND_GRAD, KIND_WEIGHT or KIND_ACTIVATION


def find_event_dirs(root: Path) -> list[Path]:
    """Folders under (and including) root that hold event files, sorted."""
    if not root.is_dir():
        raise TensorBoardImportError(f"TensorBoard logdir {str(root)!r} is not a folder")
    found = sorted({p.parent for p in root.rglob(f"{EVENT_FILE}*") if p.is_file()})
    if not found:
        raise TensorBoardImportError(f"no TensorBoard event files ({EVENT_FILE}*) under {str(root)!r}")
    return found


def classify_histogram(tag: str) -> HistogramTag:
    parts = [p for p in re.split(r"/", tag) if p]
    is_grad = any(p.lower() in GRAD_WORDS for p in parts)
    parts = [p for p in parts if p.lower() not in GRAD_WORDS]
    if not is_grad:
        activation = _activation_tensor(parts)
        if activation is not None:
            return HistogramTag(tag, activation or tag, schema.KIND_ACTIVATION)
    if parts and parts[0].lower() in WEIGHT_PREFIXES and len(parts) > 1:
        parts = parts[1:]
    name = ".".join(parts) or tag
    for suffix in (".grad", "_grad", ".gradient", "_gradient"):
        if name.lower().endswith(suffix):
            is_grad, name = True, name[: -len(suffix)]
    return HistogramTag(tag, name, schema.KIND_GRAD if is_grad else schema.KIND_WEIGHT)


def _activation_tensor(parts: list[str]) -> str | None:
    """The module name of an activation tag's parts ('' when only the word is there), else None."""
    if split_param(".".join(parts))[1]:  # names a parameter
        return None
    is_act = bool(parts) and parts[0].lower() in ACT_PREFIXES and len(parts) > 1
    if is_act:
        parts = parts[1:]
    kept = [p for p in parts if p.lower() not in ACT_WORDS]
    is_act = is_act or len(kept) < len(parts)
    name = ".".join(kept)
    for suffix in ACT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            is_act, name = True, name[: -len(suffix)]
            break
    return name if is_act else None


def activation_kind(tensor: str) -> str:
    """'Tanh' for 'encoder.tanh1': the activation a module's name says, or '' when it says none."""
    lower = tensor.lower()
    return next((kind for word, kind in ACT_KINDS if word in lower), "")


def split_param(tensor: str) -> tuple[str, str]:
    """('fc1', 'weight') for 'fc1.weight'; the whole name is the layer when no parameter is named."""
    layer, _, param = tensor.rpartition(".")
    if layer and (param in PARAM_NAMES or param.startswith(("weight", "bias"))):
        return layer, param
    return tensor, ""


def histogram_stats(h) -> tuple[list[float], np.ndarray]:
    """(stat row in schema.STAT_FIELDS order, gradwatch bin counts) of one TensorBoard HistogramValue."""
    n = float(h.num)
    mean = h.sum / n if n else math.nan
    var = (h.sum_squares - n * mean * mean) / (n - 1) if n > 1 else 0.0
    counts = rebin(list(h.bucket_limit), list(h.bucket), h.min, h.max)
    zero_frac = counts[schema.HIST_ZERO_INDEX] / n if n else math.nan
    known = {"norm": math.sqrt(max(h.sum_squares, 0.0)), "mean": mean, "std": math.sqrt(max(var, 0.0)),
             "min": h.min, "max": h.max, "zero_frac": zero_frac}
    stats = [math.nan] * len(schema.STAT_FIELDS)  # what TensorBoard does not keep stays unknown
    for name, value in known.items():
        stats[schema.STAT_INDEX[name]] = value
    return stats, counts


def _bucket_centres(limits: list[float], lo: float, hi: float) -> np.ndarray:
    """Each TensorBoard bucket's centre (geometric within one sign). The buckets either side of 0
    are 0: TensorFlow's writer puts zeros in the bucket ending at 0, torch's SummaryWriter (numpy's
    half-open [low, high) bins) in the one starting at 0, and both hold nothing else but values
    within ZERO_BUCKET of 0."""
    if not limits:
        return np.array([])
    lows = np.maximum(np.concatenate([[lo], limits[:-1]]), lo)
    highs = np.minimum(np.asarray(limits, dtype=np.float64), hi)
    same_sign = np.sign(lows) == np.sign(highs)
    centres = np.where(same_sign & (lows != 0), np.sign(highs) * np.sqrt(np.abs(lows * highs)), highs)
    at_zero = (np.asarray(limits) == 0.0) | ((lows == 0.0) & (highs <= ZERO_BUCKET))
    return np.where(at_zero, 0.0, centres)


def rebin(limits: list[float], counts: list[float], lo: float, hi: float) -> np.ndarray:
    """TensorBoard buckets (upper limits, counts; the first bucket starts at the minimum) on
    gradwatch's log-magnitude bins."""
    import torch

    from .capture.tensor_stats import log_magnitude_bins

    centres = _bucket_centres(limits, lo, hi)
    bins = log_magnitude_bins(torch.as_tensor(centres, dtype=torch.float64)).long().numpy()
    out = np.bincount(bins, weights=np.asarray(counts, dtype=np.float64), minlength=schema.HIST_LEN + 1)
    return np.rint(out[: schema.HIST_LEN]).astype(schema.HIST_DTYPE)


def run_name(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root).as_posix() if folder != root else root.resolve().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", relative).strip("-.") or "tensorboard"
    name = name if name[0].isalnum() else f"tb{name}"
    return name[:64]


def import_tensorboard(tb_logdir: str | Path, logdir: str | Path = "logs") -> list[Path]:
    """Turn every event-file folder under tb_logdir into a run folder under logdir; their paths."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ModuleNotFoundError:
        raise TensorBoardImportError("import-tensorboard needs the tensorboard package: pip install tensorboard") from None
    root = Path(tb_logdir)
    created = []
    for folder in find_event_dirs(root):
        acc = event_accumulator.EventAccumulator(
            str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
        acc.Reload()
        created.append(_write_run(acc, run_name(root, folder), folder, logdir))
    return created


def _write_run(acc, name: str, source: Path, logdir) -> Path:
    from .run import Run

    tags = acc.Tags()
    walls: list[float] = []
    run = Run(logdir, name=name, config={}, distributed=False)
    try:
        by_step: dict[int, list[tuple[str, float, float]]] = {}
        for tag in tags.get("scalars", []):
            scalar = gradwatch_name(tag)
            for event in acc.Scalars(tag):
                by_step.setdefault(event.step, []).append((scalar, float(event.value), event.wall_time))
        for step in sorted(by_step):
            for scalar, value, wall in by_step[step]:
                run._writer.add_scalars(int(step), {scalar: value}, wall)
                walls.append(wall)
        histogram_tags = [classify_histogram(t) for t in tags.get("histograms", [])]
        walls += _write_histograms(run, acc, histogram_tags)
        run.set_meta(integration="tensorboard", imported_from=str(source.resolve()))
        if walls:  # the recorded run's own start, not the import's (a writer-owned key)
            run._writer.set_meta(started=min(walls))
    except BaseException as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.finish("finished", ended=max(walls) if walls else None)
    return run.path


def _write_histograms(run, acc, histogram_tags: list[HistogramTag]) -> list[float]:
    tensors: dict[str, int] = {}
    descriptions = []
    records: dict[int, list] = {}
    walls: dict[int, float] = {}
    for h_tag in histogram_tags:
        events = acc.Histograms(h_tag.tag)
        if h_tag.tensor not in tensors:
            tensors[h_tag.tensor] = len(tensors) + 1
            if h_tag.kind == schema.KIND_ACTIVATION:  # a module's output: no shape of its own
                descriptions.append(dict(id=tensors[h_tag.tensor], name=h_tag.tensor, layer=h_tag.tensor, param="",
                                         role="output", module_type=activation_kind(h_tag.tensor), shape=[],
                                         numel=0, ord=len(descriptions), trainable=False))
            else:
                layer, param = split_param(h_tag.tensor)
                numel = int(events[0].histogram_value.num) if events else 0
                descriptions.append(dict(id=tensors[h_tag.tensor], name=h_tag.tensor, layer=layer, param=param,
                                         role="param", module_type="", shape=[numel], numel=numel,
                                         ord=len(descriptions), trainable=True))
        for event in events:
            stats, counts = histogram_stats(event.histogram_value)
            records.setdefault(event.step, []).append((tensors[h_tag.tensor], h_tag.kind, tuple(stats), counts))
            walls[event.step] = max(walls.get(event.step, 0.0), event.wall_time)
    if descriptions:
        run._writer.add_tensors(descriptions)
    for step in sorted(records):
        run._writer.add_layer_record(LayerRecord(int(step), walls[step], None, rows=records[step]))
    return list(walls.values())

"""`gradwatch import-tensorboard`: TensorBoard event files -> gradwatch run folders.

Each folder holding event files (`events.out.tfevents.*`) is one run, read with TensorBoard's own
event reader (`tensorboard.backend.event_processing.event_accumulator`), never a parser of ours:
- scalars become scalar series under gradwatch's names (`Loss/train` is `train_loss`, see
  scalar_names.py), at their steps and wall times;
- histograms written by `SummaryWriter.add_histogram` become per-tensor layer records: a tag with a
  gradient word (`grad`, `grads`, `gradient(s)`, as a path part or a `.grad` / `_grad` suffix) is
  the gradient of the parameter it names, any other tag a weight (`weights/`, `params/`,
  `parameters/` prefixes dropped). Norm, mean, std, min and max come exactly from the histogram's
  sum, sum of squares, count, min and max; the buckets are re-binned onto gradwatch's fixed
  log-magnitude bins at each bucket's geometric centre (TensorBoard's buckets are 10% wide, a
  tenth of one of our bins), the bucket ending at 0 counting as zeros. NaN/Inf counts are not in a
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
GRAD_WORDS = frozenset({"grad", "grads", "gradient", "gradients"})
WEIGHT_PREFIXES = frozenset({"weights", "weight", "params", "parameters", "param"})
PARAM_NAMES = frozenset({"weight", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "in_proj_weight",
                         "in_proj_bias", "gamma", "beta", "kernel"})


class TensorBoardImportError(ValueError):
    """Bad input to import-tensorboard (no such folder, no event files, tensorboard missing)."""


@dataclass(frozen=True)
class HistogramTag:
    tag: str
    tensor: str  # the parameter it describes: 'fc1.weight'
    kind: str  # schema.KIND_GRAD or schema.KIND_WEIGHT


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
    if parts and parts[0].lower() in WEIGHT_PREFIXES and len(parts) > 1:
        parts = parts[1:]
    name = ".".join(parts) or tag
    for suffix in (".grad", "_grad", ".gradient", "_gradient"):
        if name.lower().endswith(suffix):
            is_grad, name = True, name[: -len(suffix)]
    return HistogramTag(tag, name, schema.KIND_GRAD if is_grad else schema.KIND_WEIGHT)


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


def rebin(limits: list[float], counts: list[float], lo: float, hi: float) -> np.ndarray:
    """TensorBoard buckets (upper limits, counts; the first bucket starts at the minimum) on
    gradwatch's log-magnitude bins."""
    import torch

    from .capture.tensor_stats import log_magnitude_bins

    lows = np.concatenate([[lo], limits[:-1]]) if limits else np.array([])
    highs = np.minimum(np.asarray(limits, dtype=np.float64), hi) if limits else np.array([])
    lows = np.maximum(lows, lo)
    same_sign = np.sign(lows) == np.sign(highs)
    centres = np.where(same_sign & (lows != 0), np.sign(highs) * np.sqrt(np.abs(lows * highs)), highs)
    centres = np.where(np.asarray(limits) == 0.0, 0.0, centres) if limits else centres
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

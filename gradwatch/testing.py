"""Realistic run folders for the dashboard's tests and benchmarks, written with the real RunWriter.

Torch-free: the statistics are synthesised with numpy to look like what the capture probe records
for an nn.Sequential MLP (Linear layers 'net.0', 'net.2', ... with activations 'net.1', 'net.3', ...).

    make_run(logdir, "overfit", steps=300, pathology="overfit")       # a finished run
    with LiveRun(logdir, "live", layers=3) as live: live.start(...)    # a run written in the background
    make_corrupt_run(logdir, "broken")                                 # a folder that is not a run log

Pathologies shape the numbers the diagnosis rules look at: "overfit" (validation loss turns up after
a few epochs), "exploding" (gradient norms grow by orders of magnitude until NaN; the run fails),
"vanishing" (deep sigmoid: the first layers' gradients are 1e-6 smaller, outputs saturate),
"dead" (ReLU units that never fire), None (healthy).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from gradwatch.trainer.runlog import schema
from gradwatch.trainer.runlog.reader import current_process_identity
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter

PATHOLOGIES = (None, "overfit", "exploding", "vanishing", "dead")
_EDGES = schema.hist_magnitude_edges()
_CENTRES = (_EDGES[:-1] + _EDGES[1:]) / 2


class RunModel:
    """The synthetic network and training curve of one fixture run: per-step numbers on demand."""

    def __init__(self, layers: int, steps: int, *, pathology: str | None = None, epochs: int = 10,
                 width: int = 64, inputs: int = 100, seed: int = 0, activation: str | None = None):
        if pathology not in PATHOLOGIES:
            raise ValueError(f"pathology must be one of {PATHOLOGIES}, got {pathology!r}")
        self.layers = layers
        self.steps = max(1, steps)
        self.pathology = pathology
        self.epochs = max(1, min(epochs, self.steps))
        self.steps_per_epoch = max(1, self.steps // self.epochs)
        self.rng = np.random.default_rng(seed)
        self.activation = activation or ("Sigmoid" if pathology == "vanishing" else "ReLU")
        # Shapes: inputs -> width ... width -> 2 classes.
        dims = [inputs] + [width] * (layers - 1) + [2]
        self.shapes = [(dims[i + 1], dims[i]) for i in range(layers)]
        self.linear_names = [f"net.{2 * i}" for i in range(layers)]
        self.act_names = [f"net.{2 * i + 1}" for i in range(layers - 1)]
        self.nonfinite_from = int(self.steps * 0.9) if pathology == "exploding" else None

    # ---- tensors ---------------------------------------------------------------------------
    def tensors(self, *, bias: bool = True, activations: bool = True) -> list[dict]:
        out = []
        for i, (layer, shape) in enumerate(zip(self.linear_names, self.shapes)):
            params = [("weight", list(shape))] + ([("bias", [shape[0]])] if bias else [])
            for param, pshape in params:
                out.append(dict(name=f"{layer}.{param}", layer=layer, param=param, role="param",
                                module_type="Linear", shape=pshape, numel=int(np.prod(pshape)), ord=2 * i,
                                trainable=True))
            if activations and i < len(self.act_names):
                out.append(dict(name=self.act_names[i], layer=self.act_names[i], param="", role="output",
                                module_type=self.activation, shape=[], numel=0, ord=2 * i + 1, trainable=False))
        for k, t in enumerate(out, start=1):
            t["id"] = k
        return out

    # ---- per-step numbers --------------------------------------------------------------------
    def progress(self, step: int) -> float:
        return step / max(1, self.steps - 1)

    def grad_norms(self, step: int) -> np.ndarray:
        """Gradient norm of each Linear layer's weight (forward order)."""
        depth = np.arange(self.layers)
        wiggle = 1 + 0.2 * np.sin(step * 0.37 + depth)
        if self.pathology == "exploding":
            # Grows ~8 decades over the run, worst in the first layers (gradients multiply backwards).
            base = 0.5 * 10 ** (8 * self.progress(step)) * 2.0 ** (self.layers - 1 - depth)
            norms = base * wiggle
            if self.nonfinite_from is not None and step >= self.nonfinite_from:
                norms = np.full(self.layers, np.inf)
            return norms
        if self.pathology == "vanishing":
            return 1e-2 * 10.0 ** (-1.2 * (self.layers - 1 - depth)) * wiggle
        return 0.05 * (1.2 - 0.5 * self.progress(step)) * wiggle

    def weight_stats(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, std, norm) of each Linear layer's weight."""
        depth = np.arange(self.layers)
        numel = np.array([r * c for r, c in self.shapes], dtype=float)
        std0 = 1 / np.sqrt(np.array([c for _, c in self.shapes], dtype=float))
        if self.pathology == "overfit":
            # The lesson's figure: without regularisation the weights keep spreading out.
            std = std0 * (1 + 1.5 * self.progress(step))
        elif self.pathology == "exploding":
            std = std0 * (1 + 50 * self.progress(step) ** 4)
        else:
            std = std0 * (1 + 0.2 * self.progress(step))
        mean = 0.002 * np.sin(depth + step / max(1, self.steps_per_epoch)) * std / std0
        norm = np.sqrt(numel * (std**2 + mean**2))
        return mean, std, norm

    def update_ratios(self, step: int) -> np.ndarray:
        depth = np.arange(self.layers)
        if self.pathology == "exploding":
            return 1e-3 * 10 ** (4 * self.progress(step)) * (1 + 0.1 * depth)
        if self.pathology == "vanishing":
            return 1e-3 * 10.0 ** (-1.2 * (self.layers - 1 - depth))
        return 1e-3 * (1.5 - self.progress(step)) * (1 + 0.1 * np.cos(step * 0.1 + depth))

    def activation_fractions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(saturated_frac, dead_frac) of each activation module."""
        n = len(self.act_names)
        depth = np.arange(n)
        if self.activation in ("Sigmoid", "Tanh"):
            saturated = np.clip(0.6 + 0.3 * self.progress(step) - 0.02 * depth, 0, 1) \
                if self.pathology == "vanishing" else np.full(n, 0.02)
            return saturated, np.full(n, np.nan)
        dead = np.full(n, 0.02 + 0.01 * self.progress(step))
        if self.pathology == "dead":
            dead = np.clip(0.3 + 0.6 * self.progress(step) + 0.0 * depth, 0, 0.95)
        return np.full(n, np.nan), dead

    def loss(self, step: int) -> float:
        p = self.progress(step)
        noise = 0.03 * math.sin(step * 1.7)
        if self.pathology == "exploding":
            if self.nonfinite_from is not None and step >= self.nonfinite_from:
                return float("nan")
            return 0.69 + 10 ** (6 * p) * 0.01 + noise
        if self.pathology == "vanishing":
            return 0.693 - 0.01 * p + noise / 10
        if self.pathology == "overfit":
            return 0.7 * math.exp(-5 * p) + 0.005 + noise / 5
        return 0.7 * math.exp(-2 * p) + 0.25 + noise

    def epoch_metrics(self, epoch: int) -> dict:
        """Scalars logged at the end of `epoch` (1-based)."""
        e = epoch / self.epochs
        if self.pathology == "overfit":
            val_loss = 0.55 - 0.25 * min(e, 0.3) / 0.3 + max(0.0, e - 0.3) * 1.2
            train_loss = 0.7 * math.exp(-5 * e) + 0.005
            return dict(epoch=epoch, epoch_train_loss=train_loss, train_acc=min(1.0, 0.7 + 0.3 * e),
                        val_loss=val_loss, val_acc=0.74 + 0.04 * min(e, 0.3) / 0.3 - 0.03 * max(0.0, e - 0.3))
        if self.pathology == "exploding":
            finite = e < 0.9
            nan = float("nan")
            return dict(epoch=epoch, epoch_train_loss=0.69 + 10 ** (6 * e) * 0.01 if finite else nan,
                        train_acc=0.5, val_loss=0.7 + e if finite else nan, val_acc=0.5)
        if self.pathology == "vanishing":
            return dict(epoch=epoch, epoch_train_loss=0.693, train_acc=0.5, val_loss=0.694, val_acc=0.5)
        train_loss = 0.7 * math.exp(-2 * e) + 0.25
        return dict(epoch=epoch, epoch_train_loss=train_loss, train_acc=0.6 + 0.25 * e,
                    val_loss=train_loss + 0.05, val_acc=0.58 + 0.22 * e)

    def grad_norm_total(self, step: int) -> float:
        g = self.grad_norms(step)
        return float(np.sqrt(np.sum(g**2))) if np.all(np.isfinite(g)) else float("inf")


def hist_counts(numel: int, magnitude: float, spread: float = 1.0, zero_frac: float = 0.0) -> np.ndarray:
    """Counts over the global log-magnitude bins for values around `magnitude`, both signs."""
    counts = np.zeros(schema.HIST_LEN, dtype=np.int64)
    sample = min(numel, schema.HIST_SAMPLE_SIZE)
    if not math.isfinite(magnitude) or magnitude <= 0:
        counts[schema.HIST_ZERO_INDEX] = sample
        return counts
    centre = math.log10(magnitude)
    weights = np.exp(-0.5 * ((_CENTRES - centre) / max(spread, 0.05)) ** 2)
    weights /= weights.sum()
    zeros = int(round(sample * zero_frac))
    per_sign = np.floor(weights * (sample - zeros) / 2).astype(np.int64)
    counts[: schema.HIST_BINS_PER_SIGN] = per_sign[::-1]
    counts[schema.HIST_ZERO_INDEX] = zeros
    counts[schema.HIST_ZERO_INDEX + 1:] = per_sign
    return counts


def stat_row(**values) -> tuple:
    """One stats tuple in the schema's field order (schema.STAT_FIELDS); statistics not given are None."""
    unknown = set(values) - set(schema.STAT_FIELDS)
    if unknown:
        raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(schema.STAT_FIELDS)}")
    return tuple(values.get(name) for name in schema.STAT_FIELDS)


def layer_rows(model: RunModel, tensor_ids: dict, step: int, *, bias: bool = True, activations: bool = True,
               histograms: bool = True) -> list:
    """One logged step's rows for LayerRecord: (tensor_id, kind, stats tuple, hist or None)."""
    rows = []
    grads = model.grad_norms(step)
    w_mean, w_std, w_norm = model.weight_stats(step)
    ratios = model.update_ratios(step)
    nonfinite = model.nonfinite_from is not None and step >= model.nonfinite_from
    for i, layer in enumerate(model.linear_names):
        numel = model.shapes[i][0] * model.shapes[i][1]
        g = float(grads[i])
        per_elem = g / math.sqrt(numel) if math.isfinite(g) else math.inf
        nan_count = numel // 10 if nonfinite else 0
        g_stats = stat_row(norm=g, mean=0.0, std=per_elem, min=-3 * per_elem, max=3 * per_elem, nan_count=nan_count,
                           inf_count=0 if not nonfinite else 1, zero_frac=0.0)
        w_stats = stat_row(norm=float(w_norm[i]), mean=float(w_mean[i]), std=float(w_std[i]),
                           min=float(w_mean[i] - 3 * w_std[i]), max=float(w_mean[i] + 3 * w_std[i]), nan_count=0,
                           inf_count=0, zero_frac=0.0, update_ratio=float(ratios[i]))
        g_hist = hist_counts(numel, per_elem) if histograms else None
        w_hist = hist_counts(numel, float(w_std[i]), spread=0.6) if histograms else None
        rows.append((tensor_ids[f"{layer}.weight"], schema.KIND_GRAD, g_stats, g_hist))
        rows.append((tensor_ids[f"{layer}.weight"], schema.KIND_WEIGHT, w_stats, w_hist))
        if bias:
            b = g * 0.1
            rows.append((tensor_ids[f"{layer}.bias"], schema.KIND_GRAD,
                         stat_row(norm=b, mean=0.0, std=b / 8, min=-b / 4, max=b / 4, nan_count=0, inf_count=0,
                                  zero_frac=0.0),
                         hist_counts(model.shapes[i][0], b / 8) if histograms else None))
            rows.append((tensor_ids[f"{layer}.bias"], schema.KIND_WEIGHT,
                         stat_row(norm=0.1, mean=0.0, std=0.01, min=-0.03, max=0.03, nan_count=0, inf_count=0,
                                  zero_frac=0.0, update_ratio=float(ratios[i])),
                         hist_counts(model.shapes[i][0], 0.01) if histograms else None))
    if activations:
        saturated, dead = model.activation_fractions(step)
        for j, name in enumerate(model.act_names):
            rows.append((tensor_ids[name], schema.KIND_ACTIVATION,
                         stat_row(norm=1.0, mean=0.3, std=0.2, min=0.0, max=1.0, nan_count=0, inf_count=0,
                                  zero_frac=float(0.5 if math.isnan(dead[j]) else dead[j]),
                                  saturated_frac=float(saturated[j]), dead_frac=float(dead[j])), None))
    return rows


def _meta(model: RunModel, run_id: str, name: str, *, preset: str | None, every: int, started: float,
          config: dict | None, dataset: dict | None, live: bool) -> dict:
    full_config = {
        "preset": preset, "model": "mlp", "depth": model.layers - 1, "width": model.shapes[0][0],
        "activation": model.activation.lower(), "optimizer": "sgd" if model.pathology else "adam",
        "lr": 0.05 if model.pathology == "exploding" else 1e-3, "batch_size": 64, "epochs": model.epochs,
        "dropout": 0.0, "l1": 0.0, "l2": 0.0, "every": every, "clip_norm": None, "batchnorm": False,
    }
    full_config.update(config or {})
    identity = current_process_identity() if live else {"pid": 0, "pid_start_ticks": None,
                                                         "host": socket.gethostname()}
    params = sum(r * c + r for r, c in model.shapes)
    return dict(
        run_id=run_id, name=name, config=full_config,
        dataset=dataset or {"name": "tweets-builtin", "source": "built-in", "train": 2400, "val": 300,
                            "test": 300, "classes": ["negative", "positive"]},
        status="running", started=started, ended=None, error=None, heartbeat=started,
        python="3.11", torch=None, gradwatch="0.1.0", git_commit=None, argv=["fixture"], world_size=1,
        model_summary={"class": "Sequential", "parameters": params, "trainable": params,
                       "tensors": 2 * model.layers, "text": "Sequential(\n" + "\n".join(
                           f"  ({2 * i}): Linear(in_features={c}, out_features={r})"
                           for i, (r, c) in enumerate(model.shapes)) + "\n)"},
        watch={"every": every, "histograms": True, "activations": True, "update_ratio": True},
        **identity,
    )


def _write_step(writer: RunWriter, model: RunModel, tensor_ids: dict, step: int, wall: float, *, every: int,
                hist: bool, bias: bool, activations: bool) -> None:
    scalars = {"train_loss": model.loss(step), "grad_norm_total": model.grad_norm_total(step), "lr": 1e-3}
    writer.add_scalars(step, scalars, wall)
    if step % every == 0:
        rows = layer_rows(model, tensor_ids, step, bias=bias, activations=activations, histograms=hist)
        writer.add_layer_record(LayerRecord(step, wall, 0.01, rows=rows))
    if (step + 1) % model.steps_per_epoch == 0:
        epoch = (step + 1) // model.steps_per_epoch
        if epoch <= model.epochs:
            writer.add_scalars(step, model.epoch_metrics(epoch), wall)


def make_run(
    logdir: str | os.PathLike,
    name: str = "run",
    *,
    steps: int = 200,
    layers: int = 4,
    every: int = 1,
    epochs: int = 10,
    pathology: str | None = None,
    status: str | None = None,
    preset: str | None = None,
    config: dict | None = None,
    dataset: dict | None = None,
    histograms: bool = True,
    hist_every: int = 1,
    bias: bool = True,
    activations: bool = True,
    started: float | None = None,
    step_seconds: float = 0.05,
    results: bool = True,
    flags: list[dict] | None = None,
    notes: list[dict] | None = None,
    run_id: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a complete run folder `logdir/run_id` (run_id defaults to `name`) and return its path.

    status defaults to "failed" for the exploding pathology (the trainer halts on NaN), else "finished".
    hist_every: histograms on every N-th logged step only (big benchmark runs).
    """
    run_id = run_id or name
    root = Path(logdir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / run_id
    path.mkdir()
    model = RunModel(layers, steps, pathology=pathology, epochs=epochs, seed=seed)
    started = time.time() - steps * step_seconds - 5 if started is None else started
    writer = RunWriter(path, max_pending_records=1 << 20)
    try:
        writer.set_meta_now(**_meta(model, run_id, name, preset=preset or pathology, every=every,
                                    started=started, config=config, dataset=dataset, live=False))
        tensors = model.tensors(bias=bias, activations=activations)
        writer.add_tensors(tensors)
        ids = {t["name"]: t["id"] for t in tensors}
        last = steps
        if pathology == "exploding" and status in (None, "failed"):
            last = min(steps, model.nonfinite_from + 3)
        for step in range(last):
            hist = histograms and (step // every) % hist_every == 0
            _write_step(writer, model, ids, step, started + step * step_seconds, every=every, hist=hist,
                        bias=bias, activations=activations)
            if step % 2000 == 1999:
                writer.flush()
        for flag in flags or []:
            writer.add_flag(int(flag.get("first_step") or 0), flag)
        final = status or ("failed" if pathology == "exploding" else "finished")
        error = None
        if final == "failed":
            error = f"training loss became NaN at step {model.nonfinite_from} (halt_on_nonfinite)"
        end = dict(status=final, ended=started + last * step_seconds, error=error, heartbeat=time.time())
        if results and final == "finished":
            # The keys the trainer writes (trainer/train/loop.py, read by trainer.derived.test_metrics).
            end["results"] = {"test_accuracy": 0.78, "test_macro_f1": 0.77, "test_loss": 0.49,
                              "confusion_matrix": [[120, 30], [36, 114]], "class_names": ["negative", "positive"]}
        writer.set_meta_now(**end)
    finally:
        writer.close()
    for note in notes or []:
        from gradwatch.trainer.runlog import add_note

        add_note(path, note["text"], author=note.get("author", "tester"), step=note.get("step"),
                 layer=note.get("layer"))
    return path


def make_corrupt_run(logdir: str | os.PathLike, name: str = "corrupt") -> Path:
    """A run folder whose database is not SQLite at all (a truncated copy, a foreign file)."""
    path = Path(logdir) / name
    path.mkdir(parents=True)
    (path / schema.DB_FILENAME).write_bytes(b"this is not a database" * 50)
    return path


class LiveRun:
    """A run being written by a background thread, as a trainer would: status "running", this
    process's pid as the writer, one optimizer step every `step_interval_s` seconds.

        with LiveRun(logdir, "live") as live:
            live.start()            # background writing
            ...                     # watch it in the dashboard
        # leaving the block stops the thread and marks the run finished
    """

    def __init__(self, logdir: str | os.PathLike, name: str = "live", *, layers: int = 3, every: int = 1,
                 steps_per_epoch: int = 20, step_interval_s: float = 0.1, pathology: str | None = None,
                 total_steps: int = 100_000, flush_interval_s: float = 0.1, run_id: str | None = None,
                 histograms: bool = True):
        self.run_id = run_id or name
        self.path = Path(logdir) / self.run_id
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        self.model = RunModel(layers, total_steps, pathology=pathology,
                              epochs=max(1, total_steps // steps_per_epoch))
        self.every = every
        self.histograms = histograms
        self.step_interval_s = step_interval_s
        self.writer = RunWriter(self.path, flush_interval_s=flush_interval_s)
        self.writer.set_meta_now(**_meta(self.model, self.run_id, name, preset=pathology, every=every,
                                         started=time.time(), config=None, dataset=None, live=True))
        tensors = self.model.tensors()
        self.writer.add_tensors(tensors)
        self._ids = {t["name"]: t["id"] for t in tensors}
        self.step = 0
        self.walls: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write_step(self, extra_scalars: dict | None = None) -> int:
        """Write the next optimizer step now (scalars + layer record); returns its step number."""
        step = self.step
        wall = time.time()
        _write_step(self.writer, self.model, self._ids, step, wall, every=self.every, hist=self.histograms,
                    bias=True, activations=True)
        if extra_scalars:
            self.writer.add_scalars(step, extra_scalars, wall)
        self.walls[step] = wall
        self.step += 1
        return step

    def start(self) -> LiveRun:
        def loop():
            while not self._stop.is_set():
                self.write_step()
                self._stop.wait(self.step_interval_s)

        self._thread = threading.Thread(target=loop, name=f"live-run-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, status: str = "finished") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.writer is not None:
            self.writer.set_meta_now(status=status, ended=time.time())
            self.writer.close()
            self.writer = None

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""`Run`: the Python API a user's own training loop calls. One Run writes one run folder.

    with Run(logdir="logs", name="my-experiment", config={...}) as run:
        run.watch(model, every=10)
        ...; loss.backward(); optimizer.step()
        run.log(step, train_loss=loss.item())
"""

from __future__ import annotations

import json
import math
import numbers
import os
import platform
import secrets
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gradwatch._version import __version__ as GRADWATCH_VERSION

from .runlog import schema
from .runlog.reader import current_process_identity
from .runlog.writer import RunWriter


class RunSetupError(ValueError):
    """Bad arguments to Run or Run.watch; raised before anything is created or hooked."""


def _validate_name(name: str) -> str:
    if not schema.is_valid_run_name(name):
        raise RunSetupError(
            f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no path separators, spaces or '..')"
        )
    return name


def _prepare_logdir(logdir: str | os.PathLike) -> Path:
    root = Path(logdir)
    if root.exists() and not root.is_dir():
        raise RunSetupError(f"logdir {str(root)!r} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunSetupError(f"cannot create logdir {str(root)!r}: {exc.strerror or exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunSetupError(f"logdir {str(root)!r} is not writable")
    return root


def _config_json(config: Any) -> dict:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RunSetupError(f"config must be a dict, got {type(config).__name__}")
    # Round-trip now so a config that cannot be stored fails here, not in the writer thread.
    return json.loads(json.dumps(config, default=str))


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=2
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _distributed() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torch.distributed."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Run:
    """A run folder being written. Use as a context manager: the status follows how it exits."""

    def __init__(
        self,
        logdir: str | os.PathLike = "logs",
        name: str = "run",
        config: dict | None = None,
        *,
        dataset: dict | None = None,
        flush_interval_s: float | None = None,
    ):
        name = _validate_name(name)
        config = _config_json(config)
        self.rank, self.world_size = _distributed()
        root = _prepare_logdir(logdir) if self.rank == 0 else Path(logdir)
        run_id = self._agree_on_run_id(f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{secrets.token_hex(2)}")
        self.id = run_id
        self.path = root / run_id
        kwargs = {} if flush_interval_s is None else {"flush_interval_s": flush_interval_s}
        self._probe = None
        self._closed = False
        self.started = time.time()
        if self.rank == 0:
            # Built in a hidden folder (readers skip dot-entries) and renamed when its metadata
            # is complete, so a listing never sees a half-made run.
            building = root / f".building-{run_id}"
            building.mkdir()
            writer = RunWriter(building, create=True, **kwargs)
            writer.set_meta_now(
                run_id=run_id,
                name=name,
                config=config,
                dataset=dataset,
                status="running",
                started=self.started,
                ended=None,
                error=None,
                python=platform.python_version(),
                torch=_torch_version(),
                gradwatch=GRADWATCH_VERSION,
                git_commit=_git_commit(Path.cwd()),
                argv=sys.argv,
                world_size=self.world_size,
                heartbeat=self.started,
                **current_process_identity(),
            )
            writer.close()
            os.rename(building, self.path)
            self._writer = RunWriter(self.path, create=False, owner=True, **kwargs)
        self._barrier()
        if self.rank != 0:
            self._writer = RunWriter(self.path, create=False, owner=False, **kwargs)

    # ---- distributed plumbing -------------------------------------------------------------
    def _agree_on_run_id(self, proposed: str) -> str:
        if self.world_size == 1:
            return proposed
        import torch.distributed as dist

        box = [proposed]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # ---- the API --------------------------------------------------------------------------
    def watch(
        self,
        model,
        every: int | str = 10,
        *,
        budget: float | None = None,
        histograms: bool = True,
        activations: bool = True,
        update_ratio: bool = True,
    ):
        """Hook every layer of `model`; record statistics every `every` optimizer steps.

        every="auto" chooses the cadence from measured cost: capture takes at most `budget`
        (default 0.02) of training time; the cadence is re-checked as the run goes and written
        as the `capture_every` scalar. Every step, whatever the cadence, records the sentinels
        (total gradient norm, non-finite gradient count).

        Under DDP only rank 0 records layer statistics (gradients are identical after all-reduce);
        other ranks return None and log scalars only.
        """
        from torch import nn

        if not isinstance(model, nn.Module):
            raise RunSetupError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if every != "auto" and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise RunSetupError(
                f'every must be an integer >= 1 (log every N optimizer steps) or "auto", got {every!r}')
        if budget is not None:
            if every != "auto":
                raise RunSetupError(f'budget applies to every="auto" only (got every={every!r})')
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < 1:
                raise RunSetupError(f"budget must be a fraction of training time in (0, 1), e.g. 0.02; got {budget!r}")
        if self._probe is not None:
            raise RunSetupError("this run already watches a model; use one Run per model")
        if self.rank != 0:
            return None
        from .capture.probe import Probe

        self._probe = Probe(
            model, self._writer, every=every, budget=budget, histograms=histograms, activations=activations,
            update_ratio=update_ratio,
        )
        watch = {"every": every, "histograms": histograms, "activations": activations, "update_ratio": update_ratio}
        if every == "auto":
            watch["budget"] = 0.02 if budget is None else float(budget)
        self._writer.set_meta(
            watch=watch,
            model_summary=_model_summary(model),
        )
        return self._probe

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"run {self.id} is finished; nothing more can be recorded")

    def log(self, step: int, **scalars: float) -> None:
        """Record scalars (any names) at `step`; NaN and +/-Inf are kept as such."""
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        values = {}
        for key, value in scalars.items():
            if hasattr(value, "item") and callable(value.item):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"scalar {key!r} must be a number, got {value!r}")
            values[key] = float(value)
        if values:
            self._writer.add_scalars(int(step), values, time.time(), self.rank)

    def set_meta(self, **items: Any) -> None:
        """Store extra metadata (results, dataset, model summary) with the run."""
        self._check_open()
        if self.rank == 0:
            self._writer.set_meta(**json.loads(json.dumps(items, default=_json_default)))

    def add_flag(self, step: int, flag: dict) -> None:
        """Store a diagnosis flag raised live at `step`."""
        self._check_open()
        if self.rank == 0:
            self._writer.add_flag(step, json.loads(json.dumps(flag, default=_json_default)))

    @property
    def probe(self):
        return self._probe

    def flush(self) -> None:
        """Block until everything recorded so far is on disk (and visible to readers)."""
        if self._probe is not None:
            self._probe.finish_pending()
        self._writer.flush()

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """Close the run with a final status; idempotent."""
        if self._closed:
            return
        if status not in schema.STATUSES:
            raise ValueError(f"status must be one of {schema.STATUSES}, got {status!r}")
        self._closed = True
        if self._probe is not None:
            self._probe.close()
        try:
            if self.rank == 0:
                self._writer.set_meta_now(status=status, ended=time.time(), error=error)
            else:
                self._writer.flush()
        finally:
            self._writer.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("stopped", error="interrupted (KeyboardInterrupt)")
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb)[-3:]).strip()
            self.finish("failed", error=f"{exc_type.__name__}: {exc}\n{text}")
        return False


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None)


def _model_summary(model) -> dict:
    from .capture.probe import collect_params, unwrap_model

    inner = unwrap_model(model)
    params = collect_params(inner)
    return {
        "class": type(inner).__name__,
        "parameters": int(sum(p.tensor.numel() for p in params)),
        "trainable": int(sum(p.tensor.numel() for p in params if p.tensor.requires_grad)),
        "tensors": len(params),
        "text": str(inner)[:20000],
    }

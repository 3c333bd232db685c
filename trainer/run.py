"""`Run`: the Python API a user's own training loop calls. One Run writes one run folder.

    with Run(logdir="logs", name="my-experiment", config={...}) as run:
        run.watch(model, every=10)
        ...; loss.backward(); optimizer.step()
        run.log(step, train_loss=loss.item())

Without `with`, a run left open is finished at interpreter exit, and marked failed by an uncaught
exception (run_exit.py). `run.step()` marks a step of a hand-written update; `run.unwatch()` removes
every hook.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from gradwatch._version import __version__ as GRADWATCH_VERSION

from . import run_exit
from .runlog import schema, stores, validate
from .runlog.process import process_alive
from .runlog.reader import current_process_identity
from .runlog.writer import ON_ERROR_CHOICES, RunWriteError, RunWriter, describe_write_error

# A hidden ".building-<pid>@<host>-<run id>" folder whose process on this host is gone was left by a
# crash (kill -9, full disk) during run creation; one older than STALE_BUILDING_MAX_S (another
# host's, on shared storage) is removed too.
STALE_BUILDING_MAX_S = 24 * 3600.0
# A run id is <time to the second>-<name>-<random hex>; a taken id is retried with fresh randomness.
RUN_ID_TOKEN_BYTES = 3
RUN_ID_ATTEMPTS = 20
BUILDING_PREFIX = ".building-"


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
        on_write_error: str = "raise",
        distributed: bool = True,
    ):
        """on_write_error: "raise" (default) stops training at the first failed write (a full disk)
        with RunWriteError and the run marked failed; "warn" warns once and goes on, counting the
        records lost (meta "lost_records"). `distributed=False`: this process records alone, with no
        collective calls, even inside torch.distributed (integrations that run on rank zero only)."""
        name = _validate_name(name)
        config = _config_json(config)
        if on_write_error not in ON_ERROR_CHOICES:
            raise RunSetupError(f"on_write_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_write_error!r}")
        self.rank, self.world_size = _distributed() if distributed else (0, 1)
        # A URL or a network filesystem gets segments published from a node-local spool (SQLite's WAL
        # needs one host); a local path is an ordinary run folder, as always.
        self.location = stores.classify(logdir)
        self._publisher = None
        store = _open_team_store(self.location) if self.location.remote else None
        if store is not None:
            from .runlog import spool

            root = spool.spool_root()
            if self.rank == 0:
                root = _prepare_logdir(root)
        else:
            root = _prepare_logdir(logdir) if self.rank == 0 else Path(logdir)

        def folder_of(run_id: str, rank: int = self.rank) -> Path:
            return spool.spool_dir(root, run_id, rank) if store is not None else root / run_id

        kwargs = {} if flush_interval_s is None else {"flush_interval_s": flush_interval_s}
        kwargs["on_error"] = on_write_error
        self._probe = None
        self._closed = False
        self._finished = False
        self.started = time.time()
        run_id = None
        if self.rank == 0:
            remove_stale_building(root)
            try:
                run_id = self._create_unique(root, name, config, dataset, kwargs, folder_of)
            except (OSError, sqlite3.Error, RunWriteError) as exc:
                raise RunSetupError(f"cannot create the run folder: {describe_write_error(exc, root)}") from None
        # Every rank learns the id rank 0 actually created (it may have retried after a collision).
        self.id = run_id = self._agree_on_run_id(run_id)
        self.path = folder_of(run_id)
        # Where readers find the run: LOGDIR_URL/RUN_ID for a published run (`gradwatch inspect` takes it).
        self.url = f"{self.location.given.rstrip('/')}/{run_id}" if store is not None else None
        if self.rank == 0:
            self._writer = RunWriter(self.path, create=False, owner=True, **kwargs)
        self._barrier()
        if self.rank != 0 and store is not None:
            _prepare_logdir(root)
            self.path.mkdir(exist_ok=True)  # each rank spools on its own node: its own database
            self._writer = RunWriter(self.path, create=True, owner=False, **kwargs)
        elif self.rank != 0:
            self._writer = RunWriter(self.path, create=False, owner=False, **kwargs)
        if store is not None:
            self._start_publishing(store, str(logdir), root)
        run_exit.track(self)

    def _create_unique(self, root: Path, name: str, config: dict, dataset, kwargs: dict, folder_of) -> str:
        """Create the run folder under a fresh id, retrying with a new one when another run took it
        (a sweep starting many runs of one name within a second); returns the id."""
        for _ in range(RUN_ID_ATTEMPTS):
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{secrets.token_hex(RUN_ID_TOKEN_BYTES)}"
            if os.path.lexists(folder_of(run_id)):
                continue
            try:
                self._create(root, run_id, folder_of(run_id), name, config, dataset, kwargs)
            except OSError as exc:
                # The final rename found the id taken meanwhile (a folder of another run is never empty).
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and os.path.lexists(folder_of(run_id)):
                    continue
                raise
            return run_id
        raise OSError(errno.EEXIST, f"no free run id for {name!r} after {RUN_ID_ATTEMPTS} attempts")

    def _start_publishing(self, store, logdir: str, spool_root: Path) -> None:
        from .runlog import spool
        from .runlog.publisher import Publisher, write_origin

        write_origin(self.path, logdir, self.id, self.rank)
        self._publisher = Publisher(self.path, store, self.id, self.rank)
        if self.rank == 0:
            print(f"gradwatch: run {self.id} -> {self.location.given}: segments, because the logdir is "
                  f"{self.location.reason}; SQLite in the local spool {self.path}", file=sys.stderr, flush=True)
            spool.publish_leftovers(spool_root, lambda url: stores.open_store(stores.classify(url)))

    def _create(self, root: Path, run_id: str, target: Path, name: str, config: dict, dataset, kwargs: dict) -> None:
        """Build the run folder hidden (readers skip dot-entries), rename it when its metadata is
        complete: a listing never sees a half-made run, and a failure leaves nothing behind."""
        building = root / f"{BUILDING_PREFIX}{os.getpid()}@{socket.gethostname()}-{run_id}"
        writer = None
        try:
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
            writer = None
            os.rename(building, target)  # fails (ENOTEMPTY) if another run took the id meanwhile
        except BaseException:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            shutil.rmtree(building, ignore_errors=True)
            raise

    # ---- distributed plumbing -------------------------------------------------------------
    def _agree_on_run_id(self, proposed: str | None) -> str:
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
        step_offset: int = 0,
    ):
        """Hook every layer of `model`; record statistics every `every` optimizer steps.

        every="auto" chooses the cadence from measured cost: capture takes at most `budget`
        (default 0.02) of training time; the cadence is re-checked as the run goes and written
        as the `capture_every` scalar. Every step, whatever the cadence, records the sentinels
        (total gradient norm, non-finite gradient count).

        `step_offset` numbers the recorded steps as a framework does (HF Trainer: 1 for the first
        optimizer step); integrations set it, a plain loop leaves it at 0.

        Under DDP only rank 0 records layer statistics (gradients are identical after all-reduce);
        other ranks return None and log scalars only. Under FSDP2 (`fully_shard`) and FSDP1
        (`FullyShardedDataParallel`: FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD) every rank measures its shard
        and rank 0 records the combined statistics: watch on every rank.
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
        from .capture import sharded

        if self.rank != 0 and not sharded.every_rank_measures(model):
            return None
        from .capture.probe import Probe

        self._probe = Probe(
            model, self._writer, every=every, budget=budget, histograms=histograms,
            activations=activations and self.rank == 0, update_ratio=update_ratio, step_offset=step_offset,
        )
        if self.rank != 0:
            return self._probe
        # first_step: the number of the first optimizer step (1 under HF), so "steps" counts steps.
        watch = {"every": every, "histograms": histograms, "activations": activations, "update_ratio": update_ratio,
                 "first_step": int(step_offset)}
        if every == "auto":
            watch["budget"] = 0.02 if budget is None else float(budget)
        self._writer.set_meta(
            watch=watch,
            model_summary=_model_summary(model),
        )
        return self._probe

    def unwatch(self) -> None:
        """Finish the pending record and remove every hook gradwatch put on the model and the
        optimizers; the run stays open for scalars, and another model can be watched."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def step(self) -> None:
        """Mark one optimizer step of a hand-written update (no torch optimizer): call it after
        updating the weights, before zeroing the gradients. Ignored (with a warning) when the
        steps are already counted from a torch optimizer."""
        self._check_open()
        if self._probe is not None:
            self._probe.mark_step()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"run {self.id} is finished; nothing more can be recorded")

    def log(self, step: int, **scalars: float) -> None:
        """Record scalars (any names) at `step`; NaN and +/-Inf are kept as such."""
        self._check_open()
        step = _checked_step(step)
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
        """Store extra metadata (results, dataset, model summary) with the run. Keys gradwatch keeps
        itself (status, started, pid, ...) are refused with a ValueError."""
        self._check_open()
        validate.check_user_meta(items)
        items = json.loads(json.dumps(items, default=_json_default))
        validate.check_meta(items)
        if self.rank == 0:
            self._writer.set_meta(**items)

    def add_flag(self, step: int, flag: dict) -> None:
        """Store a diagnosis flag raised live at `step`."""
        self._check_open()
        step = _checked_step(step)
        flag = json.loads(json.dumps(flag, default=_json_default)) if isinstance(flag, dict) else flag
        problem = validate.flag_problem(flag)
        if problem:  # refused here, in one line, rather than failing the writer thread later
            raise ValueError(f"add_flag: {problem}")
        if self.rank == 0:
            self._writer.add_flag(step, flag)

    @property
    def probe(self):
        return self._probe

    def flush(self) -> None:
        """Block until everything recorded so far is on disk (and visible to readers)."""
        if self._probe is not None:
            self._probe.finish_pending()
        self._writer.flush()

    @property
    def lost_records(self) -> int:
        """Records that could not be written (on_write_error="warn"); 0 when every write succeeded."""
        return self._writer.lost_records

    def finish(self, status: str = "finished", error: str | None = None, *, ended: float | None = None) -> None:
        """Close the run with a final status (`ended`: its end time, default now); idempotent, and
        safe to call again after a second Ctrl-C interrupted it (the first status asked for wins)."""
        if self._finished:
            return
        if status not in schema.STATUSES:
            raise ValueError(f"status must be one of {schema.STATUSES}, got {status!r}")
        if not self._closed:
            self._closed = True
            self._final = (status, error, ended)
        status, error, ended = self._final
        if self._probe is not None:
            try:
                self._probe.close()  # hands its last record to the writer...
            except RunWriteError:
                pass  # ...which has failed already: that failure is the status written below
        if self._writer.error and self._writer.on_error == "raise" and status == "finished":
            status, error = "failed", self._writer.error  # a write failed after the last record
        try:
            if self.rank == 0:
                self._writer.write_final_meta(
                    {"status": status, "ended": time.time() if ended is None else ended, "error": error})
            else:
                self._writer.flush()
        finally:
            self._writer.close()
            if self._publisher is not None:
                self._publisher.close()  # the last segment carries the final status
            self._finished = True
            run_exit.untrack(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status, error = "finished", None
        elif issubclass(exc_type, run_exit.RunTerminated):
            status, error = "stopped", "terminated (SIGTERM)"
        elif issubclass(exc_type, KeyboardInterrupt):
            status, error = "stopped", "interrupted (KeyboardInterrupt)"
        elif issubclass(exc_type, RunWriteError):
            status, error = "failed", str(exc)  # one line: "disk full: ..."
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb)[-3:]).strip()
            status, error = "failed", f"{exc_type.__name__}: {exc}\n{text}"
        # A second Ctrl-C while the run is being closed must not leave it "running": close it anyway
        # (finish resumes where it was interrupted), then let the first exception propagate.
        interrupted = False
        while True:
            try:
                with _sigint_deferred() as deferred:
                    self.finish(status, error)
                interrupted = interrupted or deferred.noted
                break
            except KeyboardInterrupt:
                interrupted = True
                continue
        if interrupted or (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
            run_exit.quiet_ctrl_c_at_exit()  # the program is ending: a further Ctrl-C must not hit torch's exit
        if interrupted and exc_type is None:
            raise KeyboardInterrupt  # Ctrl-C while a finished run was closing: the program still stops
        return False


def _checked_step(step) -> int:
    """A step as SQLite can store it: an integer in [0, MAX_STEP]; anything else is one clear error."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step <= validate.MAX_STEP:
        raise ValueError(f"step must be an integer from 0 to {validate.MAX_STEP} (2**62), got {step!r}")
    return int(step)


def _open_team_store(location: stores.Location):
    """The store a remote logdir publishes to; a dashboard that refuses the write token is refused here,
    in one line. An unreachable store is not: the run spools and publishes when it is back."""
    try:
        store = stores.open_store(location)
    except stores.StoreError as exc:
        raise RunSetupError(f"logdir {location.given!r}: {exc}") from None
    try:
        store.check_writable()
    except stores.StoreAuthError as exc:
        raise RunSetupError(f"logdir {location.given!r}: {exc}") from None
    except OSError as exc:
        print(f"gradwatch: logdir {location.given!r} unreachable now ({exc}); the run spools locally and "
              "publishes when it is back", file=sys.stderr, flush=True)
    return store


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
    from .capture import sharded
    from .capture.probe import WatchedParam, collect_params, unwrap_model

    inner = unwrap_model(model)
    layout = sharded.layout_of(model, inner, WatchedParam, collect_params)
    params = layout.params if layout is not None else collect_params(inner)
    return {
        "class": type(inner).__name__,
        "parameters": int(sum(p.numel for p in params)),
        "trainable": int(sum(p.numel for p in params if p.trainable)),
        "tensors": len(params),
        "text": str(inner)[:20000],
    }


class _sigint_deferred:
    """Within the block, SIGINT is noted instead of raising (main thread only): closing a run is
    not cut short by a (second) Ctrl-C. `noted` says whether one arrived."""

    def __enter__(self):
        self._previous = None
        self.noted = False
        # Only where Python owns the handler (getsignal is None for one installed from C).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None:
            try:
                self._previous = signal.signal(signal.SIGINT, self._note)
            except ValueError:  # not the main interpreter
                self._previous = None
        return self

    def _note(self, signum, frame):
        self.noted = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def remove_stale_building(root: Path) -> list[Path]:
    """Remove hidden half-built run folders left by a crash during run creation; returns them."""
    removed = []
    now = time.time()
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(BUILDING_PREFIX)]
    except OSError:
        return removed
    for path in entries:
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        pid_text, _, rest = path.name[len(BUILDING_PREFIX):].partition("@")
        here = rest.startswith(socket.gethostname() + "-")
        dead = here and pid_text.isdigit() and not process_alive(int(pid_text))
        if dead or age > STALE_BUILDING_MAX_S:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed

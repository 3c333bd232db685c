"""The Runs list: one summary per run folder (status, what was trained, best/last validation, flags),
computed within a time budget and cached per database version, and the one-line texts it shows.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from gradwatch.trainer import derived
from gradwatch.trainer.runlog import RunLogError, RunReader, validate
from gradwatch.trainer.runlog import schema as log_schema

from .diagnosis import RunDiagnosis, severity_counts
from .store import CACHE_EXPIRE_S, RunFolders, mtime, run_identity

SUMMARY_VERSION = 6  # bump when the summary dict changes shape (old cache entries are ignored)


def duration_s(meta: dict, status: str | None, now: float | None = None) -> float | None:
    started = meta.get("started")
    if not isinstance(started, (int, float)):
        return None
    end = meta.get("ended")
    if not isinstance(end, (int, float)):
        end = (now or time.time()) if status == "running" else meta.get("heartbeat")
    if not isinstance(end, (int, float)):
        return None
    return max(0.0, float(end) - float(started))


def capture_label(meta: dict) -> str:
    """How often layer statistics were recorded: 'statistics every 10 steps', or under
    every="auto" the cadence the time budget chose last ('... every 40 steps (auto, budget 2%)')."""
    watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
    every = watch.get("every")
    if every == "auto":
        chosen = meta.get("capture_every")
        budget = watch.get("budget")
        within = f"budget {budget:.0%}" if isinstance(budget, (int, float)) else "budget"
        if isinstance(chosen, int) and not isinstance(chosen, bool):
            return f"statistics every {chosen} steps (auto, {within})"
        return f"statistics cadence auto ({within})"
    if isinstance(every, int) and not isinstance(every, bool):
        return "statistics every step" if every == 1 else f"statistics every {every} steps"
    return ""


def rules_by_severity(flags: list[dict]) -> dict[str, list[str]]:
    """The rule names of a run's flags per severity (the Runs page's badges name them)."""
    out: dict[str, list[str]] = {}
    for flag in flags:
        severity, rule = flag.get("severity"), flag.get("rule")
        if isinstance(severity, str) and isinstance(rule, str) and rule not in out.setdefault(severity, []):
            out[severity].append(rule)
    return out


def first_step(meta: dict) -> int:
    """The number of a run's first optimizer step: 0, or 1 for an HF Trainer run (Run.watch's
    step_offset, kept in meta["watch"]). Runs recorded before it was kept: 1 for HF, else 0."""
    watch = meta.get("watch") if isinstance(meta.get("watch"), dict) else {}
    value = watch.get("first_step")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 1 if meta.get("integration") == "transformers" else 0


def config_summary(config: dict) -> str:
    """A one-line description of what was trained: model, size, activation and the regularisers on."""
    if not isinstance(config, dict) or not config:
        return ""
    parts = []
    model = config.get("model")
    if model:
        size = ""
        if config.get("depth") is not None and config.get("width") is not None:
            size = f" {config['depth']}x{config['width']}"
        parts.append(f"{model}{size}")
    if config.get("activation"):
        parts.append(str(config["activation"]))
    if config.get("optimizer"):
        lr = config.get("lr")
        parts.append(f"{config['optimizer']} lr={lr:g}" if isinstance(lr, (int, float)) else str(config["optimizer"]))
    for key, label in (("dropout", "dropout"), ("l1", "L1"), ("l2", "L2"), ("weight_decay", "wd"),
                       ("clip_norm", "clip")):
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            parts.append(f"{label}={value:g}")
    for key, label in (("batchnorm", "batchnorm"), ("early_stopping", "early stop")):
        if config.get(key) is True:
            parts.append(label)
    if isinstance(config.get("augment_copies"), int) and config["augment_copies"] > 0:
        parts.append(f"augment x{config['augment_copies']}")
    if not config.get("optimizer"):  # a user's config={"lr": 1e-3}; HF's learning_rate
        lr = next((config[k] for k in ("lr", "learning_rate") if _is_number(config.get(k))), None)
        if lr is not None:
            parts.append(f"lr={lr:g}")
    if not config.get("preset"):
        # Not the built-in trainer: a user's own config (Run(config=...), Lightning's hparams, HF's
        # training arguments) shows its other plain values too, the first few by name.
        extra = [f"{k}={_config_value(v)}" for k, v in config.items()
                 if k not in SUMMARISED_CONFIG_KEYS and isinstance(v, (int, float, str, bool)) and v != ""]
        parts += extra[:CONFIG_EXTRA_SHOWN] + ([f"+{len(extra) - CONFIG_EXTRA_SHOWN} more"]
                                               if len(extra) > CONFIG_EXTRA_SHOWN else [])
    return ", ".join(parts)


# Config values kept per run for the Runs page's key=value filter and grouping (scalars only, short).
CONFIG_VALUES_MAX = 64
CONFIG_VALUE_CHARS = 80


def config_values(config: dict) -> dict:
    """The run's config as flat key -> scalar value (nested dicts as dotted keys), for filtering by
    `key=value` and grouping; lists and long strings are left out (they are not sweep axes)."""
    out: dict = {}

    def walk(prefix: str, value: Any) -> None:
        if len(out) >= CONFIG_VALUES_MAX:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        elif value is None or isinstance(value, bool | int | float) or \
                (isinstance(value, str) and len(value) <= CONFIG_VALUE_CHARS):
            out[prefix[:-1]] = value

    walk("", config if isinstance(config, dict) else {})
    return out


def sweep_and_tags(meta: dict, config: dict) -> tuple[str, list[str]]:
    """The sweep a run belongs to (meta or config "sweep") and its tags (meta or config "tags")."""
    sweep = meta.get("sweep") if meta.get("sweep") is not None else config.get("sweep")
    tags = meta.get("tags") if meta.get("tags") is not None else config.get("tags")
    tags = [str(t) for t in tags][:32] if isinstance(tags, list | tuple) else ([str(tags)] if tags else [])
    return ("" if sweep is None else str(sweep)[:CONFIG_VALUE_CHARS]), tags


CONFIG_EXTRA_SHOWN = 4  # a few values by name, the rest counted (the Runs row stays a few lines tall)
SUMMARISED_CONFIG_KEYS = frozenset({
    "preset", "model", "depth", "width", "activation", "optimizer", "lr", "learning_rate", "dropout", "l1", "l2",
    "weight_decay", "clip_norm", "batchnorm", "early_stopping", "augment_copies"})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def dataset_label(dataset: Any) -> str:
    if isinstance(dataset, dict):
        name = dataset.get("name") or ""
        rows = dataset.get("n_rows")
        return f"{name} ({rows:,} rows)" if isinstance(rows, int) else str(name)
    return "" if dataset is None else str(dataset)


def pending_summary(run_id: str, path: Path) -> dict:
    return {"run_id": run_id, "name": run_id, "status": None, "error": None, "dataset": "", "preset": "",
            "config": "", "steps": None, "best_val_loss": None, "best_epoch": None, "last_val_loss": None,
            "flags": {"critical": 0, "warning": 0, "info": 0}, "flag_rules": [], "started": mtime(path),
            "duration": None, "job_id": None, "pending": True}


class RunList:
    """The summaries of every run of the log directory (a part of RunStore)."""

    def __init__(self, folders: RunFolders, diagnosis: RunDiagnosis):
        self.folders, self.diagnosis = folders, diagnosis

    def summaries(self, budget_s: float = 0.6) -> tuple[list[dict], int]:
        """One summary per run folder (newest first) and how many are still pending.

        Cached summaries cost a stat() each; missing ones are computed until `budget_s` is spent,
        the rest come back as pending placeholders that the next refresh fills in, so a first visit
        to a directory of thousands of runs answers promptly.
        """
        deadline = time.monotonic() + budget_s
        out, pending = [], 0
        for run_id in self.folders.run_ids():
            path = self.folders.logdir / run_id
            ident = run_identity(path)
            key = ("summary", SUMMARY_VERSION, run_id, ident)
            summary = None
            cache = self.folders.cache
            if cache is not None:
                with contextlib.suppress(Exception):
                    summary = cache.get(key)
            if summary is None and time.monotonic() < deadline:
                summary = self._compute_summary(run_id, path)
                if cache is not None and summary.get("status") != "running" and not summary.get("flags_pending"):
                    with contextlib.suppress(Exception):
                        cache.set(key, summary, expire=CACHE_EXPIRE_S)
            if summary is None:
                pending += 1
                summary = pending_summary(run_id, path)
            out.append(summary)
        out.sort(key=lambda s: s.get("started") or 0, reverse=True)
        return out, pending

    def _compute_summary(self, run_id: str, path: Path) -> dict:
        base = {"run_id": run_id, "name": run_id, "status": None, "error": None, "dataset": "", "preset": "",
                "config": "", "steps": None, "best_val_loss": None, "best_epoch": None, "last_val_loss": None,
                "flags": {"critical": 0, "warning": 0, "info": 0}, "flag_rules": [], "started": None,
                "duration": None, "job_id": None, "pending": False, "failure": None, "flags_pending": False}
        problem = validate.entry_problem(path)
        if problem:
            return dict(base, error=problem, started=mtime(path))
        if not log_schema.is_valid_run_id(run_id):
            return dict(base, error="folder name is not a valid run id (export it with `gradwatch export "
                                    "FOLDER -o report.html`, or rename it)", started=mtime(path))
        try:
            with RunReader(path) as reader:
                meta = reader.meta
                status = reader.status()
                counts = reader.counts()
                val_steps, val = reader.scalar_arrays("val_loss")
                epochs = dict(zip(*reader.scalar_arrays("epoch")))
                stored, _ = reader.flags()
        except RunLogError as exc:
            return dict(base, error=str(exc), started=mtime(path))
        except Exception as exc:  # a run folder must never break the listing
            return dict(base, error=f"unreadable run folder ({type(exc).__name__}: {exc})", started=mtime(path))
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        validation = derived.validation_summary(val_steps, val, epochs)
        flags = self.diagnosis.flags(run_id, status=status, stored=stored, path=path, wait=False)
        last_step = counts.get("last_step")
        return dict(
            base,
            name=str(meta.get("name") or run_id),
            status=status,
            failure=meta.get("error") if status in ("failed", "stopped") else None,
            dataset=dataset_label(meta.get("dataset")),
            preset=str(config.get("preset") or ""),
            config=config_summary(config),
            config_values=config_values(config),
            sweep=sweep_and_tags(meta, config)[0],
            tags=sweep_and_tags(meta, config)[1],
            steps=None if last_step is None else int(last_step) + 1 - first_step(meta),
            best_val_loss=validation["best_val_loss"], best_epoch=validation["best_epoch"],
            last_val_loss=validation["last_val_loss"],
            flags=severity_counts(flags["flags"]),
            flag_rules=sorted({f.get("rule", "") for f in flags["flags"]}),
            flag_rules_by_severity=rules_by_severity(flags["flags"]),
            started=meta.get("started"),
            duration=duration_s(meta, status),
            job_id=meta.get("job_id"),
            flags_pending=flags["pending"],
            losses=derived.losses_line(meta),
        )

"""What the dashboard lets a viewer launch: training data only from configured folders, and models
whose estimated training memory fits a cap. Checked on the server for every launch (the page, the
demo), before anything is spawned.

A data path outside the allowed folders is refused with the same message whether or not it exists,
and nothing of a file is ever read here: the page must not become a way to probe or read the
dashboard account's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradwatch.trainer.memory_estimate import estimate_training_bytes, format_bytes


class LaunchRefused(ValueError):
    """A launch request outside the dashboard's limits; the message is one line."""


def default_data_dirs(logdir: Path, cwd: Path | None = None) -> tuple[Path, ...]:
    """The project's data folder beside the log directory (<logdir>/../data) and ./data of the
    dashboard's working directory (where `gradwatch train` looks for data/Tweets.csv)."""
    cwd = Path(cwd or os.getcwd())
    folders = [Path(logdir).resolve().parent / "data", (cwd / "data").resolve()]
    return tuple(dict.fromkeys(folders))


def check_data_path(raw: str | None, allowed: tuple[Path, ...], cwd: Path | None = None) -> str | None:
    """The resolved path a launched trainer may read, or LaunchRefused. None stays None (the
    trainer's default data). Symbolic links are resolved first, so a link inside an allowed folder
    that points elsewhere is refused like the target itself."""
    if raw is None or str(raw).strip().lower() in ("", "none"):
        return None
    text = str(raw).strip()
    base = Path(cwd or os.getcwd())
    candidate = Path(text) if os.path.isabs(text) else base / text
    resolved = Path(os.path.realpath(candidate))
    roots = [Path(os.path.realpath(folder)) for folder in allowed]
    if not any(resolved != root and resolved.is_relative_to(root) for root in roots):
        raise LaunchRefused(
            f"data path {text[:200]!r} is not allowed: Launch reads training data only from files inside "
            f"{', '.join(str(r) for r in roots) or '(no folder configured)'} "
            "(the dashboard's GRADWATCH_DATA_DIRS setting)")
    if not resolved.is_file():
        raise LaunchRefused(f"data path {text[:200]!r}: no such file in the allowed data folders")
    return str(resolved)


def check_model_memory(options: dict, max_bytes: int) -> int:
    """The estimated training memory of `options`' model, or LaunchRefused above `max_bytes`."""
    estimate = estimate_training_bytes(options)
    if estimate > max_bytes:
        raise LaunchRefused(
            f"model too large to launch here: {options.get('model')} depth {options.get('depth')} x width "
            f"{options.get('width')} needs about {format_bytes(estimate)} to train, the dashboard allows "
            f"{format_bytes(max_bytes)} (GRADWATCH_MAX_MODEL_MB); use a smaller width or depth")
    return estimate

"""Remote logdirs on the command line: `inspect/diagnose/export URL/RUN_ID`, `ls LOGDIR`, `sync SRC DST`
all work on local run folders; a remote run or logdir is first imported into a local cache. Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from . import schema, segment, stores
from .errors import RunLogError
from .importer import Importer
from .reader import RunReader, list_runs

ENV_IMPORT_CACHE = "GRADWATCH_CACHE"


def default_import_cache(source: str) -> Path:
    """Where a remote logdir's runs are imported when no --cache / GRADWATCH_CACHE is given: a per-user
    local folder named after the source."""
    if os.environ.get(ENV_IMPORT_CACHE):
        return Path(os.environ[ENV_IMPORT_CACHE])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    if not os.access(base.parent if not base.exists() else base, os.W_OK):
        base = Path(tempfile.gettempdir()) / f"gradwatch-{os.getuid()}"
    return base / "gradwatch" / f"import-{digest}"


def _store(logdir: str):
    location = stores.classify(logdir)
    if location.mode == "http":
        raise RunLogError(f"{logdir!r} is a team dashboard: open it in a browser (runs pushed to it are "
                          "ordinary run folders in its --logdir)")
    try:
        return stores.open_store(location)
    except stores.StoreError as exc:
        raise RunLogError(str(exc)) from None


def local_run_dir(given: str, cache: str | None = None) -> Path:
    """The local run folder for RUN_DIR as given: itself when local, else URL/RUN_ID imported into the cache."""
    if not stores.classify(given).remote:
        return Path(given)
    logdir, _, run_id = given.rstrip("/").rpartition("/")
    if not schema.is_valid_run_id(run_id) or not logdir:
        raise RunLogError(f"{given!r}: give a remote run as LOGDIR_URL/RUN_ID (run ids are letters, digits, '.', "
                          "'_' or '-')")
    root = Path(cache) if cache else default_import_cache(logdir)
    report = Importer(_store(logdir), root).import_run(run_id)
    if report.errors:
        raise RunLogError(report.errors[0])
    if not (root / run_id / schema.DB_FILENAME).is_file():
        raise RunLogError(f"no run {run_id!r} in {logdir} (nothing published under {run_id}/{segment.SEGMENTS_DIR})")
    return root / run_id


def _holds_run_folders(given: str) -> bool:
    """A plain path whose run folders are SQLite ones (written before segments, or copied there): read in
    place, read-only, even on a network filesystem."""
    if "://" in given:
        return False
    try:
        return any((child / schema.DB_FILENAME).is_file() for child in Path(given).iterdir())
    except OSError:
        return False


def local_logdir(given: str, cache: str | None = None) -> tuple[Path, set[str] | None]:
    """(local folder of run folders, the run ids the remote logdir holds or None for a local one)."""
    if not stores.classify(given).remote or _holds_run_folders(given):
        return Path(given), None
    store = _store(given)
    root = Path(cache) if cache else default_import_cache(given)
    try:
        Importer(store, root).poll()
        remote_ids = {r for r in store.list_dirs("") if schema.is_valid_run_id(r)}
    except OSError as exc:
        raise RunLogError(f"cannot read {given}: {exc}") from None
    return root, remote_ids


def run_rows(given: str, cache: str | None = None) -> list[dict]:
    """`gradwatch ls`: one dict per run (id, name, status, steps_logged, last_step, started, flags)."""
    root, only = local_logdir(given, cache)
    rows = []
    for entry in list_runs(root):
        if only is not None and entry.run_id not in only:
            continue
        row = {"id": entry.run_id, "name": None, "status": entry.status, "steps_logged": None, "last_step": None,
               "started": None, "flags": [], "error": entry.error}
        if entry.meta is not None:
            row.update(name=entry.meta.get("name"), started=entry.meta.get("started"))
            try:
                with RunReader(entry.path) as reader:
                    row["steps_logged"] = reader.extent()[2]
                    row["last_step"] = reader.last_step_any(reader.scalar_names())
                    row["flags"] = sorted({f.get("rule", "?") for f in reader.flags()[0]})
            except RunLogError as exc:
                row["error"] = str(exc)
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    import time

    header = f"{'id':<40} {'name':<20} {'status':<9} {'steps':>7} {'started':<16} flags"
    lines = [header]
    for row in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"])) if row["started"] else "-"
        steps = "-" if row["steps_logged"] is None else str(row["steps_logged"])
        tail = row["error"] or ", ".join(row["flags"])
        lines.append(f"{row['id']:<40} {str(row['name'] or '-'):<20} {str(row['status'] or 'broken'):<9} "
                     f"{steps:>7} {started:<16} {tail}")
    return "\n".join(lines)


def sync(src: str, dst: str, cache: str | None = None) -> list[str]:
    """Copy runs from logdir SRC to logdir DST (either may be local or remote); runs DST already holds are
    left alone. Returns the ids copied."""
    from .importer import folder_lock, import_segment
    from .publisher import export_folder

    dst_remote = stores.classify(dst).remote
    if stores.classify(src).remote and not _holds_run_folders(src) and not dst_remote:
        # Fetch: the importer mirrors every run, live ones included, and a later sync adds only what is new.
        Path(dst).mkdir(parents=True, exist_ok=True)
        report = Importer(_store(src), Path(dst)).poll()
        return sorted(report.runs)
    src_root, only = local_logdir(src, cache)
    copied = []
    if dst_remote:
        store = _store(dst)
        present = set(store.list_dirs(""))
    else:
        Path(dst).mkdir(parents=True, exist_ok=True)
        present = {p.name for p in Path(dst).iterdir()}
    for entry in list_runs(src_root):
        if entry.meta is None or entry.run_id in present or (only is not None and entry.run_id not in only):
            continue
        if entry.status == "running":
            continue  # a live run is published by its writer; copying half of it would freeze that half
        data = export_folder(entry.path, entry.run_id)
        if dst_remote:
            store.put(f"{entry.run_id}/{segment.SEGMENTS_DIR}/{segment.rank_dir(0)}/{segment.segment_name(1, 1, data)}",
                      data)
        else:
            with folder_lock(Path(dst)):
                import_segment(Path(dst), segment.decode(data))
        copied.append(entry.run_id)
    return copied

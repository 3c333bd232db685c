"""Fault injection: a full disk (a small tmpfs when root, else SQLite's max_page_count), read-only
media (a read-only bind mount when root, else file modes), and helpers shared by the fault tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# GRADWATCH_FAULTS_NO_MOUNT=1 runs the unprivileged fallbacks (page cap, file modes) even as root.
IS_ROOT = os.geteuid() == 0 and not os.environ.get("GRADWATCH_FAULTS_NO_MOUNT")


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on a small filesystem, and how it was made full: ("tmpfs", path) when root can mount
    one, else ("pages", path) with every writer connection capped by PRAGMA max_page_count."""
    target = tmp_path / "small"
    target.mkdir()
    if IS_ROOT and _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)):
        yield "tmpfs", target
        _umount(target)
        return
    from gradwatch.trainer.runlog import writer as writer_module

    original = writer_module.connect
    seen = set()

    def capped(db_path, *, readonly=False):
        # The first connection to each database (its writer) is capped; a later one (the final status
        # write after the reserve is freed) is not, as freed space would be on a real disk.
        conn = original(db_path, readonly=readonly)
        if not readonly and str(db_path) not in seen:
            seen.add(str(db_path))
            conn.execute("PRAGMA max_page_count=200")  # 800 kB at 4 kB pages
        return conn

    monkeypatch.setattr(writer_module, "connect", capped)
    yield "pages", target


@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` read-only the way media are: a read-only bind mount when root, else modes."""
    if IS_ROOT and _mount("--bind", str(folder), str(folder)):
        if _mount("-o", "remount,bind,ro", str(folder)):
            try:
                yield "mount"
            finally:
                _umount(folder)
            return
        _umount(folder)
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield "modes"
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])


def gradwatch_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradwatch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=dict(os.environ, **(env or {})))


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text and "internal error" not in text, text
    return lines[0]

"""The dashboard's cache folder is one it created itself, never one it adopts: an existing folder open
to other users (a sticky world-writable /tmp-like folder, a 0755 one) is refused, never chmod-ed; a
cache file that is a link, not ours or writable by others is refused before diskcache opens (and
unpickles) anything; a foreign cache is a one-line error from `gradwatch ui`, not "internal error"."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat

import pytest

from gradwatch.dashboard.config import SettingsError, ensure_private_cache, ensure_private_dir
from gradwatch.dashboard.data import RunStore

from .conftest import IS_ROOT, gradwatch_cli, one_line


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o755, 0o750, 0o701])
def test_an_existing_folder_open_to_others_is_refused_and_left_as_it_was(tmp_path, mode):
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(SettingsError, match="other users"):
        ensure_private_dir(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == mode  # never chmod-ed


def test_a_cache_dir_of_tmp_itself_is_refused_not_chmodded(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with pytest.raises(SettingsError):
        RunStore(tmp_path / "logs", sticky).cache  # noqa: B018 - opening the cache is what must be refused
    assert stat.S_IMODE(sticky.stat().st_mode) == 0o1777


def _planted_cache(folder):
    """A diskcache database holding a pickle that would run code when read."""
    runs = folder / "runs"
    runs.mkdir(mode=0o700)
    runs.chmod(0o700)
    conn = sqlite3.connect(runs / "cache.db")
    conn.execute("CREATE TABLE planted(x)")
    conn.execute("INSERT INTO planted VALUES (?)", (pickle.dumps(os.system),))
    conn.commit()
    conn.close()
    return runs


@pytest.mark.parametrize("plant", ["world-writable-db", "symlinked-db", "open-runs-folder"])
def test_a_planted_cache_database_is_never_opened(tmp_path, plant):
    folder = ensure_private_dir(tmp_path / "mine")
    runs = _planted_cache(folder)
    if plant == "world-writable-db":
        (runs / "cache.db").chmod(0o666)
    elif plant == "symlinked-db":
        (runs / "cache.db").rename(tmp_path / "elsewhere.db")
        os.symlink(tmp_path / "elsewhere.db", runs / "cache.db")
    else:
        runs.chmod(0o777)
    before = (tmp_path / "elsewhere.db" if plant == "symlinked-db" else runs / "cache.db").read_bytes()
    with pytest.raises(SettingsError):
        ensure_private_cache(runs)
    with pytest.raises(SettingsError):
        RunStore(tmp_path / "logs", folder).cache  # noqa: B018
    after = (tmp_path / "elsewhere.db" if plant == "symlinked-db" else runs / "cache.db").read_bytes()
    assert after == before  # diskcache never opened it (it would have added its tables)


@pytest.mark.skipif(not IS_ROOT, reason="chown to another user needs root")
def test_a_cache_file_of_another_user_is_refused(tmp_path):
    folder = ensure_private_dir(tmp_path / "mine")
    runs = _planted_cache(folder)
    os.chown(runs / "cache.db", 4242, 4242)
    with pytest.raises(SettingsError, match="another user"):
        ensure_private_cache(runs)


def test_our_own_cache_is_reused_across_restarts(tmp_path):
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    store.cache.set("k", 1)
    store.cache.close()
    again = RunStore(tmp_path / "logs", tmp_path / "cache")
    assert again.cache.get("k") == 1
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700


def test_ui_with_a_foreign_cache_or_a_bad_logdir_is_one_line(tmp_path):
    sticky = tmp_path / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (tmp_path / "logs").mkdir()
    result = gradwatch_cli("ui", "--logdir", str(tmp_path / "logs"), "--port", "0",
                           env={"GRADWATCH_CACHE_DIR": str(sticky)}, timeout=60)
    assert result.returncode == 2 and "cache" in one_line(result.stderr)
    (tmp_path / "file").write_text("x")
    result = gradwatch_cli("ui", "--logdir", str(tmp_path / "file"), "--port", "0", timeout=60)
    assert result.returncode == 2 and "log directory" in one_line(result.stderr)

"""Server-side limits on every user-supplied field, Launch's data-folder and memory checks (no file
content or existence leaks), and a cache folder whose whole path is checked before anything is
unpickled from it."""

from __future__ import annotations

import os
import stat

import pytest

from gradwatch.dashboard.config import Settings, SettingsError, ensure_private_dir
from gradwatch.dashboard.context import AppContext
from gradwatch.dashboard.jobs import JobError, JobManager
from gradwatch.dashboard.launch_policy import LaunchRefused, check_data_path, check_model_memory
from gradwatch.dashboard.views import launch as launch_logic
from gradwatch.dashboard.views import run as run_logic
from gradwatch.testing import make_run
from gradwatch.trainer.presets import resolve
from gradwatch.trainer.runlog import RunReader, add_note, schema

from .conftest import IS_ROOT


@pytest.fixture
def store(tmp_path):
    make_run(tmp_path / "logs", "target", steps=10)
    make_run(tmp_path / "logs", "neighbour", steps=10)
    return AppContext.from_settings(Settings(logdir=tmp_path / "logs", cache_dir=tmp_path / "cache")).store


def _note(store, **fields):
    values = dict(read_only=False, run_id="target", text="ok", author="me", step=None, layer=None)
    values.update(fields)
    return run_logic.add_note_impl(store, **values)


def test_every_note_field_is_limited_on_the_server(store):
    for field, size in (("text", schema.NOTE_MAX_CHARS + 1), ("author", schema.NOTE_AUTHOR_MAX_CHARS + 1),
                        ("layer", 5_000_000)):
        result = _note(store, **{field: "x" * size})
        assert not result["ok"] and "at most" in result["message"] and "\n" not in result["message"], field
        assert len(result["message"]) < 200  # the refusal does not echo the oversized value
    assert _note(store, step="1e400", text="far")["ok"]  # a huge step is clamped, never an OverflowError
    with RunReader(store.run_dir("target")) as reader:
        notes = reader.notes()[0]
    assert [(n["text"], n["step"]) for n in notes] == [("far", 2**62)]  # only the valid note was stored


def test_notes_per_run_are_capped_and_other_runs_unaffected(store, monkeypatch):
    monkeypatch.setattr(schema, "NOTES_MAX_PER_RUN", 5)
    for i in range(5):
        add_note(store.run_dir("target"), f"note {i}")
    result = _note(store, text="one too many")
    assert not result["ok"] and "5 notes" in result["message"]
    assert _note(store, run_id="neighbour", text="fine")["ok"]
    with RunReader(store.run_dir("target")) as reader:
        assert len(reader.notes()[0]) == 5


def test_launch_refuses_a_huge_model_in_one_line(tmp_path):
    jobs = JobManager(tmp_path / "logs", max_model_bytes=2048 * 2**20)
    with pytest.raises(JobError) as raised:
        jobs.start("overfit", {"width": "8192", "depth": "64"})
    message = str(raised.value)
    assert "model too large" in message and "GiB" in message and "\n" not in message
    assert not (tmp_path / "logs" / ".jobs").exists() or not list((tmp_path / "logs" / ".jobs").glob("j*.json"))
    assert check_model_memory(resolve("overfit", {}), 2048 * 2**20) < 100 * 2**20  # the lesson's models fit


def test_launch_reads_data_only_from_allowed_folders_and_never_leaks(tmp_path):
    allowed = tmp_path / "data"
    allowed.mkdir()
    (allowed / "Tweets.csv").write_text("text,airline_sentiment\nhi,positive\n")
    secret = tmp_path / "secret.env"
    secret.write_text("api_key=hunter2\n")
    os.symlink(secret, allowed / "link.csv")
    refusals = []
    for raw in (str(secret), str(tmp_path / "missing.env"), str(allowed / ".." / "secret.env"),
                str(allowed / "link.csv"), "/etc/passwd", "/no/such/file"):
        with pytest.raises(LaunchRefused) as raised:
            check_data_path(raw, (allowed,))
        refusals.append(str(raised.value).replace(raw[:200], "PATH"))
        assert "hunter2" not in str(raised.value)
    assert len(set(refusals)) == 1, refusals  # existing or not: the same words
    assert check_data_path(str(allowed / "Tweets.csv"), (allowed,)) == str((allowed / "Tweets.csv").resolve())
    assert check_data_path("none", (allowed,)) is None
    jobs = JobManager(tmp_path / "logs", data_dirs=(allowed,))
    result = launch_logic.launch_impl(jobs, read_only=False, preset="overfit", name="x",
                                      values={"data": str(secret)})
    assert not result["ok"] and "not allowed" in result["message"] and "hunter2" not in result["message"]
    too_long = launch_logic.validate_impl("overfit", {"data": "a" * 5000})
    assert not too_long["ok"] and "at most" in too_long["message"]


def test_data_dirs_setting_and_default(tmp_path):
    env = {"GRADWATCH_LOGDIR": str(tmp_path / "logs"), "GRADWATCH_DATA_DIRS": f"{tmp_path}/a{os.pathsep}{tmp_path}/b",
           "GRADWATCH_MAX_MODEL_MB": "64"}
    settings = Settings.from_env(env)
    assert settings.data_dirs == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert settings.max_model_mb == 64
    default = Settings(logdir=tmp_path / "logs").data_dirs
    assert (tmp_path / "data").resolve() in default


def test_cache_folder_path_is_checked_component_by_component(tmp_path):
    good = ensure_private_dir(tmp_path / "mine" / "cache")
    assert stat.S_IMODE(good.stat().st_mode) == 0o700
    os.symlink(tmp_path / "mine", tmp_path / "alias")
    with pytest.raises(SettingsError, match="symbolic link"):
        ensure_private_dir(tmp_path / "alias" / "cache")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable without the sticky bit: anyone could swap our folder
    with pytest.raises(SettingsError, match="writable by other users"):
        ensure_private_dir(shared / "cache")
    sticky = tmp_path / "tmp-like"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot rename what we own inside
    assert ensure_private_dir(sticky / f"gradwatch-{os.getuid()}" / "d").is_dir()


@pytest.mark.skipif(not IS_ROOT, reason="planting another user's folder needs chown (root)")
def test_a_folder_planted_by_another_user_is_refused_before_anything_is_read(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "gradwatch-0"
    planted.mkdir(mode=0o777)
    (planted / "dashboard-x").mkdir()
    os.chown(planted, 4242, 4242)
    with pytest.raises(SettingsError, match="another user"):
        ensure_private_dir(planted / "dashboard-x")
    from gradwatch.dashboard.data import RunStore

    store = RunStore(tmp_path / "logs", planted / "dashboard-x")
    with pytest.raises(SettingsError):
        store.cache  # noqa: B018 - opening the cache is what must be refused

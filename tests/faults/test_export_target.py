"""`gradwatch export -o PATH` writes only regular files: a device node, a directory, a symbolic link
or a read-only file is refused in one line and left as it was; a failed write leaves no temporary
file behind; a fresh path or a regular file is written atomically."""

from __future__ import annotations

import os
import stat

import pytest

from gradwatch import cli
from gradwatch.dashboard.export import ExportError, write_regular_file
from gradwatch.testing import make_run

from .conftest import IS_ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("logs"), "good", steps=10)


def _export(run_dir, out, capsys) -> tuple[int, str]:
    code = cli.main(["export", str(run_dir), "-o", str(out)])
    return code, capsys.readouterr().err


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_directory_target_is_refused_in_one_line_and_nothing_is_left(run_dir, tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    code, err = _export(run_dir, target, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a directory" in err, err
    assert target.is_dir() and not _leftovers(tmp_path) and not list(target.iterdir())


def test_a_symlink_target_is_refused_and_its_target_untouched(run_dir, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "report.html")
    code, err = _export(run_dir, tmp_path / "report.html", capsys)
    assert code == 2 and "symbolic link" in err and victim.read_text() == "keep me"
    assert (tmp_path / "report.html").is_symlink() and not _leftovers(tmp_path)


def test_a_read_only_file_is_refused(run_dir, tmp_path, capsys):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o444)
    code, err = _export(run_dir, target, capsys)
    assert code == 2 and "read-only" in err and target.read_text() == "old" and not _leftovers(tmp_path)


def test_a_device_node_is_refused(run_dir, tmp_path, capsys):
    if IS_ROOT:
        node = tmp_path / "full"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # /dev/full's numbers
    else:
        node = tmp_path / "fifo"
        os.mkfifo(node)
    code, err = _export(run_dir, node, capsys)
    assert code == 2 and "not a regular file" in err
    mode = os.lstat(node).st_mode
    assert (stat.S_ISCHR(mode) if IS_ROOT else stat.S_ISFIFO(mode)) and not _leftovers(tmp_path)


def test_a_failing_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(ExportError, match="No space left") as raised:
        write_regular_file(tmp_path / "r.html", b"x" * 1000)
    assert "\n" not in str(raised.value) and list(tmp_path.iterdir()) == []


def test_a_read_only_folder_is_one_line(run_dir, tmp_path, capsys):
    if IS_ROOT:
        pytest.skip("root writes into a mode-0555 folder; the read-only mount case is in test_readonly_and_entries")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, err = _export(run_dir, folder / "r.html", capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_regular_file_is_replaced_atomically(run_dir, tmp_path, capsys):
    target = tmp_path / "report.html"
    target.write_text("old")
    code, err = _export(run_dir, target, capsys)
    assert code == 0, err
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>") and not _leftovers(tmp_path)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644

"""`gradwatch ls` and `gradwatch sync` on local and remote logdirs; inspect/diagnose/export on URL/RUN_ID."""

from __future__ import annotations

import json
import subprocess
import sys

from gradwatch.testing import make_run
from gradwatch.trainer.runlog import RunReader, list_runs

from .conftest import REPO


def gw(*args, env=None):
    import os

    result = subprocess.run([sys.executable, "-m", "gradwatch", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, **(env or {})))
    return result


def test_sync_up_ls_and_inspect_a_remote_run(tmp_path):
    local = tmp_path / "local"
    make_run(local, "alpha", steps=50, layers=2, flags=[{"rule": "overfitting", "severity": "warning",
                                                         "first_step": 10}])
    make_run(local, "beta", steps=30, layers=2)
    shared = (tmp_path / "shared").as_uri()
    cache = str(tmp_path / "cache")
    up = gw("sync", str(local), shared)
    assert up.returncode == 0, up.stderr
    assert sorted(up.stdout.split()) == ["alpha", "beta"]
    assert gw("sync", str(local), shared).stdout.split() == []  # already there: nothing copied again

    listed = gw("ls", shared, "--json", "--cache", cache)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["status"] == "finished" and rows["alpha"]["steps_logged"] == 50
    assert rows["alpha"]["flags"] == ["overfitting"] and rows["beta"]["name"] == "beta"
    table = gw("ls", str(local))
    assert table.returncode == 0 and "alpha" in table.stdout and "finished" in table.stdout

    inspected = gw("inspect", f"{shared}/alpha", "--json", "--cache", cache)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)
    diagnosed = gw("diagnose", f"{shared}/beta", "--cache", cache)
    assert diagnosed.returncode == 0, diagnosed.stderr
    report = tmp_path / "alpha.html"
    exported = gw("export", f"{shared}/alpha", "-o", str(report), "--cache", cache)
    assert exported.returncode == 0, exported.stderr and report.stat().st_size > 1000
    missing = gw("inspect", f"{shared}/nope", "--cache", cache)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr and missing.stderr.count("\n") == 1

    fetched = tmp_path / "fetched"
    down = gw("sync", shared, str(fetched))
    assert down.returncode == 0, down.stderr
    assert {e.run_id for e in list_runs(fetched)} == {"alpha", "beta"}
    with RunReader(fetched / "alpha") as a, RunReader(local / "alpha") as b:
        assert a.scalar_names() == b.scalar_names() and a.extent() == b.extent()


def test_ls_rejects_a_bad_logdir_in_one_line(tmp_path):
    result = gw("ls", str(tmp_path / "none"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_sync_reads_sqlite_run_folders_on_a_network_filesystem_in_place(tmp_path, monkeypatch):
    from gradwatch.trainer.runlog import remote, stores

    old = tmp_path / "nfs-old"
    make_run(old, "legacy", steps=10, layers=1)
    monkeypatch.setattr(stores, "filesystem_type", lambda p: 0x6969)  # every path "on NFS"
    shared = (tmp_path / "shared").as_uri()
    assert remote.sync(str(old), shared) == ["legacy"]
    rows = remote.run_rows(shared, str(tmp_path / "cache"))
    assert [r["id"] for r in rows] == ["legacy"] and rows[0]["status"] == "finished"

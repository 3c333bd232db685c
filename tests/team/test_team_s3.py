"""Runs into an S3 bucket (moto's server on 127.0.0.1, s3fs through fsspec): published live, imported
exactly, and nothing lost when the store goes away for a while and comes back."""

from __future__ import annotations

import time

import fsspec
import pytest

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, segment
from gradwatch.trainer.runlog.importer import Importer
from gradwatch.trainer.runlog.stores import FsspecStore

from .conftest import MotoServer
from .test_team_folder import wait_for

LOGDIR = "s3://gw-team/runs"


def test_run_publishes_to_s3_and_imports(s3, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    store = FsspecStore(LOGDIR)
    importer = Importer(store, tmp_path / "cache")
    with Run(LOGDIR, name="s3-run", config={"lr": 0.1}) as run:
        run.log(0, loss=1.0)
        prefix = f"{run.id}/segments/r00000"
        assert wait_for(lambda: store.list(prefix), 20)  # live: published while the run goes on
        importer.poll()
        with RunReader(tmp_path / "cache" / run.id) as reader:
            assert reader.status() == "running" and reader.meta["config"] == {"lr": 0.1}
        for step in range(1, 20):
            run.log(step, loss=1.0 / (step + 1))
    assert "s3:// URL" in capfd.readouterr().err
    keys = fsspec.filesystem("s3").find("gw-team/runs")
    assert keys and all(segment.parse_name(k.rsplit("/", 1)[-1]) for k in keys)  # segments only, no SQLite
    importer.poll()
    with RunReader(tmp_path / "cache" / run.id) as reader:
        assert reader.status() == "finished"
        assert list(reader.scalar_series("loss")["step"]) == list(range(20))


def test_s3_away_then_back_loses_nothing(s3, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    store = FsspecStore(LOGDIR)
    importer = Importer(store, tmp_path / "cache")
    run = Run(LOGDIR, name="outage")
    for step in range(10):
        run.log(step, loss=float(step))
    prefix = f"{run.id}/segments/r00000"
    assert wait_for(lambda: store.list(prefix), 20)
    run.flush()
    time.sleep(1.5)  # one more publish: steps 0..9 are in the bucket
    importer.poll()
    s3.stop()  # the store goes away; training goes on
    for step in range(10, 40):
        run.log(step, loss=float(step))
        time.sleep(0.05)
    # botocore retries a refused connection a few times before the publisher hears of it
    assert wait_for(lambda: run._publisher.failing_since is not None, 60)
    assert "cannot publish" in capfd.readouterr().err
    restarted = MotoServer(s3.port).start()  # back (a fresh server: the bucket is made again)
    try:
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("gw-team")
        run.finish()
        assert "again" in capfd.readouterr().err
        importer.poll()
        with RunReader(tmp_path / "cache" / run.id) as reader:
            assert list(reader.scalar_series("loss")["step"]) == list(range(40))
            assert reader.status() == "finished"
    finally:
        restarted.stop()


@pytest.mark.parametrize("bad", ["s3://gw-team/../x"])
def test_importer_skips_invalid_run_ids(s3, tmp_path, bad):
    fs = fsspec.filesystem("s3")
    fs.pipe_file("gw-team/runs/.hidden/segments/r00000/x", b"junk")
    report = Importer(FsspecStore(LOGDIR), tmp_path / "cache").poll()
    assert report.segments == 0 and report.errors == []


@pytest.mark.slow
def test_live_through_s3_on_the_real_dashboard(s3, tmp_path):
    """A trainer process publishes to s3:// on the moto server; the real `gradwatch ui --logdir s3://...`
    with its own cache shows it live and complete; kill -9 of a second trainer leaves its published part,
    no partial object, and the run turns stale."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import UiServer, s3_env
    from .test_team_live import SCRIPT, new_walls

    env = s3_env(s3)
    cache = tmp_path / "cache"
    ui = UiServer("--logdir", LOGDIR, "--cache", str(cache), env=dict(env, GRADWATCH_CACHE_DIR=str(tmp_path / "dc")),
                  log=tmp_path / "ui.log")
    procs = []
    try:
        for name, steps in (("s3-live", 80), ("s3-killed", 100000)):
            procs.append(subprocess.Popen([sys.executable, str(SCRIPT), LOGDIR, name, str(steps), "0.1"],
                                          env=dict(env, GRADWATCH_SPOOL=str(tmp_path / f"spool-{name}")),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        live_id = procs[0].stdout.readline().strip()  # printed before its first step; the other's id is read later
        seen, lags = {}, []
        while procs[0].poll() is None:
            now = time.time()
            lags += [now - w for w in new_walls(cache, live_id, seen)]
            time.sleep(0.2)
        assert procs[0].returncode == 0, procs[0].stderr.read()[-2000:]
        killed_id = procs[1].stdout.readline().strip()
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait()
        assert wait_for(lambda: _status(cache, live_id) == "finished", 30)
        with RunReader(cache / live_id) as reader:
            assert list(reader.scalar_series("loss")["step"]) == list(range(80))
        assert len(lags) > 40  # seen while live (the lag itself is bench/team_lag.py's figure, not a test)
        store = FsspecStore(LOGDIR)
        prefix = f"{killed_id}/segments/r00000"
        for name in store.list(prefix):  # every visible object is a whole, verified segment
            segment.decode(store.get(f"{prefix}/{name}"), name)
        assert wait_for(lambda: _status(cache, killed_id) == "stale", 40, 1.0)
        with RunReader(cache / killed_id) as reader:
            steps = list(reader.scalar_series("loss")["step"])
            assert steps and steps == list(range(len(steps)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ui.stop()


def _status(cache, run_id):
    try:
        with RunReader(cache / run_id) as reader:
            return reader.status()
    except Exception:
        return None

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

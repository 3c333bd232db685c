"""Runs into a shared folder: the mode chosen (and said in one line), SQLite never opened on a detected
network filesystem, a store away and back with nothing lost, kill -9 leaving no partial segment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, schema, segment, stores
from gradwatch.trainer.runlog.importer import Importer
from gradwatch.trainer.runlog.publisher import Publisher
from gradwatch.trainer.runlog.stores import FolderStore

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout_s: float = 30.0, every_s: float = 0.2):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return predicate()


def sqlite_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "sqlite" in p.name]


@pytest.mark.parametrize("magic,name", [(0x6969, "NFS"), (0x0BD00BD0, "Lustre"), (0x47504653, "GPFS"),
                                         (0x00C36400, "CephFS"), (0xFF534D42, "CIFS"), (0x65735546, "FUSE"),
                                         (0x01021997, "9p")])
def test_network_filesystems_are_detected_by_statfs_type(tmp_path, magic, name):
    location = stores.classify(tmp_path, fs_type=lambda _path: magic)
    assert location.mode == "folder" and name in location.reason
    assert stores.classify(tmp_path, fs_type=lambda _path: 0xEF53).mode == "local"  # ext4
    assert stores.classify(tmp_path).mode == "local"  # the real type of the test machine's tmp


def test_urls_pick_their_mode():
    assert stores.classify("file:///tmp/x").mode == "folder"
    assert stores.classify("s3://bucket/runs").mode == "fsspec"
    assert stores.classify("http://team:8050").mode == "http"


def test_run_on_a_network_filesystem_never_opens_sqlite_there(tmp_path, monkeypatch, capfd):
    shared = tmp_path / "nfs"
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    real = stores.filesystem_type
    monkeypatch.setattr(stores, "filesystem_type",
                        lambda p: 0x6969 if str(Path(p).absolute()).startswith(str(shared)) else real(p))
    with Run(shared, name="nfs-run") as run:
        run.log(0, loss=1.0)
        run.log(1, loss=0.5)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gradwatch: run")]
    assert len(lines) == 1 and "NFS" in lines[0] and "spool" in lines[0]
    assert sqlite_files(shared) == []  # no run.sqlite, -wal or -shm on the network filesystem
    assert list((shared / run.id / "segments" / "r00000").iterdir())
    Importer(FolderStore(shared), tmp_path / "cache").poll()
    with RunReader(tmp_path / "cache" / run.id) as reader:
        assert reader.status() == "finished"
        assert list(reader.scalar_series("loss")["value"]) == [1.0, 0.5]


def test_local_path_stays_an_ordinary_run_folder(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    with Run(tmp_path / "logs", name="plain") as run:
        run.log(0, loss=1.0)
    assert (tmp_path / "logs" / run.id / schema.DB_FILENAME).is_file()
    assert not (tmp_path / "spool").exists()
    assert "gradwatch: run" not in capfd.readouterr().err


def test_store_away_then_back_loses_nothing(tmp_path):
    """The shared folder disappears (replaced by a file: every publish fails) and comes back."""
    spool = tmp_path / "spool" / "gone-r00000"
    spool.mkdir(parents=True)
    from gradwatch.trainer.runlog.writer import RunWriter

    writer = RunWriter(spool, flush_interval_s=0.05)
    writer.set_meta_now(schema_version=schema.SCHEMA_VERSION, run_id="gone", name="gone", status="running",
                        started=time.time(), world_size=1)
    shared = tmp_path / "shared"
    messages = []
    publisher = Publisher(spool, FolderStore(shared), "gone", 0, interval_s=3600, log=messages.append)
    for step in range(5):
        writer.add_scalars(step, {"loss": float(step)}, time.time())
        writer.flush()
        publisher.cycle(force=True)
    away = tmp_path / "away"
    shared.rename(away)
    shared.write_text("not a folder any more")
    for step in range(5, 15):
        writer.add_scalars(step, {"loss": float(step)}, time.time())
        writer.flush()
        assert publisher.cycle(force=True) is False
        publisher._retry_at = 0.0  # the test does not wait out the backoff
    assert len(messages) == 1 and "cannot publish" in messages[0] and "nothing is lost" in messages[0]
    assert len(os.listdir(spool / "outbox")) == 10
    shared.unlink()
    away.rename(shared)
    writer.set_meta_now(status="finished")
    writer.close()
    assert publisher.close(timeout_s=10)
    assert "again" in messages[-1]
    Importer(FolderStore(shared), tmp_path / "cache").poll()
    with RunReader(tmp_path / "cache" / "gone") as reader:
        assert list(reader.scalar_series("loss")["step"]) == list(range(15))
        assert reader.status() == "finished"


TRAINER = textwrap.dedent("""
    import sys, time
    import torch
    from gradwatch.trainer.run import Run
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = Run(sys.argv[1], name=sys.argv[2])
    run.watch(model, every=1)
    print(run.id, flush=True)
    for step in range(int(sys.argv[3])):
        loss = model(torch.randn(32, 8)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        run.log(step, loss=loss.item(), wall_logged=time.time())
        time.sleep(float(sys.argv[4]))
    run.finish()
""")


def start_trainer(tmp_path: Path, logdir: str, name: str, steps: int, pause: float, spool: str, extra_env=None):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    env = dict(os.environ, GRADWATCH_SPOOL=spool, PYTHONPATH=str(REPO.parent), **(extra_env or {}))
    return subprocess.Popen([sys.executable, str(script), logdir, name, str(steps), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_kill_9_mid_run_keeps_what_was_published_and_turns_stale(tmp_path):
    shared = tmp_path / "shared"
    proc = start_trainer(tmp_path, shared.as_uri(), "killed", 100000, 0.01, str(tmp_path / "spool"))
    run_id = proc.stdout.readline().strip()
    store = FolderStore(shared)
    prefix = f"{run_id}/segments/r00000"
    assert wait_for(lambda: len(store.list(prefix)) >= 3, 60)
    published = sorted(store.list(prefix))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Every visible file is a whole, verified segment; temp files of a cut publish stay hidden.
    for name in store.list(prefix):
        segment.decode(store.get(f"{prefix}/{name}"), name)
    importer = Importer(store, tmp_path / "cache")
    importer.poll()
    with RunReader(tmp_path / "cache" / run_id) as reader:
        steps = list(reader.scalar_series("loss")["step"])
        assert steps == list(range(len(steps)))  # contiguous from 0: no hole
        # at least every loss step published before the kill (those files may be compacted since)
        before = {row[0] for n in published if n in store.list(prefix)
                  for row in segment.decode(store.get(f"{prefix}/{n}"), n).rows("scalars")[1] if row[1] == "loss"}
        assert before and before <= set(steps)
        assert reader.status() == "running"  # heard from moments ago
    assert wait_for(lambda: RunReader(tmp_path / "cache" / run_id).status() == "stale", 40, 1.0)


def test_a_leftover_spool_is_published_by_the_next_run(tmp_path, monkeypatch):
    """A process that ended before its last segments went out (the store was away) left them in the
    spool; the next run started on the host publishes them."""
    import json
    import socket

    from gradwatch.trainer.runlog.publisher import ORIGIN_FILE

    shared = tmp_path / "shared"
    root = tmp_path / "spool"
    left = root / "old-run-r00000"
    (left / "outbox").mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (left / ORIGIN_FILE).write_text(json.dumps({"logdir": shared.as_uri(), "run_id": "old-run", "rank": 0,
                                                "pid": gone.pid, "pid_start_ticks": None,
                                                "host": socket.gethostname()}))
    data = segment.encode("old-run", 0, 1, 1, {"meta": ([1] * 4, [("run_id", '"old-run"'), ("name", '"old"'),
                                                              ("status", '"finished"'), ("started", "1.0")])})
    (left / "outbox" / segment.segment_name(1, 1, data)).write_bytes(data)
    monkeypatch.setenv("GRADWATCH_SPOOL", str(root))
    with Run(shared.as_uri(), name="next") as run:
        run.log(0, loss=1.0)
        assert wait_for(lambda: FolderStore(shared).list("old-run/segments/r00000"), 20)
    assert wait_for(lambda: not left.exists(), 20)
    Importer(FolderStore(shared), tmp_path / "cache").poll()
    with RunReader(tmp_path / "cache" / "old-run") as reader:
        assert reader.status() == "finished"


def test_a_store_stuck_in_a_call_does_not_hold_the_process(tmp_path):
    import threading

    from gradwatch.trainer.runlog.writer import RunWriter

    release = threading.Event()

    class HungStore(FolderStore):
        def put(self, relpath, data):
            release.wait(60)  # a hung NFS mount: the call does not return
            super().put(relpath, data)

    spool = tmp_path / "spool" / "hung-r00000"
    spool.mkdir(parents=True)
    writer = RunWriter(spool)
    writer.set_meta_now(schema_version=schema.SCHEMA_VERSION, run_id="hung", name="hung", status="running",
                        started=1.0, world_size=1)
    messages = []
    publisher = Publisher(spool, HungStore(tmp_path / "shared"), "hung", 0, interval_s=0.1, log=messages.append)
    assert wait_for(lambda: any(segment.parse_name(n) for n in os.listdir(spool / "outbox")), 10)
    writer.close()
    assert publisher.close(timeout_s=1) is False
    assert "did not return" in messages[-1] and spool.exists()  # kept for the next run to publish
    release.set()


@pytest.mark.slow
def test_store_unreachable_for_60_s_while_training_then_restored(tmp_path, monkeypatch, capfd):
    """The must-show's window: a live run keeps training through 60 s without its store; every record
    arrives once the store is back."""
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    shared = tmp_path / "shared"
    run = Run(shared.as_uri(), name="outage60")
    step = 0

    def train_for(seconds: float) -> int:
        nonlocal step
        end, start = time.time() + seconds, step
        while time.time() < end:
            run.log(step, loss=1.0 / (step + 1))
            step += 1
            time.sleep(0.05)
        return step - start

    train_for(3)
    assert wait_for(lambda: FolderStore(shared).list(f"{run.id}/segments/r00000"), 10)
    shared.rename(tmp_path / "away")
    shared.write_text("the shared folder is gone")
    during = train_for(60)
    assert during > 100  # training went on at its pace (the publisher thread alone waited)
    assert "cannot publish" in capfd.readouterr().err
    shared.unlink()
    (tmp_path / "away").rename(shared)
    train_for(2)
    run.finish()
    Importer(FolderStore(shared), tmp_path / "cache").poll()
    with RunReader(tmp_path / "cache" / run.id) as reader:
        assert list(reader.scalar_series("loss")["step"]) == list(range(step))
        assert reader.status() == "finished"

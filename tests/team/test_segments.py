"""Segments: derived from schema.DDL, verified on read, exported from a spool and imported into a run
folder that reads exactly like the original; compaction keeps files bounded and imports stay exact."""

from __future__ import annotations

import shutil
import sqlite3

import pyarrow as pa
import pytest

from gradwatch.testing import make_run
from gradwatch.trainer.runlog import RunReader, schema, segment
from gradwatch.trainer.runlog.importer import Importer, import_segment, plan
from gradwatch.trainer.runlog.publisher import (
    FANIN,
    MAX_LEVEL,
    Publisher,
    SpoolExporter,
    export_folder,
    level_of,
)
from gradwatch.trainer.runlog.stores import FolderStore
from gradwatch.trainer.runlog.writer import RunWriter

LOCAL_KEYS = {"schema_version", "segment_received"}


def table_contents(run_dir) -> dict:
    """Every table of a run folder as a sorted list of rows, seq left out (it is local to a folder)."""
    conn = sqlite3.connect(run_dir / schema.DB_FILENAME)
    out = {}
    for spec in segment.table_specs():
        rows = conn.execute(f"SELECT {', '.join(spec.column_names)} FROM {spec.name}").fetchall()
        if spec.name == "meta":
            rows = [r for r in rows if r[0] not in LOCAL_KEYS]
        out[spec.name] = sorted(rows, key=repr)
    conn.close()
    return out


def test_segment_tables_come_from_the_schema_ddl():
    specs = segment.spec_by_name()
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema.DDL)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(specs) == tables
    stats = specs["stats"]
    assert stats.appended and "seq" not in stats.column_names
    assert set(schema.STAT_FIELDS) <= set(stats.column_names)
    assert specs["meta"].key == ("key",) and not specs["meta"].appended
    assert specs["scalar_blocks"].key == ("name", "rank", "block")


def test_encode_decode_round_trip_and_checksum():
    tables = {"scalars": ([3, 3], [(0, "loss", 1.5, 10.0, 0), (1, "loss", None, 11.0, 1)]),
              "meta": ([3], [("status", '"running"')])}
    data = segment.encode("r-1", 2, 3, 3, tables)
    name = segment.segment_name(3, 3, data)
    seg = segment.decode(data, name)
    assert (seg.run_id, seg.rank, seg.first, seg.last) == ("r-1", 2, 3, 3)
    names, rows = seg.rows("scalars")
    assert rows == [(0, "loss", 1.5, 10.0, 0), (1, "loss", None, 11.0, 1)]
    assert names == segment.spec_by_name()["scalars"].column_names
    # self-describing: any Arrow reader sees the tables and the header
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    assert "stats" in table.column_names and segment.METADATA_KEY in table.schema.metadata
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(segment.SegmentError, match="checksum"):
        segment.decode(bytes(corrupt), name)
    with pytest.raises(segment.SegmentError, match="checksum"):
        segment.decode(data[: len(data) // 2], name)
    truncated = data[: len(data) // 2]
    with pytest.raises(segment.SegmentError, match="not a gradwatch segment"):
        segment.decode(truncated, segment.segment_name(3, 3, truncated))
    assert segment.parse_name(".tmp-" + name) is None


def test_a_segment_from_a_newer_schema_is_refused_in_one_line():
    data = segment.encode("r-1", 0, 1, 1, {}, schema_version=schema.SCHEMA_VERSION + 1)
    with pytest.raises(segment.SegmentError, match="upgrade gradwatch"):
        segment.decode(data, segment.segment_name(1, 1, data))


def test_exported_and_imported_run_reads_like_the_original(tmp_path):
    original = make_run(tmp_path / "logs", "orig", steps=60, layers=3,
                        flags=[{"rule": "r", "severity": "warning", "first_step": 3}],
                        notes=[{"text": "a note", "step": 5}])
    data = export_folder(original)
    seg = segment.decode(data, segment.segment_name(1, 1, data))
    cache = tmp_path / "cache"
    cache.mkdir()
    assert import_segment(cache, seg) > 0
    assert import_segment(cache, seg) == 0  # idempotent
    assert table_contents(original) == table_contents(cache / "orig")
    with RunReader(original) as a, RunReader(cache / "orig") as b:
        assert a.scalar_names() == b.scalar_names()
        assert a.status() == b.status() == "finished"
        a_stats, _ = a.layer_stats()
        b_stats, _ = b.layer_stats()
        assert a_stats.drop(columns="seq").equals(b_stats.drop(columns="seq"))


def _live_spool(tmp_path):
    spool = tmp_path / "spool" / "live-r00000"
    spool.mkdir(parents=True)
    writer = RunWriter(spool, flush_interval_s=0.05)
    writer.set_meta_now(schema_version=schema.SCHEMA_VERSION, run_id="live", name="live", status="running",
                        started=1.0, world_size=1, config={})
    return spool, writer


def test_spool_publishes_everything_with_compaction_and_import_is_exact(tmp_path):
    spool, writer = _live_spool(tmp_path)
    store = FolderStore(tmp_path / "shared")
    publisher = Publisher(spool, store, "live", 0, interval_s=3600)
    importer = Importer(store, tmp_path / "cache")
    cycles = FANIN * FANIN + 7
    for step in range(cycles):
        writer.add_scalars(step, {"loss": 1.0 / (step + 1), "acc": step / cycles}, 100.0 + step)
        writer.flush()
        publisher.cycle(force=True)
        if step in (5, 40, 200):  # an importer that reads part way, then meets compacted segments
            importer.poll()
    names = store.list("live/segments/r00000")
    # bound: at most FANIN - 1 segments wait at each level below MAX_LEVEL
    assert len(names) <= (FANIN - 1) * MAX_LEVEL + 1
    levels = [level_of(*segment.parse_name(n)[:2]) for n in names]
    assert max(levels) >= 2 and publisher.compactions >= FANIN
    writer.set_meta_now(status="finished")
    writer.close()
    assert publisher.close(timeout_s=5)
    assert not spool.exists()  # published: the spool is cleared
    importer.poll()
    with RunReader(tmp_path / "cache" / "live") as reader:
        series = reader.scalar_series("loss")
        assert len(series) == cycles  # nothing lost, nothing doubled
        assert reader.status() == "finished"
    fresh = Importer(store, tmp_path / "cache2")
    fresh.poll()
    assert table_contents(tmp_path / "cache" / "live") == table_contents(tmp_path / "cache2" / "live")


def test_plan_prefers_compacted_segments_and_never_skips():
    names = ["0000000001-0000000001.aaaaaaaaaaaaaaaa.arrow", "0000000002-0000000002.bbbbbbbbbbbbbbbb.arrow",
             "0000000001-0000000016.cccccccccccccccc.arrow", "0000000017-0000000017.dddddddddddddddd.arrow",
             "0000000019-0000000019.eeeeeeeeeeeeeeee.arrow", ".tmp-junk"]
    assert [n[:2] for n in plan(names, 0)] == [(1, 16), (17, 17)]  # 18 missing: stop before 19
    assert [n[:2] for n in plan(names, 1)] == [(1, 16), (17, 17)]  # overlap: rows after 1 only
    assert plan(names, 17) == []


def test_exporter_sends_keyed_rows_only_when_they_change(tmp_path):
    spool, writer = _live_spool(tmp_path)
    exporter = SpoolExporter(spool / schema.DB_FILENAME, "live", 0)
    first = segment.decode(exporter.export(force=True)[1])
    assert dict(first.rows("meta")[1])["name"] == '"live"'
    assert exporter.export(force=True) is None  # nothing new
    writer.set_meta_now(status="finished")
    seq, data = exporter.export(force=True)
    meta = segment.decode(data).rows("meta")[1]
    assert seq == 2 and [k for k, _ in meta] == ["status"]
    writer.close()
    exporter.close()
    shutil.rmtree(spool)


def test_removed_keys_travel_through_segments_and_compaction(tmp_path):
    spool, writer = _live_spool(tmp_path)
    store = FolderStore(tmp_path / "shared")
    publisher = Publisher(spool, store, "live", 0, interval_s=3600)
    writer.add_scalars(0, {"a": 1.0, "b": 2.0}, 1.0)
    writer.flush()
    publisher.cycle(force=True)
    conn = sqlite3.connect(spool / schema.DB_FILENAME)
    conn.execute("DELETE FROM scalar_blocks WHERE name = 'a'")  # a writer pruning a keyed row
    conn.commit()
    conn.close()
    for step in range(1, FANIN + 2):  # enough publishes to compact the deletion with the rows around it
        writer.add_scalars(step, {"b": float(step)}, 1.0 + step)
        writer.flush()
        publisher.cycle(force=True)
    assert publisher.compactions >= 1
    Importer(store, tmp_path / "cache-late").poll()  # meets the compacted file holding row and removal
    with RunReader(tmp_path / "cache-late" / "live") as reader:
        names = {r[0] for r in reader._query("SELECT DISTINCT name FROM scalar_blocks")}
        assert names == {"b"}
    writer.close()
    publisher.close(timeout_s=5)


def test_a_watched_run_imports_exactly_like_its_spool(tmp_path, monkeypatch):
    """Every table a real run writes (step_norms pruned as it goes, roll-ups, histograms) arrives as it is in
    the writer's own SQLite."""
    import torch

    from gradwatch.trainer.run import Run
    from gradwatch.trainer.runlog import publisher as publisher_module

    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setattr(publisher_module.shutil, "rmtree", lambda *a, **k: None)  # keep the spool to compare
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    shared = tmp_path / "shared"
    importer = Importer(FolderStore(shared), tmp_path / "cache")
    with Run(shared.as_uri(), name="watched", flush_interval_s=0.05) as run:
        run.watch(model, every=7)
        for step in range(400):
            loss = model(torch.randn(16, 6)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(step, loss=loss.item())
            if step % 100 == 50:
                run.flush()
                run._publisher.cycle(force=True)
                importer.poll()  # an importer following the run live
    importer.poll()
    spool = tmp_path / "spool" / f"{run.id}-r00000"
    original, imported = table_contents(spool), table_contents(tmp_path / "cache" / run.id)
    assert original["stats"] and original["scalars"] and original["layer_rollup"]
    if "step_norms" in original:
        assert original["step_norms"]
    assert original == imported


class CountingStore(FolderStore):
    """A shared folder that counts the store operations an importer makes."""

    def __init__(self, root):
        super().__init__(root)
        self.calls = {"list": 0, "list_dirs": 0, "get": 0}

    def list(self, relpath=""):
        self.calls["list"] += 1
        return super().list(relpath)

    def list_dirs(self, relpath=""):
        self.calls["list_dirs"] += 1
        return super().list_dirs(relpath)

    def get(self, relpath):
        self.calls["get"] += 1
        return super().get(relpath)


def test_a_poll_costs_what_is_new_not_the_number_of_runs(tmp_path, monkeypatch):
    from gradwatch.trainer.runlog import importer as importer_module

    store = CountingStore(tmp_path / "shared")
    for i in range(30):
        path = make_run(tmp_path / "made", f"done-{i:02d}", steps=5, layers=1)
        data = export_folder(path)
        store.put(f"done-{i:02d}/segments/r00000/{segment.segment_name(1, 1, data)}", data)
    importer = Importer(store, tmp_path / "cache")
    assert importer.poll().segments == 30
    monkeypatch.setattr(importer_module, "ENDED_QUIET_S", 0.0)  # the runs ended a while ago
    importer.poll()
    for key in store.calls:
        store.calls[key] = 0
    quiet = importer.poll()
    assert quiet.listed_runs == 0 and store.calls == {"list": 0, "list_dirs": 1, "get": 0}  # the root listing only
    spool, writer = _live_spool(tmp_path)
    publisher = Publisher(spool, store, "live", 0, interval_s=3600)
    writer.add_scalars(0, {"loss": 1.0}, 1.0)
    writer.flush()
    publisher.cycle(force=True)
    for key in store.calls:
        store.calls[key] = 0
    live = importer.poll()
    assert live.listed_runs == 1 and live.segments == 1 and store.calls["get"] == 1
    writer.close()
    publisher.close(timeout_s=5)


def test_a_corrupt_or_foreign_segment_is_reported_for_its_run_only(tmp_path):
    store = FolderStore(tmp_path / "shared")
    good = export_folder(make_run(tmp_path / "made", "good", steps=5, layers=1))
    store.put(f"good/segments/r00000/{segment.segment_name(1, 1, good)}", good)
    store.put("bad/segments/r00000/0000000001-0000000001.0123456789abcdef.arrow", b"not arrow at all")
    store.put("theft/segments/r00000/" + segment.segment_name(1, 1, good), good)  # holds run "good"
    store.put("notes.txt", b"a foreign file in the logdir")
    report = Importer(store, tmp_path / "cache").poll()
    assert report.runs == {"good"}
    assert len(report.errors) == 2
    assert any("checksum" in e and "bad" in e for e in report.errors)
    assert any("holds run 'good'" in e for e in report.errors)
    assert not (tmp_path / "cache" / "bad").exists() and not (tmp_path / "cache" / "theft").exists()


def test_segment_folder_name_is_one_constant():
    from gradwatch.dashboard import team

    assert team.SEGMENTS_DIR == segment.SEGMENTS_DIR


def test_an_importer_clears_staging_folders_of_dead_importers(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    cache = tmp_path / "cache"
    dead = cache / f".importing-{gone.pid}-some-run"
    alive = cache / f".importing-{__import__('os').getpid()}-other-run"
    dead.mkdir(parents=True)
    alive.mkdir()
    Importer(FolderStore(tmp_path / "shared"), cache)
    assert not dead.exists() and alive.exists()

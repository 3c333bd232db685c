"""The run-log reader: cursor polling beside a live writer sees every record exactly once and in
order; bad folders and files in logs/ are reported per run and never break the others; run ids
from URLs are validated."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import pytest

from gradwatch.testing import stat_row
from gradwatch.trainer.runlog import RunLogError, RunReader, list_runs, resolve_run_dir, schema
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter


# ---- polling a live writer ----------------------------------------------------------------------
class Poller:
    """What a dashboard does: poll scalars, steps and layer stats by cursor; keep every batch."""

    def __init__(self, run_dir):
        self.reader = RunReader(run_dir)
        self.cursors = {"scalars": 0, "steps": 0, "stats": 0}
        self.scalars, self.steps, self.stats = [], [], []
        self.batches_with_news = 0
        self.stats_steps_seen: set[int] = set()

    def poll(self):
        # steps first, then stats: a step's stats are committed with (before) its steps row,
        # so every step seen here must have its statistics visible by the second query.
        steps, self.cursors["steps"] = self.reader.steps(self.cursors["steps"])
        scalars, self.cursors["scalars"] = self.reader.scalars(self.cursors["scalars"], rank=None)
        stats, self.cursors["stats"] = self.reader.layer_stats(self.cursors["stats"])
        self.steps += steps.to_dict("records")
        self.scalars += scalars.to_dict("records")
        self.stats += stats.to_dict("records")
        if len(steps) or len(scalars) or len(stats):
            self.batches_with_news += 1
        per_step = stats.groupby("step").size().to_dict()
        for step in per_step:
            assert step not in self.stats_steps_seen, f"step {step}'s records were split across polls"
            self.stats_steps_seen.add(step)
        for step in steps["step"]:
            assert step in self.stats_steps_seen, f"steps row {step} visible before its statistics"
        return per_step

    def close(self):
        self.reader.close()


def assert_exactly_once_in_order(rows, expected_count):
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, expected_count + 1)), "gaps, duplicates or disorder in seq"


def test_reader_polling_a_run_training_in_another_thread_sees_every_record_once_in_order(tmp_path):
    import torch
    from torch import nn

    from gradwatch.trainer.run import Run

    n_steps = 200
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = Run(tmp_path, name="live", flush_interval_s=0.01)
    run.watch(model, every=1)
    errors = []

    def train():
        try:
            for step in range(n_steps):
                opt.zero_grad()
                loss = model(torch.randn(4, 4)).pow(2).mean()
                loss.backward()
                opt.step()
                run.log(step, train_loss=loss.item(), check=2 * step + 1)
                if step % 10 == 0:
                    time.sleep(0.005)
            run.finish()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            run.finish("failed", error=repr(exc))

    trainer = threading.Thread(target=train)
    poller = Poller(run.path)
    sizes = []
    trainer.start()
    try:
        while trainer.is_alive():
            sizes.append(poller.poll())
            time.sleep(0.005)
    finally:
        trainer.join(60)
    sizes.append(poller.poll())
    assert poller.reader.refresh_meta()["status"] == "finished"
    poller.close()
    assert not errors, errors
    per_record = 4 * 2 + 1  # 4 parameter tensors x (grad, weight) + 1 activation (Tanh)
    # two logged scalars per step, the optimizer's lr the capture records at each logged step and
    # the capture's two every-step sentinels
    assert_exactly_once_in_order(poller.scalars, 5 * n_steps)
    assert_exactly_once_in_order(poller.steps, n_steps)
    assert_exactly_once_in_order(poller.stats, per_record * n_steps)
    assert [r["step"] for r in poller.steps] == list(range(n_steps))
    assert sorted((r["step"], r["name"]) for r in poller.scalars) == sorted(
        (s, n) for s in range(n_steps)
        for n in ("check", "train_loss", OPTIMIZER_LR, schema.SENTINEL_GRAD_NORM, schema.SENTINEL_NONFINITE))
    assert all(r["value"] == 2 * r["step"] + 1 for r in poller.scalars if r["name"] == "check")
    assert poller.batches_with_news >= 3, "the reader never saw the run while it was being written"
    assert all(size == per_record for batch in sizes for size in batch.values())


def test_reader_thread_polling_a_fast_writer_sees_every_record_once_in_order(tmp_path):
    run_dir = tmp_path / "fast"
    run_dir.mkdir()
    writer = RunWriter(run_dir, flush_interval_s=0.005)
    writer.set_meta_now(status="running", started=time.time())
    writer.add_tensors([
        dict(id=i, name=f"t{i}", layer=f"l{i}", param="weight", role="param", module_type="Linear",
             shape=[2], numel=2, ord=i, trainable=True)
        for i in (1, 2, 3)
    ])
    hist = [1] * schema.HIST_LEN
    n_records, n_scalar_batches = 400, 1600
    done = threading.Event()
    poller = Poller(run_dir)
    errors = []

    def poll_loop():
        try:
            while not done.is_set():
                poller.poll()
            poller.poll()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=poll_loop)
    thread.start()
    try:
        for i in range(n_scalar_batches):
            writer.add_scalars(i, {"a": float(i), "b": -float(i)}, time.time())
            if i % 4 == 0 and i // 4 < n_records:
                step = i // 4
                rows = [(t, k, stat_row(norm=float(step), mean=0.0, std=0.0, min=0.0, max=0.0, nan_count=0,
                                        inf_count=0, zero_frac=0.0), hist)
                        for t in (1, 2, 3) for k in (0, 1)]
                writer.add_layer_record(LayerRecord(step, time.time(), None, rows=rows))
            if i % 25 == 0:
                time.sleep(0.01)  # let the reader in between commits (>= 0.6 s of writing in all)
        writer.flush()
    finally:
        writer.set_meta_now(status="finished")
        writer.close()
        done.set()
        thread.join(30)
    poller.close()
    assert not errors, errors
    assert_exactly_once_in_order(poller.scalars, 2 * n_scalar_batches)
    assert_exactly_once_in_order(poller.steps, n_records)
    assert_exactly_once_in_order(poller.stats, 6 * n_records)
    assert [r["step"] for r in poller.steps] == list(range(n_records))
    assert all(r["norm"] == r["step"] for r in poller.stats)
    assert poller.batches_with_news >= 3


def test_cursor_returns_only_newer_records(tmp_path):
    run_dir = tmp_path / "c"
    run_dir.mkdir()
    writer = RunWriter(run_dir)
    writer.add_scalars(0, {"x": 1.0}, time.time())
    writer.add_scalars(1, {"x": 2.0}, time.time(), rank=1)
    writer.flush()
    with RunReader(run_dir) as reader:
        first, cursor = reader.scalars(rank=None)
        assert first["value"].tolist() == [1.0, 2.0] and cursor == 2
        again, same = reader.scalars(cursor, rank=None)
        assert again.empty and same == cursor
        writer.add_scalars(2, {"x": 3.0}, time.time())
        writer.flush()
        new, cursor = reader.scalars(cursor, rank=None)
        assert new["value"].tolist() == [3.0] and cursor == 3
        assert reader.scalars()[0]["rank"].tolist() == [0, 0]  # default: rank 0 only
    writer.close()


# ---- bad folders and files ----------------------------------------------------------------------
def good_run(logdir, name="good", steps=30):
    import torch
    from torch import nn

    from gradwatch.trainer.run import Run

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Run(logdir, name=name) as run:
        run.watch(model, every=1)
        for step in range(steps):
            opt.zero_grad()
            loss = model(torch.randn(8, 16)).pow(2).mean()
            loss.backward()
            opt.step()
            run.log(step, train_loss=loss.item())
    return run


@pytest.fixture(scope="module")
def messy_logdir(tmp_path_factory):
    logs = tmp_path_factory.mktemp("messy") / "logs"
    run = good_run(logs)
    db = run.path / schema.DB_FILENAME
    data = db.read_bytes()
    assert len(data) > 8 * 4096  # several pages, so half of it is a real truncation

    (logs / "garbage").mkdir()
    (logs / "garbage" / schema.DB_FILENAME).write_bytes(bytes(range(256)) * 64)
    (logs / "truncated").mkdir()
    (logs / "truncated" / schema.DB_FILENAME).write_bytes(data[: len(data) // 2])
    (logs / "empty-folder").mkdir()
    (logs / "stray.txt").write_text("someone's notes")
    (logs / "foreign").mkdir()
    conn = sqlite3.connect(logs / "foreign" / schema.DB_FILENAME)
    conn.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users(email) VALUES ('a@b.c')")
    conn.commit()
    conn.close()
    (logs / "future").mkdir()
    shutil.copy(db, logs / "future" / schema.DB_FILENAME)
    conn = sqlite3.connect(logs / "future" / schema.DB_FILENAME)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    (logs / ".cache").mkdir()  # hidden entries are not runs
    return logs, run


EXPECTED_ERRORS = {
    "garbage": "corrupt",
    "truncated": "corrupt",
    "empty-folder": "no run.sqlite",
    "stray.txt": "not a directory",
    "foreign": "not a gradwatch log",
    "future": "upgrade",
}


def test_list_runs_reports_each_bad_entry_and_reads_the_good_run(messy_logdir):
    logs, run = messy_logdir
    entries = {e.run_id: e for e in list_runs(logs)}
    assert set(entries) == {run.id, *EXPECTED_ERRORS}
    good = entries[run.id]
    assert good.error is None and good.status == "finished"
    assert good.meta["name"] == "good" and good.meta["schema_version"] == schema.SCHEMA_VERSION
    for name, words in EXPECTED_ERRORS.items():
        entry = entries[name]
        assert entry.error and words in entry.error, (name, entry.error)
        assert entry.meta is None and entry.status is None
    # list_runs never opened anything for writing: the bad files are untouched.
    assert (logs / "stray.txt").read_text() == "someone's notes"


@pytest.mark.parametrize("name", ["garbage", "truncated", "empty-folder", "foreign", "future"])
def test_run_reader_raises_run_log_error_naming_the_run(messy_logdir, name):
    logs, _ = messy_logdir
    with pytest.raises(RunLogError) as info:
        RunReader(logs / name)
    assert name in str(info.value)
    assert EXPECTED_ERRORS[name] in str(info.value)


def test_future_schema_version_asks_to_upgrade(messy_logdir):
    logs, _ = messy_logdir
    with pytest.raises(RunLogError, match=r"schema version 99.*upgrade gradwatch"):
        RunReader(logs / "future")


def test_good_run_reads_fully_beside_bad_ones(messy_logdir):
    logs, run = messy_logdir
    with RunReader(resolve_run_dir(logs, run.id)) as reader:
        assert reader.steps()[0]["step"].tolist() == list(range(30))
        scalars = reader.scalars()[0]
        # the logged loss, and the optimizer's lr the capture records at each logged step
        counts = scalars["name"].value_counts().to_dict()  # train_loss, the lr and two sentinels per step
        assert counts == {n: 30 for n in ("train_loss", OPTIMIZER_LR, schema.SENTINEL_GRAD_NORM,
                                          schema.SENTINEL_NONFINITE)}
        assert len(reader.layer_stats()[0]) == 30 * (4 * 2 + 1)


def test_foreign_db_with_a_meta_table_is_not_taken_for_a_newer_gradwatch(tmp_path):
    folder = tmp_path / "other-app"
    folder.mkdir()
    conn = sqlite3.connect(folder / schema.DB_FILENAME)
    conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('app', ?)", (json.dumps("something else"),))
    conn.commit()
    conn.close()
    with pytest.raises(RunLogError) as info:
        RunReader(folder)
    assert "other-app" in str(info.value)
    assert "not a gradwatch log" in str(info.value), str(info.value)


def test_list_runs_of_missing_logdir_is_a_clear_error(tmp_path):
    with pytest.raises(RunLogError, match="does not exist"):
        list_runs(tmp_path / "nope")


@pytest.mark.parametrize(
    "run_id", ["../x", "..", "a/b", "", ".hidden", "x" * 129, "a\\b", "/etc", "a..b", "run\x00", " run", "run\n"]
)
def test_resolve_run_dir_rejects_unsafe_ids(tmp_path, run_id):
    with pytest.raises(RunLogError, match="invalid run id"):
        resolve_run_dir(tmp_path, run_id)


def test_resolve_run_dir_accepts_real_ids(tmp_path):
    assert resolve_run_dir(tmp_path, "20260101-120000-my.run_1-ab12") == (tmp_path / "20260101-120000-my.run_1-ab12").resolve()
    assert resolve_run_dir(tmp_path, "x" * 128).parent == tmp_path.resolve()

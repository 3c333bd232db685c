"""Run ids are unique even when a sweep starts many runs of one name within one second: an id
another run took (found before creation, or by the final rename) is retried with fresh randomness."""

from __future__ import annotations

import threading
import time

from gradwatch.trainer import run as run_module
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, list_runs

SWEEP = 100


def test_a_hundred_same_name_runs_in_one_second_never_collide(tmp_path, monkeypatch):
    second = time.strftime("%Y%m%d-%H%M%S")
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt, *args: second)  # all in one second
    made, errors = [], []

    def start(index: int) -> None:
        try:
            with Run(tmp_path, name="sweep", config={"index": index}) as run:
                run.log(0, loss=float(index))
            made.append(run.id)
        except Exception as exc:  # collected: a collision shows as an error or a lost run
            errors.append(repr(exc))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(SWEEP)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(made)) == SWEEP
    entries = list_runs(tmp_path)
    assert len(entries) == SWEEP and all(e.error is None and e.status == "finished" for e in entries)
    assert sorted(e.meta["config"]["index"] for e in entries) == list(range(SWEEP))  # no run replaced another
    assert all(e.meta["run_id"] == e.run_id for e in entries)


def test_a_taken_id_is_retried_with_fresh_randomness(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt, *args: "20261207-120000")
    tokens = iter(["aaaaaa", "aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(run_module.secrets, "token_hex", lambda n: next(tokens))
    with Run(tmp_path, name="same") as first:
        first.log(0, first=1.0)
    with Run(tmp_path, name="same") as second:
        second.log(0, second=1.0)
    assert first.id == "20261207-120000-same-aaaaaa" and second.id == "20261207-120000-same-bbbbbb"
    with RunReader(first.path) as reader:
        assert reader.scalar_names() == ["first"] and reader.meta["run_id"] == first.id
    with RunReader(second.path) as reader:
        assert reader.scalar_names() == ["second"] and reader.meta["run_id"] == second.id


def test_the_final_rename_onto_a_run_created_meanwhile_is_retried(tmp_path, monkeypatch):
    """Two processes can both find an id free; the loser's rename fails and it takes a new id."""
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt, *args: "20261207-120000")
    tokens = iter(["cccccc", "dddddd"])
    monkeypatch.setattr(run_module.secrets, "token_hex", lambda n: next(tokens))
    real_create = Run._create

    def racing_create(self, root, run_id, target, *args):
        if run_id.endswith("cccccc"):  # a neighbour creates the same id between our check and rename
            other = root / run_id
            other.mkdir()
            (other / "run.sqlite").write_bytes(b"")
        return real_create(self, root, run_id, target, *args)

    monkeypatch.setattr(Run, "_create", racing_create)
    with Run(tmp_path, name="race") as run:
        run.log(0, loss=1.0)
    assert run.id == "20261207-120000-race-dddddd"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".building-")]
    assert (tmp_path / "20261207-120000-race-cccccc" / "run.sqlite").read_bytes() == b""  # untouched

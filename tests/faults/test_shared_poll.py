"""Load: viewers of one live run share its reads. Twenty tabs polling at the same cursor cause one
read of each kind per change (counted at the reader), all get the same answer, and it is the answer
an unshared poll gives. SharedReads itself: single flight, errors not kept, bounded, short-lived."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from gradwatch.dashboard import ids
from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.shared_reads import SharedReads
from gradwatch.dashboard.views import run as logic
from gradwatch.dashboard.views import run_charts
from gradwatch.testing import LiveRun
from gradwatch.trainer.runlog import RunReader

VIEWERS = 20
COUNTED = ("cursors", "scalar_rows_after", "layer_values_after", "histograms")


@pytest.fixture
def reads(monkeypatch):
    """How often each reader query behind a live poll ran (every RunReader in this process)."""
    counts: Counter = Counter()
    lock = threading.Lock()
    for name in COUNTED:
        real = getattr(RunReader, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            with lock:
                counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(RunReader, name, counting)
    return counts


def draw(store, chart_id, **view):
    return run_charts.render(run_charts.BY_ID[chart_id], store, run_charts.ChartArgs(run_id="live", **view))["live"]


def poll_together(store, live_stores, meta) -> list[dict]:
    """VIEWERS threads poll at the same moment with the same stores (tabs at the same cursor)."""
    start = threading.Barrier(VIEWERS)
    results: list = [None] * VIEWERS

    def viewer(index):
        start.wait()
        results[index] = logic.poll_impl(store, "live", dict(live_stores), dict(meta), slow_every=1)

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(VIEWERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in results)
    return results


def test_twenty_viewers_at_one_cursor_cause_one_read_per_change(tmp_path, reads):
    live = LiveRun(tmp_path, "live", layers=3)
    store = RunStore(tmp_path, None)
    store.shared = SharedReads(ttl_s=600)  # the count, not the lifetime, is under test here
    try:
        for _ in range(4):
            live.write_step()
        live.writer.flush()
        info = store.run_info("live")
        stores = {ids.FIG_LOSS: draw(store, ids.FIG_LOSS), ids.FIG_GRAD_TIME: draw(store, ids.FIG_GRAD_TIME),
                  ids.FIG_HIST_GRAD: draw(store, ids.FIG_HIST_GRAD, layer="net.0", param="weight", info=info)}
        meta = {"status": "running", "running": True, "ticks": 0}
        for change in range(1, 4):
            for _ in range(2):
                live.write_step()
            live.writer.flush()
            reads.clear()
            results = poll_together(store, stores, meta)
            assert dict(reads) == {name: 1 for name in COUNTED}, f"change {change}: {dict(reads)}"
            first = results[0]
            assert set(first["delta"]) == set(stores)
            assert all(r["delta"] == first["delta"] and r["refresh"] == first["refresh"] for r in results)
            unshared = logic.poll_impl(RunStore(tmp_path, None), "live", dict(stores), dict(meta), slow_every=1)
            assert unshared["delta"] == first["delta"]  # sharing changes the cost, not the answer
            for chart_id, payload in first["delta"].items():  # the browser applies it: cursors move on
                stores[chart_id] = dict(stores[chart_id], cursor=payload["to"],
                                        appended=stores[chart_id].get("appended", 0) + payload["added"])
            meta = first["meta"]
        assert stores[ids.FIG_GRAD_TIME]["cursor"] > 0 and stores[ids.FIG_HIST_GRAD]["cursor"] == live.step - 1
        reads.clear()
        poll_together(store, stores, meta)  # nothing new since: the change check alone, no query at all
        assert sum(reads.values()) == 0
    finally:
        live.stop()


def test_viewers_at_staggered_cursors_still_cause_one_read_per_change(tmp_path, reads):
    """Tabs poll at their own moments, so they hold different cursors: the run's tail serves them all."""
    live = LiveRun(tmp_path, "live", layers=3)
    store = RunStore(tmp_path, None)
    store.shared = SharedReads(ttl_s=600)
    try:
        for _ in range(4):
            live.write_step()
        live.writer.flush()
        info = store.run_info("live")
        opened = {ids.FIG_LOSS: draw(store, ids.FIG_LOSS), ids.FIG_GRAD_TIME: draw(store, ids.FIG_GRAD_TIME),
                  ids.FIG_HIST_GRAD: draw(store, ids.FIG_HIST_GRAD, layer="net.0", param="weight", info=info)}
        tabs = [dict(opened) for _ in range(VIEWERS)]
        metas = [{"ticks": 0} for _ in range(VIEWERS)]
        groups = 5
        for group in range(groups):  # a change, then a fifth of the tabs poll: five distinct cursors
            live.write_step()
            live.writer.flush()
            for index in range(group, VIEWERS, groups):
                result = logic.poll_impl(store, "live", dict(tabs[index]), metas[index], slow_every=1)
                for chart_id, payload in result["delta"].items():
                    tabs[index][chart_id] = dict(tabs[index][chart_id], cursor=payload["to"])
                metas[index] = result["meta"]
        assert len({tab[ids.FIG_LOSS]["cursor"] for tab in tabs}) == groups
        assert reads["scalar_rows_after"] == groups  # already one per change while they spread out
        live.write_step()
        live.writer.flush()
        reads.clear()
        results, start = [None] * VIEWERS, threading.Barrier(VIEWERS)

        def viewer(index):
            start.wait()
            results[index] = logic.poll_impl(store, "live", dict(tabs[index]), metas[index], slow_every=1)

        threads = [threading.Thread(target=viewer, args=(i,)) for i in range(VIEWERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert dict(reads) == {name: 1 for name in COUNTED}
        fresh = RunStore(tmp_path, None)
        for index in range(groups):  # each cursor got exactly its own rows: what an unshared poll gives
            unshared = logic.poll_impl(fresh, "live", dict(tabs[index]), metas[index], slow_every=1)
            assert results[index]["delta"] == unshared["delta"] and set(unshared["delta"]) == set(opened)
    finally:
        live.stop()


def test_a_tail_trims_its_oldest_rows_and_leaves_far_cursors_to_a_direct_read():
    import numpy as np

    from gradwatch.dashboard.live_tail import GrowingTail

    table = np.arange(1, 1001)  # the source: keys 1..1000, appended over time
    written = [10]

    def read(after, head):
        keys = table[(table > after) & (table <= written[0])]
        return {"seq": keys, "value": keys * 2.0}, max(head, int(keys[-1]) if len(keys) else after), {}

    tail = GrowingTail(read, "seq", max_rows=100)
    assert tail.rows_after(0, 10)["seq"].tolist() == list(range(1, 11)) and tail.reads == 1
    assert tail.rows_after(7, 10)["seq"].tolist() == [8, 9, 10] and tail.reads == 1  # from memory
    for end in range(20, 401, 10):  # forty changes, one read each
        written[0] = end
        rows = tail.rows_after(end - 15, end)
        assert rows["seq"].tolist() == list(range(end - 14, end + 1)) and rows["value"][0] == 2 * (end - 14)
    assert tail.reads == 40 and len(tail.columns["seq"]) <= 100 and tail.base > 200
    assert tail.rows_after(10, 400) is None  # 390 behind, more than the tail keeps: the caller reads
    assert tail.rows_after(350, 400)["seq"].tolist() == list(range(351, 401))


def test_viewers_at_different_cursors_each_get_their_own_rows(tmp_path):
    live = LiveRun(tmp_path, "live", layers=2)
    store = RunStore(tmp_path, None)
    try:
        for _ in range(3):
            live.write_step()
        live.writer.flush()
        early = draw(store, ids.FIG_LOSS)
        for _ in range(2):
            live.write_step()
        live.writer.flush()
        late = draw(store, ids.FIG_LOSS)
        live.write_step()
        live.writer.flush()
        meta = {"ticks": 0}
        from_early = logic.poll_impl(store, "live", {ids.FIG_LOSS: early}, meta)["delta"][ids.FIG_LOSS]
        from_late = logic.poll_impl(store, "live", {ids.FIG_LOSS: late}, meta)["delta"][ids.FIG_LOSS]
        loss = early["keys"].index("scalar:train_loss")
        steps = {d["base"]: d["extend"][0]["x"][d["extend"][1].index(loss)] for d in (from_early, from_late)}
        assert steps == {early["cursor"]: [3, 4, 5], late["cursor"]: [5]}
    finally:
        live.stop()


def test_single_flight_runs_one_compute_for_concurrent_callers():
    shared = SharedReads()
    release, started = threading.Event(), threading.Event()
    calls = []

    def slow_read():
        calls.append(1)
        started.set()
        release.wait(30)
        return {"rows": [1, 2, 3]}

    answers = []
    owner = threading.Thread(target=lambda: answers.append(shared.get("k", slow_read)))
    owner.start()
    started.wait(30)
    waiters = [threading.Thread(target=lambda: answers.append(shared.get("k", slow_read))) for _ in range(9)]
    for thread in waiters:
        thread.start()
    release.set()
    for thread in [owner, *waiters]:
        thread.join(30)
    assert len(calls) == 1 and shared.reads == 1
    assert len(answers) == 10 and all(a is answers[0] for a in answers)


def test_a_failed_read_reaches_its_waiters_and_is_not_kept():
    shared = SharedReads()

    def broken():
        raise ValueError("disk gone")

    with pytest.raises(ValueError, match="disk gone"):
        shared.get("k", broken)
    assert len(shared) == 0
    assert shared.get("k", lambda: 7) == 7 and shared.reads == 2


def test_answers_expire_and_memory_stays_bounded():
    now = [0.0]
    shared = SharedReads(ttl_s=2.0, max_entries=3, max_bytes=10_000, clock=lambda: now[0])
    assert shared.get("a", lambda: 1) == 1
    assert shared.get("a", lambda: 2) == 1  # within its lifetime: kept
    now[0] = 2.5
    assert shared.get("a", lambda: 3) == 3  # expired: read again
    for key in "bcde":
        shared.get(key, lambda: 0)
    assert len(shared) == 3  # least recently used went first
    import numpy as np

    shared.get("big", lambda: np.zeros(2_000))  # 16 kB: over the byte bound, handed out, not kept
    assert shared.nbytes <= 10_000 and "big" not in shared._entries
    with pytest.raises(ValueError, match="ttl_s"):
        SharedReads(ttl_s=0)

"""The Runs page for sweeps: filter terms on config values, flags, status, sweep and tags; grouping with
each group's size and best run; server-side paging at 2,000 runs."""

from __future__ import annotations

import pytest

from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.summaries import config_values, sweep_and_tags
from gradwatch.dashboard.views import runs as runs_logic
from gradwatch.testing import make_run


def summary(i: int, lr: float, optimizer: str, sweep: str, flags=(), status="finished", loss=None) -> dict:
    return {"run_id": f"run-{i:04d}", "name": f"run-{i:04d}", "status": status, "error": None, "pending": False,
            "config": f"{optimizer} lr={lr:g}", "config_values": {"lr": lr, "optimizer": optimizer, "model.depth": 2},
            "sweep": sweep, "tags": ["nightly"] if i % 2 else [], "flag_rules": list(flags),
            "flags": {"critical": 0, "warning": len(flags), "info": 0}, "started": float(i),
            "best_val_loss": loss if loss is not None else 1.0 + i / 10_000, "steps": 100}


@pytest.fixture(scope="module")
def sweep_summaries():
    rows = []
    for i in range(2000):
        lr = (0.1, 0.01, 0.001)[i % 3]
        flags = ("overfitting",) if i % 5 == 0 else ()
        rows.append(summary(i, lr, "adam" if i % 4 else "sgd", f"sweep-{i // 500}", flags,
                            status="failed" if i % 7 == 0 else "finished"))
    return rows


def _ids(rows):
    return [r["run_id"] for r in rows]


def test_config_terms_match_numbers_and_text(sweep_summaries):
    lr = runs_logic.filter_sort(sweep_summaries, {"q": "lr=0.01"})
    assert len(lr) == len([s for s in sweep_summaries if s["config_values"]["lr"] == 0.01]) > 0
    assert all(s["config_values"]["lr"] == 0.01 for s in lr)
    small = runs_logic.filter_sort(sweep_summaries, {"q": "lr<0.05 optimizer=sgd"})
    assert small and all(s["config_values"]["lr"] < 0.05 and s["config_values"]["optimizer"] == "sgd" for s in small)
    assert runs_logic.filter_sort(sweep_summaries, {"q": "model.depth=2"}) == \
        runs_logic.filter_sort(sweep_summaries, {})
    assert runs_logic.filter_sort(sweep_summaries, {"q": "missing_key=1"}) == []
    not_adam = runs_logic.filter_sort(sweep_summaries, {"q": "optimizer!=adam"})
    assert not_adam and all(s["config_values"]["optimizer"] != "adam" for s in not_adam)


def test_flag_status_sweep_and_tag_terms(sweep_summaries):
    flagged = runs_logic.filter_sort(sweep_summaries, {"q": "flag:overfitting"})
    assert len(flagged) == 400 and all(s["flag_rules"] for s in flagged)
    assert len(runs_logic.filter_sort(sweep_summaries, {"q": "flag:none"})) == 1600
    failed = runs_logic.filter_sort(sweep_summaries, {"q": "status:failed sweep:sweep-1"})
    assert failed and all(s["status"] == "failed" and s["sweep"] == "sweep-1" for s in failed)
    assert len(runs_logic.filter_sort(sweep_summaries, {"q": "tag:nightly"})) == 1000


def test_grouping_pages_and_heads(sweep_summaries, tmp_path):
    view = runs_logic.parse_runs_query({"group": "sweep", "sort": "best_val_loss", "desc": "0"})
    assert view["group"] == "sweep" and "group=sweep" in runs_logic.runs_query_string(view)
    assert "group" not in runs_logic.parse_runs_query({"group": "../etc"})
    rows = runs_logic.filter_sort(sweep_summaries, view)
    order = [s["sweep"] for s in rows]
    assert order == sorted(order)  # grouped: each sweep's runs together
    heads = runs_logic.group_headers(rows, "sweep")
    assert heads["sweep-2"][0] == 500 and heads["sweep-2"][2] == "run-1000"  # its best (lowest loss) run
    by_lr = runs_logic.filter_sort(sweep_summaries, {"group": "lr"})
    assert [s["config_values"]["lr"] for s in by_lr][:1] == [0.001]  # numeric group order


class FakeStore:
    logdir = "sweep"

    def __init__(self, summaries):
        self._summaries = summaries

    def summaries(self, budget_s=0.6):
        return self._summaries, 0


def test_two_thousand_runs_render_one_page(sweep_summaries):
    result = runs_logic.runs_table_impl(FakeStore(sweep_summaries), runs_logic.parse_runs_query({"page": "3"}), [])
    assert result["pages"] == 20 and result["page"] == 3
    assert str(result["table"]).count("data-run") == runs_logic.PAGE_SIZE  # only one page goes to the browser
    grouped = runs_logic.runs_table_impl(FakeStore(sweep_summaries),
                                         runs_logic.parse_runs_query({"group": "sweep", "q": "lr=0.1"}), [])
    text = str(grouped["table"])
    assert "sweep = sweep-0" in text and "group-row" in text


def test_summaries_carry_config_values_sweep_and_tags(tmp_path):
    assert config_values({"lr": 0.1, "model": {"depth": 3}, "layers": [1, 2], "name": "x" * 500}) == \
        {"lr": 0.1, "model.depth": 3}
    assert sweep_and_tags({"tags": ["a", "b"]}, {"sweep": "s1"}) == ("s1", ["a", "b"])
    make_run(tmp_path / "logs", "swept", steps=20, config={"lr": 0.02, "sweep": "lr-sweep", "tags": ["t1"]})
    store = RunStore(tmp_path / "logs", tmp_path / "cache")
    (row,), _ = store.summaries(budget_s=60)
    assert row["config_values"]["lr"] == 0.02 and row["sweep"] == "lr-sweep" and row["tags"] == ["t1"]
    assert runs_logic.filter_sort([row], {"q": "sweep:lr-sweep lr>0.01"}) == [row]

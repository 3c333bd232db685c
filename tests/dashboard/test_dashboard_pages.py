"""Runs, Compare and Launch logic without a server (filter/sort/page, side-by-side data, validation)."""

import pytest

from gradwatch.dashboard.data import RunStore
from gradwatch.dashboard.views import compare as compare_logic
from gradwatch.dashboard.views import launch as launch_logic
from gradwatch.dashboard.views import runs as runs_logic
from gradwatch.testing import make_corrupt_run, make_run
from gradwatch.trainer.options import OptionsError
from gradwatch.trainer.presets import PRESETS, resolve


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_run(root, "overfit", steps=200, pathology="overfit", started=1000.0)
    make_run(root, "dropout", steps=200, preset="dropout", config={"dropout": 0.5}, started=2000.0)
    make_run(root, "exploding", steps=200, pathology="exploding", started=3000.0)
    make_corrupt_run(root, "broken")
    return RunStore(root, tmp_path_factory.mktemp("cache"))


def _ids(rows):
    return [r["run_id"] for r in rows]


def test_runs_filter_sort_and_error_rows(store):
    summaries, _ = store.summaries(budget_s=60)  # contents, not the time budget
    default = runs_logic.filter_sort(summaries, runs_logic.parse_runs_query({}))
    # Newest first; an unreadable folder sorts by its modification time.
    assert [i for i in _ids(default) if i != "broken"] == ["exploding", "dropout", "overfit"]
    by_loss = runs_logic.filter_sort(summaries, {"sort": "best_val_loss", "desc": False})
    assert _ids(by_loss)[0] == "overfit" and _ids(by_loss)[-1] == "broken"  # missing values last
    assert _ids(runs_logic.filter_sort(summaries, {"q": "dropout=0.5"})) == ["dropout"]
    assert _ids(runs_logic.filter_sort(summaries, {"q": "exploding_gradient"})) == ["exploding"]
    assert _ids(runs_logic.filter_sort(summaries, {"status": ["error"]})) == ["broken"]
    assert _ids(runs_logic.filter_sort(summaries, {"status": ["failed"]})) == ["exploding"]
    by_flags = runs_logic.filter_sort(summaries, {"sort": "flags", "desc": True})
    assert _ids(by_flags)[0] == "exploding"


def test_runs_query_round_trip_and_table(store):
    view = runs_logic.parse_runs_query({"q": "drop", "status": "running,bogus", "sort": "steps", "desc": "0",
                                        "page": "x"})
    assert view == {"q": "drop", "status": ["running"], "sort": "steps", "desc": False, "page": 1}
    assert runs_logic.runs_query_string(view) == "?q=drop&status=running&sort=steps&desc=0"
    assert runs_logic.runs_query_string(runs_logic.parse_runs_query({})) == ""
    result = runs_logic.runs_table_impl(store, runs_logic.parse_runs_query({}), ["overfit"])
    assert result["summary"].startswith("4 runs") and "1 error" in result["summary"]
    again = runs_logic.runs_table_impl(store, runs_logic.parse_runs_query({}), [])
    assert again["signature"] == result["signature"]  # nothing changed: the table is not re-sent
    text = str(result["table"])
    assert "corrupt" in text and "exploding" in text


def test_compare_runs_side_by_side(store):
    query = compare_logic.parse_compare_query({"runs": "overfit,dropout,overfit,missing", "step": "50"})
    assert query == {"runs": ["overfit", "dropout", "missing"], "step": 50}
    result = compare_logic.compare_impl(store, query["runs"], query["step"])
    assert result["valid"] == ["overfit", "dropout"]
    assert any("missing" in e for e in result["errors"])
    assert result["step"] == 50
    rows = {r["run_id"]: r for r in result["rows"]}
    assert rows["overfit"]["best_epoch"] == 3 and rows["overfit"]["test_accuracy"] == 0.78
    assert rows["overfit"]["test_macro_f1"] == 0.77
    assert {t.name for t in result["curves"].data} == {"overfit", "dropout"}
    assert len(result["flow"].data) == 2
    assert compare_logic.compare_query_string(["a", "b"], 7) == "?runs=a%2Cb&step=7"


def test_launch_form_validation_uses_the_cli_messages():
    values = launch_logic.form_values("dropout", {"lr": "0.0003", "not_an_option": "x"})
    assert values["lr"] == "0.0003" and "not_an_option" not in values
    ok = launch_logic.validate_impl("dropout", values)
    assert ok["ok"] and ok["overrides"] == {"lr": "0.0003"}
    values["batchnorm"] = ["on"]  # a checklist
    assert launch_logic.validate_impl("dropout", values)["overrides"]["batchnorm"] == "true"
    for name, bad in (("dropout", "1.0"), ("lr", "fast"), ("activation", "swish"), ("epochs", "0")):
        result = launch_logic.validate_impl("dropout", dict(launch_logic.form_values("dropout"), **{name: bad}))
        with pytest.raises(OptionsError) as cli:
            resolve("dropout", {name: bad})
        assert not result["ok"] and result["message"] == str(cli.value)
    assert "unknown preset" in launch_logic.validate_impl("nope", {})["message"]
    unchanged = launch_logic.validate_impl("overfit", launch_logic.form_values("overfit"))
    assert unchanged["overrides"] == {}
    assert {c["value"] for c in launch_logic.preset_choices()} == set(PRESETS)

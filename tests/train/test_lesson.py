"""The lesson suite: claims checked on made-up summaries (each claim can fail), and a small suite run
through the CLI printing the comparison table."""

from pathlib import Path

import numpy as np
import pytest

from gradwatch.cli import main
from gradwatch.trainer.train.lesson import REMEDIES, RunSummary, check_claims, format_claims, markdown_table


def _run(preset, val, train=None, status="finished", config=None, **results) -> RunSummary:
    train = train if train is not None else [0.5 / (i + 1) for i in range(len(val))]
    defaults = {"test_accuracy": 0.75, "epochs_run": len(val)}
    if val:
        defaults.update(val_loss=val[-1], final_gap=val[-1] - train[-1])
    return RunSummary(preset=preset, path=Path("."), status=status, results={**defaults, **results},
                      config=config or {"dataset": "tweets"}, val_loss=list(val), train_loss=list(train))


def _good_suite() -> dict[str, RunSummary]:
    overfit_val = [0.5, 0.55, 0.7, 0.9] + [1.0] * 16
    overfit_train = [0.6, 0.3, 0.1] + [0.01] * 17
    runs = {"overfit": _run("overfit", overfit_val, overfit_train)}
    for name in REMEDIES:
        runs[name] = _run(name, [0.5, 0.48, 0.6], test_accuracy=0.79)
    runs["early-stopping"] = _run("early-stopping", [0.5, 0.47, 0.5, 0.6, 0.7], config={"patience": 3},
                                  val_loss=0.47, early_stopped=True, restored_best=True, epochs_run=5)
    vanishing = _run("vanishing", [0.69], config={"dataset": "circles"})
    vanishing.grad_gap, vanishing.first_layer, vanishing.last_layer = 1e5, "fc1", "out"
    relu = _run("relu", [0.1], config={"dataset": "circles"})
    relu.grad_gap = 2.0
    exploding = _run("exploding", [], status="failed", config={"dataset": "circles"})
    exploding.grad_norm_total = np.array([400.0, 6e6, np.inf])
    clipping = _run("clipping", [0.2], config={"dataset": "circles", "clip_norm": 1.0}, train_loss=0.1)
    clipping.grad_norm_total = np.array([400.0, 300.0, 2.0])
    clipping.grad_norm_clipped = np.array([1.0, 1.0, 1.0])
    clipping.step_train_loss = np.array([60.0, 30.0, 0.2])
    runs.update(vanishing=vanishing, relu=relu, exploding=exploding, clipping=clipping)
    return runs


def test_claims_pass_on_the_lesson_picture():
    claims = check_claims(_good_suite())
    assert len(claims) == 1 + len(REMEDIES) + 1 + 1 + 2 + 2
    assert all(c.passed for c in claims), format_claims(claims)


@pytest.mark.parametrize("breakage,claim_start", [
    (lambda r: r["overfit"].val_loss.__setitem__(slice(4, None), [0.6] * 16), "overfit"),
    (lambda r: r["overfit"].train_loss.__setitem__(19, 0.2), "overfit"),
    (lambda r: r["dropout"].results.__setitem__("val_loss", 1.2), "dropout"),
    (lambda r: r["early-stopping"].results.__setitem__("restored_best", False), "early-stopping: stops"),
    (lambda r: r["early-stopping"].results.__setitem__("epochs_run", 9), "early-stopping: stops"),
    (lambda r: [x.results.__setitem__("test_accuracy", 0.7) for x in r.values()], "best preset"),
    (lambda r: setattr(r["vanishing"], "grad_gap", 50.0), "vanishing"),
    (lambda r: setattr(r["relu"], "grad_gap", 2e4), "relu"),
    (lambda r: setattr(r["exploding"], "grad_norm_total", np.array([400.0, 800.0])), "exploding"),
    (lambda r: setattr(r["clipping"], "grad_norm_clipped", np.array([1.0, 3.0])), "clipping"),
    (lambda r: setattr(r["clipping"], "status", "failed"), "clipping"),
])
def test_each_claim_can_fail(breakage, claim_start):
    runs = _good_suite()
    breakage(runs)
    failed = [c for c in check_claims(runs) if not c.passed]
    assert failed and all(c.name.startswith(claim_start) for c in failed), format_claims(failed)


def test_missing_runs_are_not_checked():
    claims = check_claims({"vanishing": _good_suite()["vanishing"]})
    assert [c.passed for c in claims if c.name.startswith("l1")] == [None]
    assert markdown_table({}).startswith("| preset | status |")


def test_small_suite_through_the_cli(tmp_path, capsys):
    markdown = tmp_path / "lesson.md"
    code = main(["lesson", "--only", "overfit,early-stopping,vanishing,relu,exploding,clipping", "--epochs", "4",
                 "--limit", "300", "--threads", "1", "--logdir", str(tmp_path / "logs"), "--markdown",
                 str(markdown), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table, claims = captured.out.split("\n\n", 1)
    rows = table.splitlines()
    assert rows[0].split()[:3] == ["preset", "status", "epochs"]
    assert [row.split()[0] for row in rows[2:]] == ["overfit", "early-stopping", "vanishing", "relu", "exploding",
                                                    "clipping"]
    assert next(row for row in rows if row.startswith("exploding")).split()[1] == "failed"
    for name in ("vanishing", "relu", "exploding", "clipping"):
        line = next(line for line in claims.splitlines() if line.startswith(f"[PASS] {name}")
                    or line.startswith(f"[FAIL] {name}"))
        assert line.startswith("[PASS]"), line
    assert len(list((tmp_path / "logs").iterdir())) == 6
    assert "| vanishing | finished |" in markdown.read_text()


def test_a_suite_shortened_with_epochs_does_not_fail_the_full_length_claims():
    """`lesson --epochs 3`: overfit has not overfit yet, so its claims (and the remedies', early
    stopping's, best accuracy's) say "not checked" instead of FAIL; the gradient claims still count."""
    runs = _good_suite()
    runs["overfit"] = _run("overfit", [0.6, 0.55, 0.5], [0.6, 0.4, 0.3], config={"dataset": "tweets", "epochs": 3})
    claims = check_claims(runs)
    text = format_claims(claims)
    assert "FAIL" not in text
    unchecked = [c for c in claims if c.passed is None]
    assert {c.name.split(":")[0] for c in unchecked} >= {"overfit", "dropout", "early-stopping"}
    assert all("ran 3 of its 20 epochs" in c.measured for c in unchecked)
    assert all(c.passed for c in claims if c.name.startswith(("vanishing", "relu", "exploding", "clipping")))
    runs["overfit"].config["epochs"] = 20  # the full length: the same numbers fail as they should
    assert any(c.passed is False for c in check_claims(runs) if c.name.startswith("overfit"))

"""End to end on runs trained for real: `gradwatch train` writes two run folders, the real dashboard
(gunicorn) serves them, and headless Chromium reads the Compare page's metrics table. The test
accuracy and macro-F1 cells must show what the trainer stored in meta["results"] (they were once
always empty: the page read results["accuracy"] while the trainer writes test_accuracy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.dashboard.components import fmt_number
from gradwatch.trainer.runlog import RunReader

from .conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a real server: not the fast lane
REPO = Path(__file__).resolve().parents[2]


def train(logdir: Path, preset: str, name: str) -> Path:
    """One tiny real training run through the CLI; returns its run folder (the last line printed)."""
    result = subprocess.run(
        [sys.executable, "-m", "gradwatch", "train", "--preset", preset, "--epochs", "1", "--limit", "200",
         "--logdir", str(logdir), "--name", name, "--threads", "1", "--quiet"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("trained") / "logs"
    runs = [train(logdir, "relu", "relu-run"), train(logdir, "dropout", "dropout-run")]
    server = Server(logdir, tmp_path_factory.mktemp("trained-cache") / "c")
    yield server, runs
    server.stop()


def test_compare_shows_the_test_accuracy_and_macro_f1_the_trainer_stored(trained, page):
    server, runs = trained
    expected = {}
    for run_dir in runs:
        with RunReader(run_dir) as reader:
            results = reader.meta["results"]
        assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["test_macro_f1"] <= 1.0
        expected[run_dir.name] = (fmt_number(results["test_accuracy"]), fmt_number(results["test_macro_f1"]))

    page.goto(server.url + "/compare?runs=" + ",".join(run.name for run in runs))
    table = page.locator("#cmp-table table")
    table.wait_for()
    headers = table.locator("thead th").all_inner_texts()
    accuracy_col, f1_col = headers.index("Test accuracy"), headers.index("Test macro F1")
    rows = table.locator("tbody tr")
    assert rows.count() == len(runs)
    for i in range(rows.count()):
        row = rows.nth(i)
        run_id = row.locator("a").first.get_attribute("href").split("run=")[-1]
        cells = row.locator("td").all_inner_texts()
        assert (cells[accuracy_col], cells[f1_col]) == expected[run_id]
        assert cells[accuracy_col] != "—"

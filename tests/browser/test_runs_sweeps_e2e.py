"""The Runs page for sweeps in Chromium: a config term filters, a group-by field groups the rows and the
URL keeps both (a copied link reproduces the view)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def test_filter_by_config_value_and_group_by_a_config_key(server, page):
    page.goto(server.url + "/?q=dropout%3D0.5")
    page.locator('tr[data-run="regularized"]').wait_for()
    assert page.locator("table.runs tbody tr[data-run]").count() == 1  # only the run with dropout 0.5
    page.goto(server.url + "/")
    page.locator('tr[data-run="overfit"]').wait_for()
    page.fill("#runs-group", "dropout")
    page.press("#runs-group", "Enter")
    page.locator("tr.group-row", has_text="dropout = 0.5").wait_for()
    page.wait_for_url(re.compile(r"group=dropout"))
    heads = page.locator("tr.group-row").all_inner_texts()
    half = [i for i, h in enumerate(heads) if h.startswith("dropout = 0.5 · 1 run")]
    assert half and heads[-1].startswith("no dropout")  # groups in value order, ungrouped last
    assert any(h.startswith("dropout = 0 ") or h.startswith("dropout = 0.0") for h in heads[:half[0]])
    rows = page.locator("table.runs tbody tr").evaluate_all(
        "rows => rows.map(r => r.className === 'group-row' ? r.innerText : r.dataset.run)")
    head = next(i for i, r in enumerate(rows) if r.startswith("dropout = 0.5"))
    assert rows[head + 1] == "regularized"  # the group's run right under its head
    page.reload()  # the URL carries the view
    page.locator("tr.group-row", has_text="dropout = 0.5").wait_for()

"""End to end: headless Chromium against the real dashboard (gunicorn, 2 workers) on real run folders.

The exploding run is a fixture run with an exploding-gradient pathology, diagnosed by the real rules
(trainer.diagnose). Every test also fails on any browser console error (see conftest).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from gradwatch.testing import LiveRun
from gradwatch.trainer.runlog import RunReader

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a real server: not the fast lane
REPO = Path(__file__).resolve().parents[2]

TRACE_POINTS = """([id, key]) => {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!gd || !gd.data) return null;
  const trace = gd.data.find(t => t.meta === key);
  return trace ? Array.from(trace.x) : null;
}"""


def trace_x(page, fig_id: str, key: str):
    return page.evaluate(TRACE_POINTS, [fig_id, key])


def wait_until(predicate, timeout=20.0, interval=0.25, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def test_runs_page_lists_runs_and_an_error_row_for_a_corrupt_folder(server, page):
    page.goto(server.url + "/")
    broken = page.locator('tr[data-run="corrupt-run"]')
    broken.wait_for()
    assert "corrupt" in broken.inner_text() and "error" in broken.inner_text()
    exploding = page.locator('tr[data-run="exploding"]')
    assert "failed" in exploding.inner_text() and "critical" in exploding.inner_text()
    overfit = page.locator('tr[data-run="overfit"]')
    assert "0.3 (epoch 3)" in overfit.inner_text()  # best validation loss and its epoch
    overfit.locator("a.run-link").click()  # the other runs still work
    page.wait_for_url(re.compile(r"/run\?run=overfit"))
    page.locator(".flag-card", has_text="Overfitting").wait_for()


def test_exploding_run_shows_the_flag_and_its_evidence(server, page):
    page.goto(server.url + "/run?run=exploding")
    card = page.locator(".flag-card", has_text="Exploding gradients")
    card.wait_for()
    assert "critical" in card.inner_text()
    assert "net.0" in card.locator(".flag-layers").inner_text()
    card.locator("details.flag-evidence summary").click()
    evidence = card.locator("table.evidence")
    assert "growth decades" in evidence.inner_text() and "max grad norm" in evidence.inner_text()
    assert card.locator("a.remedy-link", has_text="clipping").count() == 1  # remedy -> Launch the preset


def test_flag_click_moves_the_view_and_a_copied_link_reproduces_it(server, new_page):
    page = new_page()
    page.goto(server.url + "/run?run=exploding&layer=net.4")
    page.locator("#run-layer", has_text="net.4").wait_for()
    card = page.locator(".flag-card", has_text="Exploding gradients")
    card.wait_for()
    first_step = int(re.search(r"steps (\d+)", card.locator(".flag-steps").inner_text()).group(1))
    card.locator(".flag-rule").click()
    page.wait_for_url(re.compile(rf"layer=net\.0.*step={first_step}&from=\d+&to=\d+"))
    page.locator("#run-layer", has_text="net.0").wait_for()
    page.locator("#fig-flow .gtitle", has_text=f"step {first_step}").wait_for()
    url = page.url
    range_from = page.input_value("#run-range-from")

    teammate = new_page()  # a fresh browser context: no shared state but the URL
    teammate.goto(url)
    teammate.locator("#run-layer", has_text="net.0").wait_for()
    teammate.locator("#fig-flow .gtitle", has_text=f"step {first_step}").wait_for()
    assert teammate.input_value("#run-range-from") == range_from
    assert teammate.locator("#run-follow input").is_checked() is False


def test_a_live_run_loss_curve_grows_without_duplicates(server, page, logdir):
    live = LiveRun(logdir, "live-e2e", layers=3, step_interval_s=0.1)
    try:
        live.start()
        page.goto(server.url + "/run?run=live-e2e")
        page.locator("#run-status", has_text="running").wait_for()
        first = wait_until(lambda: trace_x(page, "fig-loss", "scalar:train_loss"), message="loss points")
        grown = wait_until(lambda: (x := trace_x(page, "fig-loss", "scalar:train_loss")) and
                           len(x) >= len(first) + 15 and x, timeout=25, message="the loss curve to grow")
        assert grown == sorted(set(grown)), "a live tick duplicated or reordered points"
        assert grown == list(range(grown[0], grown[-1] + 1)), "a live tick dropped points"
        # The per-layer chart is drawn after the first charts (its own callback): on a loaded
        # machine it may come a little after the loss curve has grown.
        grad = wait_until(lambda: (x := trace_x(page, "fig-grad-time", "layer:net.0")) and len(x) > 10 and x,
                          timeout=25, message="the per-layer gradient chart to draw")
        assert grad and len(grad) > 10
    finally:
        live.stop()
    page.locator("#run-status", has_text="finished").wait_for(timeout=20_000)


def test_a_note_added_in_one_browser_shows_in_another(server, new_page, logdir):
    live = LiveRun(logdir, "notes-e2e", layers=2, step_interval_s=0.2)
    try:
        live.start()
        viewer = new_page()
        viewer.goto(server.url + "/run?run=notes-e2e")
        viewer.locator("#notes-list", has_text="No notes yet").wait_for()
        author = new_page()
        author.goto(server.url + "/run?run=notes-e2e")
        author.fill("#note-text", "<b>loss plateau</b> starts here")
        author.fill("#note-author", "ann")
        author.fill("#note-step", "3")
        author.click("#note-add")
        author.locator("#note-message", has_text="Note added").wait_for()
        # The viewer's page picks the note up on its next live poll, shown as typed (no markup).
        viewer.locator("#notes-list", has_text="<b>loss plateau</b> starts here").wait_for(timeout=15_000)
        assert viewer.locator("#notes-list b").count() == 0
        notes_x = wait_until(lambda: trace_x(viewer, "fig-loss", "notes"), message="the note marker")
        assert notes_x == [3]
    finally:
        live.stop()


def test_read_only_mode_refuses_writes_on_the_server(read_only_server, page, logdir):
    page.goto(read_only_server.url + "/run?run=overfit")
    page.locator(".flag-card").first.wait_for()
    assert page.locator("#read-only-banner").is_visible()
    assert page.locator("#note-add").is_disabled()
    before = len(RunReader(logdir / "overfit").notes()[0])
    # A crafted request to the callback endpoint (what a hidden button would send) is refused too.
    response = page.evaluate("""async () => {
      const deps = await (await fetch('/_dash-dependencies')).json();
      const cb = deps.find(d => d.output.includes('note-message.children'));
      const outputs = cb.output.replace(/^\\.\\.|\\.\\.$/g, '').split('...').map(o => {
        const i = o.lastIndexOf('.'); return {id: o.slice(0, i), property: o.slice(i + 1)}; });
      const values = {'note-add': 1, 'run-id': 'overfit', 'note-text': 'sneaky', 'note-author': 'm', 'note-step': 1};
      const body = {output: cb.output, outputs: outputs, changedPropIds: ['note-add.n_clicks'],
        inputs: cb.inputs.map(i => ({id: i.id, property: i.property, value: values[i.id] ?? null})),
        state: cb.state.map(s => ({id: s.id, property: s.property, value: values[s.id] ?? null}))};
      const r = await fetch('/_dash-update-component', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                        body: JSON.stringify(body)});
      return {status: r.status, text: await r.text()};
    }""")
    assert response["status"] == 200 and "read-only" in response["text"]
    assert len(RunReader(logdir / "overfit").notes()[0]) == before
    page.goto(read_only_server.url + "/launch")
    page.locator("#launch-button").wait_for()
    assert page.locator("#launch-button").is_disabled()


def test_no_console_errors_on_any_page(server, page):
    for path, ready in (
        ("/", 'tr[data-run="overfit"]'),
        ("/run?run=overfit", ".flag-card"),
        ("/run?run=vanishing&layer=net.1&from=10&to=150", ".flag-card"),
        ("/run?run=regularized", "#fig-flow .gtitle"),
        ("/compare?runs=overfit,regularized,exploding", "#cmp-table table"),
        ("/launch?preset=dropout&lr=oops", "#launch-validation .error-box"),
        ("/run?run=../../etc/passwd", ".error-box"),
        ("/run?run=corrupt-run", ".error-box"),
        ("/no/such/page", "h2"),
    ):
        page.goto(server.url + path)
        page.locator(ready).first.wait_for()
        page.wait_for_load_state("networkidle")
        if path.startswith("/launch"):
            assert "invalid lr 'oops'" in page.locator("#launch-validation").inner_text()


def test_launch_a_preset_watch_its_loss_curve_grow_and_stop_it(server, page, logdir):
    page.goto(server.url + "/launch?preset=overfit&limit=300&epochs=400")
    page.locator("#launch-validation .ok-box").wait_for()
    assert "limit=300" in page.locator("#launch-validation").inner_text()
    page.fill("#launch-name", "e2e-launch")
    page.click("#launch-button")
    page.locator("#launch-result .ok-box").wait_for()
    link = page.locator("#jobs-table a", has_text="e2e-launch")
    link.wait_for(timeout=90_000)
    link.click()
    page.wait_for_url(re.compile(r"/run\?run="))
    run_id = re.search(r"run=([^&]+)", page.url).group(1)
    first = wait_until(lambda: trace_x(page, "fig-loss", "scalar:train_loss"), timeout=90, message="loss points")
    wait_until(lambda: len(trace_x(page, "fig-loss", "scalar:train_loss") or []) > len(first) + 5, timeout=90,
               message="the loss curve to grow")
    with RunReader(logdir / run_id) as reader:
        assert reader.meta.get("job_id", "").startswith("j") and reader.meta["config"]["limit"] == 300
    # Stop it from the Launch page (any viewer can): the run ends "stopped".
    page.goto(server.url + "/launch")
    row = page.locator("#jobs-table tr", has_text="e2e-launch")
    row.locator("button", has_text="Stop").click()
    page.locator("#jobs-message .ok-box").wait_for()
    row.locator(".status-stopped").wait_for(timeout=60_000)
    with RunReader(logdir / run_id) as reader:
        assert reader.meta["status"] == "stopped"


def test_zooming_a_chart_sets_the_step_range_of_every_step_chart(server, page):
    page.goto(server.url + "/run?run=overfit")
    # The later charts are drawn too (their first draws report relayout events that are not zooms).
    page.wait_for_function("() => { const gd = document.querySelector('#fig-grad-time .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length > 0; }")
    page.evaluate("() => Plotly.relayout(document.querySelector('#fig-loss .js-plotly-plot'),"
                  " {'xaxis.range[0]': 40.2, 'xaxis.range[1]': 119.6})")
    page.wait_for_url(re.compile(r"from=40&to=120"))
    assert page.input_value("#run-range-from") == "40" and page.input_value("#run-range-to") == "120"
    # The other step charts follow the range.
    page.wait_for_function("() => { const gd = document.querySelector('#fig-grad-time .js-plotly-plot');"
                           " const r = gd && gd.layout && gd.layout.xaxis && gd.layout.xaxis.range;"
                           " return r && Math.round(r[0]) === 40 && Math.round(r[1]) === 120; }")

"""The Dash app through its HTTP interface (Flask test client): health, auth, page routes, server-side
read-only refusal on the callback endpoint, the export entry point, and no torch anywhere."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch.dashboard.app import create_app
from gradwatch.dashboard.config import Settings, SettingsError
from gradwatch.dashboard.export import export_run
from gradwatch.testing import make_corrupt_run, make_run
from gradwatch.trainer.runlog import RunReader

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_run(root, "exploding", steps=120, pathology="exploding")
    make_run(root, "notes", steps=60, notes=[{"text": "<script>alert('x')</script> & co", "step": 5,
                                              "author": "<b>eve</b>"}])
    make_corrupt_run(root, "broken")
    return root


def _app(logdir, tmp_path, **settings):
    return create_app(Settings(logdir=logdir, cache_dir=tmp_path / "cache", **settings))


def call_callback(client, app, output_contains: str, inputs: dict, state: dict, changed: str):
    """POST one callback the way the browser does; returns (status, response json or None)."""
    key = next(k for k in app.callback_map if output_contains in k)
    spec = app.callback_map[key]
    outputs = []
    for part in key.strip(".").split("..."):
        ident, prop = part.rsplit(".", 1)
        outputs.append({"id": ident, "property": prop})
    body = {
        "output": key, "outputs": outputs,
        "inputs": [dict(i, value=inputs.get(i["id"])) for i in spec["inputs"]],
        "state": [dict(s, value=state.get(s["id"])) for s in spec["state"]],
        "changedPropIds": [changed],
    }
    response = client.post("/_dash-update-component", json=body)
    return response.status_code, (response.get_json() if response.data else None)


def test_health_endpoint_and_pages(logdir, tmp_path):
    app = _app(logdir, tmp_path)
    client = app.server.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "ok" and body["runs"] == 3 and body["read_only"] is False
    for path in ("/", "/run?run=exploding", "/compare?runs=exploding,notes", "/launch?preset=dropout",
                 "/run?run=../../etc/passwd"):
        assert client.get(path).status_code == 200
    assert client.get("/_dash-layout").status_code == 200


def test_basic_auth_from_settings(logdir, tmp_path):
    app = _app(logdir, tmp_path, auth_user="team", auth_password="s3cret")
    client = app.server.test_client()
    assert client.get("/").status_code == 401
    assert "Basic" in client.get("/").headers["WWW-Authenticate"]
    wrong = base64.b64encode(b"team:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"team:s3cret").decode()
    assert client.get("/", headers={"Authorization": f"Basic {right}"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # load balancers probe without credentials
    with pytest.raises(SettingsError, match="both"):
        Settings(logdir=logdir, auth_user="team")
    env = Settings.from_env({"GRADWATCH_LOGDIR": str(logdir), "GRADWATCH_READ_ONLY": "true",
                             "GRADWATCH_USER": "u", "GRADWATCH_PASSWORD": "p"})
    assert env.read_only and env.auth_enabled


def test_read_only_refuses_notes_on_the_server(logdir, tmp_path):
    app = _app(logdir, tmp_path, read_only=True)
    client = app.server.test_client()
    before = len(RunReader(logdir / "notes").notes()[0])
    status, body = call_callback(
        client, app, "note-message.children",
        inputs={"note-add": 1, "refresh-notes": 0},
        state={"run-id": "notes", "note-text": "sneaky", "note-author": "mallory", "note-step": 3},
        changed="note-add.n_clicks",
    )
    assert status == 200
    assert "read-only" in json.dumps(body["response"]["note-message"])
    assert len(RunReader(logdir / "notes").notes()[0]) == before


def test_notes_are_written_when_writable(logdir, tmp_path):
    app = _app(logdir, tmp_path)
    client = app.server.test_client()
    status, body = call_callback(
        client, app, "note-message.children",
        inputs={"note-add": 1, "refresh-notes": 0},
        state={"run-id": "notes", "note-text": "plateau from here", "note-author": "ann", "note-step": 30},
        changed="note-add.n_clicks",
    )
    assert status == 200 and "Note added" in json.dumps(body["response"]["note-message"])
    notes, _ = RunReader(logdir / "notes").notes()
    assert notes[-1]["text"] == "plateau from here" and notes[-1]["step"] == 30


def test_export_is_self_contained_and_escapes_user_text(logdir, tmp_path):
    out = export_run(logdir / "notes", tmp_path / "report.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "plotly" in text.lower() and len(text) > 3_000_000
    assert "<script>alert('x')</script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in text
    assert "&lt;b&gt;eve&lt;/b&gt;" in text
    # The summary is trainer.derived's: the fixture's test metrics and its best validation epoch.
    summary = text[text.index("<h2>Summary</h2>"):text.index("<h2>Flags</h2>")]
    assert "<td>0.78</td>" in summary and "<td>0.77</td>" in summary and "(epoch " in summary
    flagged = export_run(logdir / "exploding", tmp_path / "exploding.html").read_text()
    assert "Exploding gradients" in flagged and "Remedies" in flagged
    result = subprocess.run([sys.executable, "-m", "gradwatch", "export", str(logdir / "broken"), "-o",
                             str(tmp_path / "x.html")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "corrupt" in result.stderr


def test_dashboard_never_imports_torch():
    code = (
        "import sys, tempfile\n"
        "import gradwatch, gradwatch.cli, gradwatch.dashboard, gradwatch.dashboard.app, gradwatch.dashboard.wsgi\n"
        "from gradwatch.dashboard.pages import runs, run, compare, launch\n"
        "import gradwatch.dashboard.export, gradwatch.dashboard.jobs, gradwatch.dashboard.jobrunner\n"
        "gradwatch.cli.build_parser()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "GRADWATCH_LOGDIR": str(REPO / "logs"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_pages_load_the_partial_plotly_bundle_and_none_of_the_unused_scripts(logdir, tmp_path):
    """page_scripts: Dash's polyfill and dash_table's bundle stay out of every page's index; the
    assets' plotly.js partial bundle and the regenerator runtime the renderer's lazy loader needs are in."""
    from gradwatch.dashboard.page_scripts import without_unused_scripts

    client = _app(logdir, tmp_path).server.test_client()
    page = client.get("/run?run=exploding").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert any("/assets/plotly-gradwatch.min.js" in s for s in scripts)
    assert any("/assets/regenerator-runtime.min.js" in s for s in scripts)
    assert any("dash_renderer" in s for s in scripts) and any("dash_core_components" in s for s in scripts)
    assert not any("polyfill@" in s or "dash_table/bundle" in s or "plotly-cartesian" in s for s in scripts)
    for src in scripts:  # what the index names is served
        assert client.get(src).status_code == 200, src
    kept = '<script src="/_dash-component-suites/dash/dcc/dash_core_components.v1.js"></script>'
    html = ('<script src="/_dash-component-suites/dash/deps/polyfill@7.v4_4_1m1.12.1.min.js"></script>\n' + kept
            + '\n<script src="/_dash-component-suites/dash/dash_table/bundle.v7_4_1m1.js"></script>\n')
    assert without_unused_scripts(html) == kept + "\n"

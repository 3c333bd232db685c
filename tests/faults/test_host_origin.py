"""DNS rebinding and cross-site writes: the dashboard answers only to the host names it is allowed
(default: localhost, 127.0.0.1, ::1, this machine's name and the bind address; configurable with
--allowed-hosts / GRADWATCH_ALLOWED_HOSTS), and a state-changing request carrying a foreign Origin is
refused: `gradwatch ui` (gunicorn in process), the Flask app itself (what the --debug development
server serves) and the Procfile's gunicorn (test_gunicorn_slow_clients.py)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gradwatch.dashboard.app import create_app, host_name
from gradwatch.dashboard.config import Settings, SettingsError
from gradwatch.testing import make_run

from .conftest import REPO

NOTE_POST = {"output": "x", "outputs": [], "inputs": [], "state": [], "changedPropIds": []}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_run(root, "good", steps=10)
    return root


def _client(logdir, tmp_path, **settings):
    app = create_app(Settings(logdir=logdir, cache_dir=tmp_path / "cache", **settings))
    return app.server.test_client()


def test_a_rebinding_host_is_refused_for_pages_and_callbacks(logdir, tmp_path):
    client = _client(logdir, tmp_path)
    for path in ("/", "/run?run=good", "/_dash-layout"):
        response = client.get(path, headers={"Host": "rebind.evil.example"})
        assert response.status_code == 400 and b"not allowed" in response.data, path
    response = client.post("/_dash-update-component", json=NOTE_POST, headers={"Host": "rebind.evil.example:8050"})
    assert response.status_code == 400
    for host in ("localhost", "localhost:8050", "127.0.0.1:8050", "[::1]:8050", socket.gethostname()):
        assert client.get("/", headers={"Host": host}).status_code == 200, host


def test_a_foreign_origin_cannot_post_even_with_an_allowed_host(logdir, tmp_path):
    client = _client(logdir, tmp_path)
    for origin in ("http://rebind.evil.example", "null", "http://127.0.0.1.evil.example:8050"):
        response = client.post("/_dash-update-component", json=NOTE_POST,
                               headers={"Host": "127.0.0.1:8050", "Origin": origin})
        assert response.status_code == 400, origin
    same = client.post("/_dash-update-component", json=NOTE_POST,
                       headers={"Host": "127.0.0.1:8050", "Origin": "http://127.0.0.1:8050"})
    assert same.status_code != 400


def test_allowed_hosts_are_configurable(logdir, tmp_path, monkeypatch):
    client = _client(logdir, tmp_path, allowed_hosts=("dash.team.example",))
    assert client.get("/", headers={"Host": "dash.team.example:443"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400
    monkeypatch.setenv("GRADWATCH_ALLOWED_HOSTS", "a.example, B.example")
    assert Settings.from_env(logdir=logdir).allowed_hosts == ("a.example", "b.example")
    anyone = _client(logdir, tmp_path, allowed_hosts=("*",))
    assert anyone.get("/", headers={"Host": "whatever.example"}).status_code == 200
    with pytest.raises(SettingsError, match="not a host name"):
        Settings(logdir=logdir, allowed_hosts=("bad host/",))
    assert host_name("[::1]:8050") == "::1" and host_name("Example.COM:80") == "example.com"


def test_healthz_does_not_reveal_the_logdir(logdir, tmp_path):
    body = _client(logdir, tmp_path).get("/healthz").get_json()
    assert body["status"] == "ok" and str(logdir) not in json.dumps(body) and "logdir" not in body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, host: str, path: str = "/healthz") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("mode", [[]], ids=["gunicorn"])
def test_gradwatch_ui_refuses_a_rebinding_host(logdir, tmp_path, mode):
    port = _free_port()
    env = dict(os.environ, GRADWATCH_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "gradwatch", "ui", "--logdir", str(logdir), "--port", str(port),
                             *mode],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, f"127.0.0.1:{port}") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the dev server did not start"
            time.sleep(0.2)
        assert _get(port, "rebind.evil.example", "/") == 400
        assert _get(port, f"localhost:{port}", "/") == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)

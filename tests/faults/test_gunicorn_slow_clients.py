"""Against real gunicorn on 127.0.0.1 with the Procfile's settings (gunicorn_conf): 8 slow clients
(request headers sent a byte at a time, then stalled) do not make /healthz time out; a 300 MB
request body is refused (413) from its Content-Length, before it is read; a DNS-rebinding Host is
refused (400)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gradwatch.testing import make_run

from .conftest import REPO

SLOW_CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(port: int, path: str = "/healthz", host: str | None = None, timeout: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gunicorn")
    make_run(root / "logs", "good", steps=10)
    port = _free_port()
    env = dict(os.environ, GRADWATCH_LOGDIR=str(root / "logs"), GRADWATCH_CACHE_DIR=str(root / "cache"),
               PYTHONPATH=str(REPO), GRADWATCH_WORKERS="2")
    log = open(root / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:gradwatch.dashboard.gunicorn_conf",
                             "--bind", f"127.0.0.1:{port}", "gradwatch.dashboard.wsgi:server"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _status(port) == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (root / "gunicorn.log").read_text()[-2000:]
            time.sleep(0.3)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_eight_slow_clients_do_not_starve_healthz(server):
    port = server
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            slow.append(sock)
        for _ in range(3):  # they keep trickling, a byte at a time
            for sock in slow:
                sock.sendall(b"X")
            time.sleep(0.3)
        answered = [_status(port, timeout=10) for _ in range(5)]
        assert answered == [200] * 5
        assert _status(port, "/", timeout=20) == 200  # a page, not only the health check
    finally:
        for sock in slow:
            sock.close()


def test_a_huge_request_body_is_refused_before_it_is_read(server):
    port = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        sock.sendall(b"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 314572800\r\n\r\n" + b"[" * 65536)
        reply = sock.recv(4096).decode("latin-1")
    finally:
        sock.close()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_a_rebinding_host_is_refused_under_gunicorn(server):
    assert _status(server, "/", host="rebind.evil.example") == 400
    assert _status(server, "/", host=f"localhost:{server}") == 200

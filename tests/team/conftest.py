"""Real parts for the team tests: an S3 bucket on a moto server started and stopped here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # answering, if only with an error status
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


class MotoServer:
    """moto's S3 server on 127.0.0.1: a real HTTP S3 endpoint, stoppable to simulate an outage."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self) -> MotoServer:
        exe = Path(sys.executable).with_name("moto_server")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/moto-api/")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(monkeypatch):
    """A fresh moto S3 server with bucket gw-team; AWS_ENDPOINT_URL points s3fs at it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    server = MotoServer(free_port()).start()
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": server.url}.items():
        monkeypatch.setenv(key, value)
    import fsspec
    import s3fs

    # fsspec caches filesystem instances, endpoint included: each test's server is a new endpoint.
    s3fs.S3FileSystem.clear_instance_cache()
    fsspec.filesystem("s3").mkdir("gw-team")
    try:
        yield server
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def s3_env(server: MotoServer) -> dict:
    return {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": server.url}


REPO = Path(__file__).resolve().parents[2]


class UiServer:
    """The real `gradwatch ui` in its own process (session), stopped by the test that started it."""

    def __init__(self, *args: str, env: dict | None = None, log: Path | None = None, gunicorn: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = dict(os.environ, **(env or {}))
        if gunicorn:
            command = [sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "4", "-b",
                       f"127.0.0.1:{self.port}", "gradwatch.dashboard.wsgi:server"]
        else:
            command = [sys.executable, "-m", "gradwatch", "ui", "--port", str(self.port), *args]
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gradwatch ui exited: {log.read_text()[-2000:] if log else ''}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError("gradwatch ui did not answer within 90 s")

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

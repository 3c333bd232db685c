"""Browser end-to-end fixtures: the real dashboard under gunicorn (2 workers) on a free port with a temp
log directory, driven by headless Debian Chromium through Playwright (never `playwright install`).

Every page opened through the `page`/`new_page` fixtures records browser console errors and uncaught
exceptions; a test fails if any occurred.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]

# A missing browser is a failed check, never a skipped one: `bash scripts/setup.sh --dev` installs
# Debian's chromium and the playwright package.
try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - setup problem, reported as a failure
    pytest.fail("playwright is not installed: run `bash scripts/setup.sh --dev`", pytrace=False)
if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} not found: browser tests drive Debian's chromium (`bash scripts/setup.sh --dev`)",
                pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`gunicorn -w 2 --threads 4 dashboard.wsgi:server` in its own process group."""

    def __init__(self, logdir: Path, cache_dir: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cache_dir.parent / f"gunicorn-{self.port}.log"
        environment = dict(os.environ, GRADWATCH_LOGDIR=str(logdir), GRADWATCH_CACHE_DIR=str(cache_dir),
                           GRADWATCH_POLL_MS="500", PYTHONPATH=str(REPO), **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "4", "--timeout", "120", "-b",
             f"127.0.0.1:{self.port}", "gradwatch.dashboard.wsgi:server"],
            cwd=REPO, env=environment, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the dashboard did not answer /healthz within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def logdir(tmp_path_factory):
    from gradwatch.testing import make_corrupt_run, make_run

    root = tmp_path_factory.mktemp("e2e") / "logs"
    make_run(root, "exploding", steps=300, pathology="exploding", layers=4)
    make_run(root, "overfit", steps=300, pathology="overfit")
    make_run(root, "regularized", steps=300, preset="regularized", config={"dropout": 0.5, "l2": 1e-4})
    make_run(root, "vanishing", steps=200, layers=6, pathology="vanishing")
    make_corrupt_run(root, "corrupt-run")
    yield root
    # Jobs launched by the tests must not outlive them.
    from gradwatch.dashboard.jobs import JobManager

    jobs = JobManager(root)
    for job in jobs.list():
        if job.active:
            jobs.stop(job.job_id)


@pytest.fixture(scope="session")
def server(logdir, tmp_path_factory):
    srv = Server(logdir, tmp_path_factory.mktemp("cache") / "c")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def read_only_server(logdir, tmp_path_factory):
    srv = Server(logdir, tmp_path_factory.mktemp("cache-ro") / "c", GRADWATCH_READ_ONLY="1")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def browser():
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


class ConsoleWatch:
    def __init__(self):
        self.errors: list[str] = []

    def attach(self, page):
        page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text[:500]}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {str(exc)[:500]}"))
        return page


@pytest.fixture
def new_page(browser):
    """Factory: a page in a fresh browser context (a separate "teammate"), console errors watched."""
    contexts, watch = [], ConsoleWatch()

    def make(viewport=(1500, 1100)):
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        context.set_default_timeout(20_000)
        contexts.append(context)
        return watch.attach(context.new_page())

    yield make
    for context in contexts:
        context.close()
    assert watch.errors == [], "browser console errors:\n" + "\n".join(watch.errors)


@pytest.fixture
def page(new_page):
    return new_page()

"""Shared pieces of the dashboard benchmarks: the big synthetic run, a gunicorn server, a headless browser,
and calling Dash callbacks over HTTP exactly as the browser does.

Not a benchmark itself. The big run is generated once with the real RunWriter and reused across
invocations (it is deterministic): GRADWATCH_BENCH_DIR (default /tmp/gradwatch-bench).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_DIR = Path(os.environ.get("GRADWATCH_BENCH_DIR", "/tmp/gradwatch-bench"))
BIG_STEPS = 200_000
BIG_LAYERS = 20
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]


def percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def big_run(steps: int = BIG_STEPS, layers: int = BIG_LAYERS) -> tuple[Path, float | None]:
    """The big run's log directory (generated if missing) and the generation time (None if reused).

    200,000 logged optimizer steps (statistics every step) x 20 Linear layers' weights: 8 million
    gradient/weight statistics rows, histograms every 100th step, 1 million scalars.
    """
    from gradwatch.testing import make_run
    from gradwatch.trainer.runlog import schema

    # The schema (version and tables/indexes) is in the name: a folder an older writer made is not reused.
    ddl = hashlib.sha1(f"{schema.DDL}{schema.SCALAR_BLOCK}".encode()).hexdigest()[:8]
    logdir = BENCH_DIR / f"big-{steps}x{layers}-v{schema.SCHEMA_VERSION}-{ddl}"
    done = logdir / ".complete"
    if done.exists():
        return logdir, None
    if logdir.exists():
        import shutil

        shutil.rmtree(logdir)
    start = time.perf_counter()
    make_run(logdir, "big", steps=steps, layers=layers, every=1, epochs=100, bias=False, activations=False,
             hist_every=100, step_seconds=0.01)
    elapsed = time.perf_counter() - start
    done.write_text(json.dumps({"generated_s": elapsed}))
    return logdir, elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """The dashboard as the Procfile serves it (gunicorn_conf: its worker class and limits), with
    `workers` x `threads` (None: gunicorn_conf's defaults)."""

    def __init__(self, logdir: Path, cache_dir: Path, workers: int | None = 2, threads: int | None = None, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cache_dir.parent.mkdir(parents=True, exist_ok=True)  # the dashboard makes its cache folder itself
        sizes = {k: str(v) for k, v in (("GRADWATCH_WORKERS", workers), ("GRADWATCH_THREADS", threads)) if v}
        environment = dict(os.environ, GRADWATCH_LOGDIR=str(logdir), GRADWATCH_CACHE_DIR=str(cache_dir),
                           PYTHONPATH=str(REPO), **sizes, **env)
        self.log = open(cache_dir.parent / f"gunicorn-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:gradwatch.dashboard.gunicorn_conf", "--timeout", "300",
             "-b", f"127.0.0.1:{self.port}", "gradwatch.dashboard.wsgi:server"],
            cwd=REPO, env=environment, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.log.close()


class DashClient:
    """Calls callbacks over HTTP like the browser: POST /_dash-update-component.

    A plain kept-alive http.client connection (not requests): a simulated viewer should cost its own
    process as little as a poll can, since a real browser's poll runs on the viewer's machine."""

    def __init__(self, base_url: str, deps: list | None = None):
        from urllib.parse import urlsplit

        self.base = base_url
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.connection = None
        self.deps = deps if deps is not None else json.loads(self._request("GET", "/_dash-dependencies")[1])

    def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of GET `path` on the same connection."""
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        import http.client

        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def spec(self, output_prefix: str) -> dict:
        """The callback whose output string equals, else starts with, `output_prefix`."""
        exact = [d for d in self.deps if d["output"] == output_prefix]
        return exact[0] if exact else next(d for d in self.deps if d["output"].startswith(output_prefix))

    def call(self, output_prefix: str, values: dict, changed: str) -> tuple[float, int, dict | None]:
        """(seconds, response bytes, json) for one callback request."""
        spec = self.spec(output_prefix)
        outputs = []
        for part in spec["output"].strip(".").split("..."):
            ident, prop = part.rsplit(".", 1)
            outputs.append({"id": ident, "property": prop})
        body = {
            "output": spec["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [dict(i, value=values.get(i["id"])) for i in spec["inputs"]],
            "state": [dict(s, value=values.get(s["id"])) for s in spec.get("state", [])],
            "changedPropIds": [changed],
        }
        payload = json.dumps(body).encode()
        start = time.perf_counter()
        status, content = self._request("POST", "/_dash-update-component", payload)
        elapsed = time.perf_counter() - start
        if status == 204:
            return elapsed, 0, None
        if status != 200:
            raise RuntimeError(f"callback {spec['output'][:60]!r} answered HTTP {status}: {content[:200]!r}")
        return elapsed, len(content), json.loads(content)


def launch_browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return playwright, browser


if __name__ == "__main__":
    path, seconds = big_run()
    print(json.dumps({"big_run": str(path), "generated_s": seconds}))

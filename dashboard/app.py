"""The Dash application: pages, shell, health endpoint, basic auth, read-only mode.

`create_app(settings)` builds one app; its callbacks close over that app's settings, run store and job
manager (nothing is read from globals), so a process may build several apps (tests do). Pages are
registered explicitly (use_pages with pages_folder="") so page modules stay importable without an app.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from urllib.parse import urlsplit

import dash
from dash import Dash, dcc, html
from flask import Response, jsonify, request

from gradwatch._version import __version__ as VERSION

from . import components, team
from .config import ENV_ALLOWED_HOSTS, FLASK_CONFIG_KEY, Settings, ensure_private_dir, validate_logdir
from .context import AppContext
from .page_scripts import GradwatchDash
from .pages import compare, launch, run, runs

PAGES = (
    (runs, "Runs", "gradwatch · runs", 0),
    (run, "Run", "gradwatch · run", 1),
    (compare, "Compare", "gradwatch · compare", 2),
    (launch, "Launch", "gradwatch · launch", 3),
)


def not_found_layout(**_query):
    return html.Div(className="page", children=[
        html.H2("Page not found"),
        html.P("There is no such page. Start from the list of runs."),
        dcc.Link("← all runs", href="/"),
    ])


def _page_layout(module, ctx: AppContext):
    def page_layout(**query):
        # Query values arrive as strings; a page never trusts them (each page parses and validates).
        clean = {k: v for k, v in query.items() if isinstance(v, str)}
        try:
            return module.layout(ctx, **clean)
        except Exception as exc:  # a broken run must never take the page (or the worker) down
            return html.Div(className="page", children=[
                components.error_box(f"{type(exc).__name__}: {exc}", "This page failed to load"),
                dcc.Link("← all runs", href="/"),
            ])

    page_layout.__name__ = f"{module.__name__.rsplit('.', 1)[-1]}_layout"
    return page_layout


def create_app(settings: Settings | None = None) -> Dash:
    settings = settings or Settings.from_env()
    validate_logdir(settings.logdir)
    ensure_private_dir(settings.cache_dir)
    ctx = AppContext.from_settings(settings)
    # assets/plotly-gradwatch.min.js (plotly.js 4.1.1 with only scatter, bar and heatmap, the trace
    # types the figures use: scripts/build_plotly_bundle.sh) sets window.Plotly, which dcc.Graph uses
    # instead of loading the full 4.8 MB plotly.js; without eager loading, Dash's other async chunks
    # (date pickers, markdown, mathjax) are fetched only if a page uses them. GradwatchDash leaves
    # out the scripts no page runs (page_scripts.py).
    app = GradwatchDash(
        __name__, use_pages=True, pages_folder="", title="gradwatch", update_title=None,
        suppress_callback_exceptions=True, serve_locally=True, eager_loading=False,
        compress=_compression_available(),
    )
    app.server.config[FLASK_CONFIG_KEY] = settings
    # Bodies beyond this are refused (413) from their Content-Length, before they are read or parsed.
    app.server.config["MAX_CONTENT_LENGTH"] = settings.max_request_mb * 2**20
    for module, name, title, order in PAGES:
        dash.register_page(module.__name__, path=module.PATH, name=name, title=title, order=order,
                           layout=_page_layout(module, ctx))
    dash.register_page("not_found_404", path="/404", name="Not found", layout=not_found_layout)
    app.layout = html.Div([components.navbar(settings.read_only), dash.page_container])
    for module, *_ in PAGES:
        module.register(app, ctx)
    _install_host_check(app, settings)
    _install_auth(app, settings)
    team.install_push(app.server, settings)
    _install_health(app, ctx)
    _warm_up(app)
    app.importer = team.start_importer(settings)
    return app


def _compression_available() -> bool:
    """flask-compress (requirements.txt) sends scripts and callback answers gzip/brotli-compressed: the
    page's 2.7 MB of JavaScript travels as ~0.8 MB. An environment installed before it was a
    requirement still serves, uncompressed."""
    import importlib.util

    return importlib.util.find_spec("flask_compress") is not None


def request_host_allowed(host_header: str | None, origin: str | None, method: str, allowed: tuple[str, ...]) -> str | None:
    """Why a request must be refused (DNS rebinding, cross-site writes), or None. The Host must name
    an allowed host; a state-changing request that carries an Origin must come from one too."""
    if "*" in allowed:
        return None
    host = host_name(host_header)
    if host not in allowed:
        return f"host {host_header!r} is not allowed"
    if method not in ("GET", "HEAD", "OPTIONS") and origin is not None:
        parsed = urlsplit(origin)
        if origin == "null" or not parsed.hostname or parsed.hostname.lower() not in allowed:
            return f"origin {origin!r} is not allowed"
    return None


def host_name(host_header: str | None) -> str:
    """"Example.COM:8050" -> "example.com"; "[::1]:8050" -> "::1"."""
    text = (host_header or "").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _install_host_check(app: Dash, settings: Settings) -> None:
    allowed = settings.allowed_hosts

    @app.server.before_request
    def check_host():
        if request.path == "/healthz":  # probes use the pod's address; it reveals nothing, changes nothing
            return None
        problem = request_host_allowed(request.headers.get("Host"), request.headers.get("Origin"), request.method,
                                       allowed)
        if problem:
            return Response(f"gradwatch: {problem}; allowed: {', '.join(allowed)} (set --allowed-hosts or "
                            f"{ENV_ALLOWED_HOSTS})\n", 400, {"Content-Type": "text/plain; charset=utf-8"})
        return None


def _install_auth(app: Dash, settings: Settings) -> None:
    if not settings.auth_enabled:
        return
    expected_user = settings.auth_user.encode()
    expected_password = settings.auth_password.encode()

    @app.server.before_request
    def require_basic_auth():
        if request.path == "/healthz" or team.is_push_path(request.path):
            return None  # pushes carry the write token instead (dashboard/team.py)
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).partition(b":")
            except (binascii.Error, ValueError):
                user, password = b"", b""
            # compare_digest on both, always: no early exit that would time the user name.
            ok_user = hmac.compare_digest(user, expected_user)
            ok_password = hmac.compare_digest(password, expected_password)
            if ok_user and ok_password:
                return None
        return Response("gradwatch: authentication required\n", 401,
                        {"WWW-Authenticate": 'Basic realm="gradwatch", charset="UTF-8"'})


def _install_health(app: Dash, ctx: AppContext) -> None:
    started = time.time()

    @app.server.route("/healthz")
    def healthz():
        settings = ctx.settings
        # No paths: /healthz answers without authentication (load balancers), so it tells nothing
        # about the machine beyond liveness and counts.
        body = {"status": "ok", "version": VERSION, "read_only": settings.read_only,
                "uptime_s": round(time.time() - started, 1)}
        try:
            body["runs"] = len(ctx.store.run_ids())
            body["running_jobs"] = ctx.jobs.running_count()
        except Exception as exc:
            body.update(status="error", error=type(exc).__name__)
            return jsonify(body), 503
        return jsonify(body)


def _warm_up(app: Dash) -> None:
    """Finish Dash's one-time set-up before the first real request, and load plotly's validators.

    Dash registers the script paths it may serve on the first request of a process, behind a flag set
    before the work is done: under a threaded worker, the browser's parallel script requests to a fresh
    worker could otherwise be answered 500 ("path requested is not valid"). One internal request here
    runs that set-up to completion while no one else is being served.
    """
    from . import figures

    app.server.test_client().get("/healthz")
    figures.empty_figure("warm-up")
    figures.gradient_flow_chart({"layers": ["a"], "grad_norm": [1.0], "grad_max_abs": [1.0], "nonfinite": [0],
                                 "step": 0})

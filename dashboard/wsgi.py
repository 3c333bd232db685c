"""WSGI entry for gunicorn: `gunicorn -c python:gradwatch.dashboard.gunicorn_conf -b 0.0.0.0:8050
gradwatch.dashboard.wsgi:server` (gunicorn_conf: threads and a worker that cuts off slow clients).

Settings come from the environment: GRADWATCH_LOGDIR (default logs), GRADWATCH_READ_ONLY (1/true),
GRADWATCH_MAX_JOBS, GRADWATCH_POLL_MS, GRADWATCH_CACHE_DIR, and GRADWATCH_USER + GRADWATCH_PASSWORD for
HTTP basic auth, GRADWATCH_ALLOWED_HOSTS (host names the dashboard answers to: set it to the name users
reach it by), GRADWATCH_MAX_REQUEST_MB. Workers share nothing in memory: runs and job state are on disk, caches in diskcache.
"""

from .app import create_app
from .config import Settings

app = create_app(Settings.from_env())
server = app.server

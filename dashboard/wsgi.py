"""WSGI entry for gunicorn: `gunicorn -w 2 --threads 4 -b 0.0.0.0:8050 gradwatch.dashboard.wsgi:server`.

Settings come from the environment: GRADWATCH_LOGDIR (default logs), GRADWATCH_READ_ONLY (1/true),
GRADWATCH_MAX_JOBS, GRADWATCH_POLL_MS, GRADWATCH_CACHE_DIR, and GRADWATCH_USER + GRADWATCH_PASSWORD for
HTTP basic auth. Workers share nothing in memory: runs and job state are on disk, caches in diskcache.
"""

from .app import create_app
from .config import Settings

app = create_app(Settings.from_env())
server = app.server

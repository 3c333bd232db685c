"""gunicorn settings for the dashboard: `gunicorn -c python:gradwatch.dashboard.gunicorn_conf
gradwatch.dashboard.wsgi:server` (the Procfile's web process; add --bind HOST:PORT).

Threads, not processes, carry the concurrency (the pages' callbacks mostly wait on SQLite and the
network); slow clients are cut off by the worker's read timeout (gunicorn_worker.py), request lines
and headers are bounded, and request bodies by the app (GRADWATCH_MAX_REQUEST_MB, app.py).
"""

import os

worker_class = "gradwatch.dashboard.gunicorn_worker.SlowClientSafeWorker"
workers = int(os.environ.get("GRADWATCH_WORKERS", "2"))
# 16 threads per worker: a few slow or stalled clients occupy a few threads, never all of them.
threads = int(os.environ.get("GRADWATCH_THREADS", "16"))
timeout = 120  # a worker silent this long (not a request) is restarted
graceful_timeout = 20
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

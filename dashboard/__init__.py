"""gradwatch's web dashboard: runs, live training views, comparisons and launches (Dash, no torch).

    gradwatch ui --logdir logs                                   # serve (see --help)
    gradwatch export RUN_DIR -o report.html                      # one self-contained HTML report
    gunicorn -w 2 --threads 4 gradwatch.dashboard.wsgi:server    # a team server (GRADWATCH_* env)

Importing this package is cheap and imports neither dash nor torch (the job supervisor runs from it);
`create_app` and `export_run` load on first use.
"""

__all__ = ["create_app", "export_run"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "export_run":
        from .export import export_run

        return export_run
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")

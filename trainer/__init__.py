"""gradwatch's trainer side: capture (torch), run log and diagnosis (torch-free).

Importing this package must not import torch: the dashboard imports the run-log reader and the
diagnosis rules from here. `Run` (which needs torch) is loaded on first access.
"""

__all__ = ["Run"]


def __getattr__(name):
    if name == "Run":
        from .run import Run

        return Run
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")

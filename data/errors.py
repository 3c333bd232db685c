"""The one exception type the data package raises for unusable input data."""


class DatasetError(ValueError):
    """A dataset file or its contents cannot be used.

    The message is always a single line naming the problem, the offending path or value, and what
    would be valid, so that a CLI, a log line and a dashboard banner can all show it unchanged.
    """

    def __init__(self, message: str):
        # Paths and cell values may carry newlines; the one-line promise matters more than fidelity.
        super().__init__(" ".join(str(message).split()))

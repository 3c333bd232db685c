"""`python -m gradwatch ...`: the same as the `gradwatch` command (see gradwatch.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""The read contract, checked on the source: the dashboard writes no SQL and touches no private part of
the run-log reader; every query that reads a run folder lives in trainer/runlog."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|BEGIN|COMMIT)\b\s+[\w*(]")
PRIVATE_READER = re.compile(r"\b(reader|self)\._(query|conn|has_table|layer_value_sql|layer_values_frame)\b|sqlite3")


def offending(pattern: re.Pattern, folder: str) -> list[str]:
    hits = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return hits


def test_the_dashboard_writes_no_sql():
    assert offending(SQL, "dashboard") == []


def test_the_dashboard_calls_no_private_reader_method():
    assert offending(PRIVATE_READER, "dashboard") == []


def test_the_patterns_find_what_they_look_for():
    assert SQL.search('rows = conn.execute("SELECT step FROM steps")')
    assert not SQL.search("RUNS_SELECTED = 'runs-selected'")
    assert PRIVATE_READER.search("(rows,), = reader._query('...')")

"""The scripts every page loads: Dash's list, less what gradwatch's pages never run.

Dash puts every component library it ships into each page's index, whether a page uses it or not.
Two of them are dead weight before the first chart (issue 14: at most 2.0 MB of JavaScript):
- @babel/polyfill (97 KiB) back-fills ES2015+ for old browsers; Dash's renderer needs only its
  regenerator runtime, served as assets/regenerator-runtime.min.js (scripts/build_plotly_bundle.sh);
- dash_table's bundle (33 KiB): no page draws a DataTable.
"""

from __future__ import annotations

import re

from dash import Dash

# One <script> tag per line in Dash's index; matched by the path Dash serves each library under.
UNUSED_SCRIPTS = (
    re.compile(r'<script src="[^"]*/_dash-component-suites/dash/deps/polyfill@[^"]*"></script>\n?'),
    re.compile(r'<script src="[^"]*/_dash-component-suites/dash/dash_table/bundle[^"]*"></script>\n?'),
)


def without_unused_scripts(scripts_html: str) -> str:
    """Dash's <script> tags (the index's {%scripts%}) less UNUSED_SCRIPTS."""
    for pattern in UNUSED_SCRIPTS:
        scripts_html = pattern.sub("", scripts_html)
    return scripts_html


class GradwatchDash(Dash):
    """Dash with the index's script list trimmed (interpolate_index is Dash's documented hook)."""

    def interpolate_index(self, **kwargs):
        kwargs["scripts"] = without_unused_scripts(kwargs.get("scripts", ""))
        return super().interpolate_index(**kwargs)

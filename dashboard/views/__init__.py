"""The pages' logic as plain functions (`*_impl`): plain arguments in, figures and dicts out.

Page callbacks in dashboard/pages/ are thin wrappers around these, so everything here is unit-tested
without a server or a browser.
"""

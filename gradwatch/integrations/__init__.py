"""Adapters that connect gradwatch's `Run` to other training stacks (Lightning, HF transformers).

Each adapter translates its framework's step numbers, metric names and lifecycle into `Run` calls, and
nothing else; importing this package imports none of those frameworks.
"""

"""Module hooks that never get in a user's way: a watched model still pickles, deep-copies and
`torch.save()`s at any moment, and the copy carries no live gradwatch hook.

A hook is a closure over the probe (which holds a writer thread and a database connection), so
pickling it would fail or drag the run along. `ModuleHook` pickles as a `DetachedHook` instead:
the loaded model's first forward pass removes it, and the copy runs as if never watched.
"""

from __future__ import annotations

import torch

_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks")
_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


class ModuleHook:
    """A forward (pre-)hook function that pickles as a `DetachedHook`."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    # Under torch.compile the hook runs eagerly, outside the graph: dynamo never traces gradwatch's
    # bookkeeping (handles, locks, clocks, bincount), and on unlogged steps, when no hook is
    # attached, the compiled forward is the user's graph alone.
    @torch.compiler.disable
    def __call__(self, *args):
        return self.fn(*args)

    def __reduce__(self):
        return (DetachedHook, ())


class DetachedHook:
    """What a gradwatch hook becomes in a pickled copy: it removes itself when first called."""

    def __call__(self, module, *args):
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, {})
            for key, hook in list(hooks.items()):
                if hook is self:
                    del hooks[key]
                    for flags in _HOOK_FLAGS:
                        getattr(module, flags, {}).pop(key, None)
        return None

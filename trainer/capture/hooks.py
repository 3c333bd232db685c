"""Forward hooks that leave no trace on the user's model: a watched model pickles, deep-copies,
`torch.save()`s and loads with `torch.load(weights_only=True)` exactly as an unwatched one.

A hook stored in a module's `_forward_hooks` table travels with the module into every pickle, and
`weights_only=True` (torch.load's default since torch 2.6) refuses any class it does not know, so
nothing of gradwatch may sit in a module. Hooks are therefore kept here, keyed by module identity,
and reached through PyTorch's process-wide module hooks, which are registered only while at least
one gradwatch hook exists: a step without any (an unlogged step) runs every module on PyTorch's
hook-free fast path.
"""

from __future__ import annotations

import itertools
import threading

import torch
from torch.nn.modules import module as nn_module

_lock = threading.Lock()
_ids = itertools.count()
_pre: dict[int, dict[int, object]] = {}  # id(module) -> {hook id: fn(module, args)}
_post: dict[int, dict[int, object]] = {}  # id(module) -> {hook id: fn(module, args, output)}
_global_handles: list = []


# Under torch.compile the hooks run eagerly, outside the graph: dynamo never traces gradwatch's
# bookkeeping (handles, locks, clocks, bincount).
@torch.compiler.disable
def _dispatch_pre(module, args):
    hooks = _pre.get(id(module))
    if hooks:
        for fn in tuple(hooks.values()):
            fn(module, args)


@torch.compiler.disable
def _dispatch_post(module, args, output):
    hooks = _post.get(id(module))
    if hooks:
        for fn in tuple(hooks.values()):
            fn(module, args, output)


class HookHandle:
    """Removes one gradwatch hook; idempotent."""

    __slots__ = ("_table", "_key", "_hook_id")

    def __init__(self, table: dict, key: int, hook_id: int):
        self._table, self._key, self._hook_id = table, key, hook_id

    def remove(self) -> None:
        with _lock:
            hooks = self._table.get(self._key)
            if hooks is None or hooks.pop(self._hook_id, None) is None:
                return
            if not hooks:
                del self._table[self._key]
            _sync_global_hooks()


def _sync_global_hooks() -> None:
    """PyTorch's global hooks on exactly while some gradwatch hook exists (caller holds _lock)."""
    want = bool(_pre or _post)
    if want and not _global_handles:
        _global_handles.append(nn_module.register_module_forward_pre_hook(_dispatch_pre))
        _global_handles.append(nn_module.register_module_forward_hook(_dispatch_post))
    elif not want and _global_handles:
        for handle in _global_handles:
            handle.remove()
        _global_handles.clear()


def _register(table: dict, module: torch.nn.Module, fn) -> HookHandle:
    with _lock:
        hook_id = next(_ids)
        table.setdefault(id(module), {})[hook_id] = fn
        _sync_global_hooks()
    return HookHandle(table, id(module), hook_id)


def forward_pre_hook(module: torch.nn.Module, fn) -> HookHandle:
    """Call fn(module, args) before each forward of `module`; its return value is ignored."""
    return _register(_pre, module, fn)


def forward_hook(module: torch.nn.Module, fn) -> HookHandle:
    """Call fn(module, args, output) after each forward of `module`; its return value is ignored."""
    return _register(_post, module, fn)


def attached(model: torch.nn.Module) -> int:
    """How many gradwatch hooks the modules of `model` have now (tests: hooks exist only when needed)."""
    ids = {id(m) for m in model.modules()}
    with _lock:
        return sum(len(table.get(i, ())) for table in (_pre, _post) for i in ids)

"""Logged steps run eagerly under torch.compile, unlogged steps run the user's compiled graphs.

Activation statistics come from forward hooks, and a hook inside a compiled region either splits
the graph (dynamo cannot trace gradwatch's bookkeeping) or, traced, changes the graph on logged
steps only (a second graph and a recompile). Instead, while a logged step's forward passes run,
the compiler's stance is "force_eager" (`torch.compiler.set_stance`): that step runs exactly as the
uncompiled model would, hooks included, and every other step runs the graphs dynamo built without
gradwatch in them (hooks.py's dispatchers return at once when dynamo traces them). A watched
compiled model therefore compiles to as many graphs as an unwatched one, with no graph break;
the price is one eager forward and backward per logged step (docs/log-format.md, "Capture").

The stance is process-wide: the first probe wanting eager steps sets it, the last one restores
whatever stance was set before. Where dynamo was never imported nothing can be compiled, and it
is not imported here. A logged step that begins inside a compiled region (an optimizer step
compiled by the user) cannot change the stance; that step runs compiled, without activations.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_wanting: set[int] = set()  # id() of the probes in a logged step
_prior = None  # the stance before the first probe set "force_eager"


def _eval_frame():
    return sys.modules.get("torch._dynamo.eval_frame")


def set_eager(owner: object, on: bool) -> None:
    """Whether `owner` (a probe) needs eager forward passes now."""
    global _prior
    with _lock:
        key = id(owner)
        if on == (key in _wanting):
            return
        eval_frame = _eval_frame()
        if on:
            if not _wanting and eval_frame is not None:
                try:
                    _prior = eval_frame._set_stance(eval_frame.DynamoStance("force_eager"))
                except RuntimeError:  # inside a compiled region: this step stays compiled
                    return
            _wanting.add(key)
            return
        _wanting.discard(key)
        if not _wanting and _prior is not None:
            try:
                eval_frame._set_stance(_prior)
                _prior = None
            except RuntimeError:  # inside a compiled region: restored at the next call
                _wanting.add(key)


def eager_now() -> bool:
    """Whether logged-step forward passes are forced eager (tests)."""
    eval_frame = _eval_frame()
    return eval_frame is not None and eval_frame._stance.stance == "force_eager"

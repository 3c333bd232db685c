"""Which optimizer owns which watched parameters, for loops with several optimizers that each run
their own backward pass (a GAN: opt_d.zero_grad(); loss_d.backward(); opt_d.step(); then the same
for opt_g). The first optimizer seen stepping watched parameters counts the steps; each other
optimizer that steps watched parameters after it belongs to the same step. A parameter's gradient
is measured in the pre-step hook of the optimizer that owns it: the gradients of the generator at
the discriminator's step are the last iteration's (or the discriminator's loss flowing through),
not the ones the generator steps with.
"""

from __future__ import annotations


class Ownership:
    """Parameter indices (into the probe's watched list) owned by each optimizer seen stepping."""

    def __init__(self, param_ids: list[int], trainable: list[bool]):
        # One tensor may hold several watched parameters (an FSDP1 flat parameter).
        self._index: dict[int, list[int]] = {}
        for i, pid in enumerate(param_ids):
            self._index.setdefault(pid, []).append(i)
        self._trainable = trainable
        self._owned: dict[int, tuple[int, frozenset[int]]] = {}  # id(optimizer) -> (tensor count, indices)
        self.by_others: set[int] = set()  # owned by an optimizer other than the counting one
        self._uncovered: frozenset[int] = frozenset()  # trainable, not owned by the counting optimizer
        self._covered: set[int] = set()  # owned by another optimizer that stepped in this step
        self._stepped: set[int] = set()  # ids of the other optimizers that stepped in this step

    def owned(self, optimizer) -> frozenset[int]:
        """Watched parameters in the optimizer's groups (recomputed when its groups grow)."""
        count = sum(len(g["params"]) for g in optimizer.param_groups)
        cached = self._owned.get(id(optimizer))
        if cached is None or cached[0] != count:
            found = frozenset(i for g in optimizer.param_groups for p in g["params"]
                              for i in self._index.get(id(p), ()))
            cached = self._owned[id(optimizer)] = (count, found)
        return cached[1]

    def counting(self, optimizer) -> None:
        """The step-counting optimizer is chosen."""
        mine = self.owned(optimizer)
        self._uncovered = frozenset(i for i, t in enumerate(self._trainable) if t and i not in mine)

    def other_steps(self, optimizer) -> frozenset[int] | None:
        """Another optimizer steps: the indices whose gradients it steps with, or None when it
        owns no watched parameter or already stepped in this step."""
        mine = self.owned(optimizer)
        if not mine or id(optimizer) in self._stepped:
            return None
        self.by_others |= mine
        self._stepped.add(id(optimizer))
        self._covered |= mine
        return mine

    def step_done(self) -> None:
        """The counting optimizer completed a step: the others' steps that follow belong to it."""
        self._covered, self._stepped = set(), set()

    @property
    def waiting(self) -> bool:
        """Whether trainable parameters the counting optimizer does not own have not been
        stepped yet in this step (another optimizer may still step them)."""
        return bool(self._uncovered - self._covered)

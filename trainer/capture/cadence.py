"""Which optimizer steps record statistics: every N-th, or a cadence chosen to fit a time budget.

`AutoCadence` measures what a logged step costs against an unlogged one, on the wall-clock time
between consecutive optimizer steps (so whatever the capture makes the loop wait for counts, on
any device), and picks the smallest N whose capture cost stays within `budget` of training time:
N = ceil(extra time of a logged step / (budget * training time of a step - every-step capture time)),
at least 3 (the every-step per-layer gradient norms are paid from the same budget first). A logged step's cost
falls in its own interval (activation hooks, gradient copy) and the next one (the record is
finished at the next forward pass), so both count. It is re-checked at every logged step, from
medians of the recent measurements; the first logged step (first-call costs) is not used, and N
at most quadruples per re-check so one noisy measurement cannot push the next check far away.
"""

from __future__ import annotations

import math
import statistics
from collections import deque


class FixedCadence:
    """Every `every`-th optimizer step, starting with step 0."""

    auto = False

    def __init__(self, every: int):
        self.every = every

    def logged(self, step: int) -> bool:
        return step % self.every == 0

    def observe(self, step: int, clock: float, every_step_cost: float = 0.0) -> int | None:
        return None


class AutoCadence:
    auto = True
    WINDOW = 32  # unlogged intervals kept for the baseline
    COSTS = 5  # logged-step costs kept
    GROWTH = 4  # N grows at most this much per re-check
    # A logged step, the step that finishes its record, and at least one plain step to measure
    # against: below 3 the unlogged cost could no longer be re-measured.
    MIN_EVERY = 3

    def __init__(self, budget: float = 0.02, *, first_every: int = 10, max_every: int = 10_000):
        if not (isinstance(budget, (int, float)) and 0 < budget < 1):
            raise ValueError(f"budget must be a fraction of training time in (0, 1), e.g. 0.02; got {budget!r}")
        self.budget = float(budget)
        self.every = first_every
        self.max_every = max_every
        self._next = 0  # the next step to log
        self._last_logged: int | None = None
        self._logged_seen = 0
        self._prev_clock: float | None = None
        self._intervals: dict[int, float] = {}  # step -> seconds since the previous step ended
        self._unlogged: deque = deque(maxlen=self.WINDOW)
        self._costs: deque = deque(maxlen=self.COSTS)
        self._always: deque = deque(maxlen=self.WINDOW)  # every-step capture seconds of recent steps

    def logged(self, step: int) -> bool:
        return step == self._next

    def observe(self, step: int, clock: float, every_step_cost: float = 0.0) -> int | None:
        """Call when optimizer step `step` has ended (clock: time.perf_counter(); every_step_cost:
        seconds the capture spent in this step's every-step work, the per-layer gradient norms).
        Returns the new N when it changed, else None."""
        self._always.append(every_step_cost)
        interval = None if self._prev_clock is None else clock - self._prev_clock
        self._prev_clock = clock
        was_logged = step == self._next
        if was_logged:
            self._last_logged = step
            self._logged_seen += 1
            self._next = step + self.every
        if interval is None:
            return None
        after_logged = self._last_logged is not None and step == self._last_logged + 1
        if was_logged:
            self._intervals = {step: interval}
        elif after_logged and self._last_logged in self._intervals:
            if self._logged_seen > 1 and len(self._unlogged) >= 3:
                base = statistics.median(self._unlogged)
                self._costs.append(self._intervals[self._last_logged] + interval - 2 * base)
                return self._rechoose(base)
        else:
            self._unlogged.append(interval)
        return None

    def _rechoose(self, base: float) -> int | None:
        cost = max(statistics.median(self._costs), 0.0)
        # The budget covers everything the capture spends: the every-step work (inside every
        # interval, the baseline's too) is paid first, the logged steps share what is left.
        always = statistics.median(self._always) if self._always else 0.0
        training = max(base - always, 0.0)
        left = self.budget * training - always
        if left <= 0:
            wanted = self.max_every
        else:
            # (less a hair: clock arithmetic would turn an exact 250.0 into 250.00000001 -> 251)
            wanted = max(1, math.ceil(cost / left - 1e-6)) if base > 0 else self.every
        wanted = min(max(wanted, self.MIN_EVERY), self.every * self.GROWTH, self.max_every)
        if wanted == self.every:
            return None
        self.every = wanted
        self._next = max(self._last_logged + wanted, self._last_logged + 2)
        return wanted


def make_cadence(every, budget: float | None):
    """The cadence for Run.watch's `every` (an int >= 1 or "auto") and `budget`."""
    if every == "auto":
        return AutoCadence(0.02 if budget is None else budget)
    if budget is not None:
        raise ValueError('budget applies to every="auto" only')
    return FixedCadence(every)

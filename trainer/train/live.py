"""Live diagnosis during training: the diagnosis rules (trainer.diagnose.LiveDiagnoser) run over the
run's new records at each epoch end and every few logged steps; new flags are stored with the run.
"""

from __future__ import annotations

import math

from ..diagnose import Flag, LiveDiagnoser
from ..runlog.reader import RunReader

# Mid-epoch checks: every this many recorded (layer-statistics) steps, so problems that appear
# within a long first epoch (exploding gradients) are flagged before the epoch ends.
# Every 10 logged steps: the live lag stays near the rules' own evidence window (5-10 logged
# steps) while a check (~25 ms on a run of thousands of steps) costs well under 1% of training.
CHECK_EVERY_LOGGED_STEPS = 10


def nonfinite_flag(step: int, scalars: dict, *, halted: bool) -> dict:
    """The flag stored when the loss or gradient norm turns NaN/Inf (same shape as the rules' flags)."""
    bad = [name for name, value in scalars.items() if not math.isfinite(value)]
    action = "training was halted (halt_on_nonfinite)" if halted else "training continues (halt_on_nonfinite is off)"
    return Flag(
        rule="nonfinite",
        severity="critical",
        layers=[],
        first_step=step,
        last_step=step,
        evidence={"step": step, "nonfinite_scalars": bad, "halted": halted,
                  **{k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}},
        explanation=f"{', '.join(bad)} became NaN/Inf at step {step}; {action}.",
        remedy_ids=["lower-lr", "clipping", "batchnorm", "init"],
    ).to_dict()


class LiveMonitor:
    """Runs LiveDiagnoser for one Run; `overfitting_detected` turns true once the overfitting rule
    fires (stop_on_overfitting reads it). enabled=False makes every call a no-op."""

    def __init__(self, run, *, enabled: bool = True, every: int = 10):
        self.run = run
        self.enabled = enabled
        self.check_interval = CHECK_EVERY_LOGGED_STEPS * every
        self.diagnoser = LiveDiagnoser() if enabled else None
        self.reader: RunReader | None = None
        self.overfitting_detected = False
        self._last_check_step = 0

    def _check(self, step: int) -> list[dict]:
        if not self.enabled:
            return []
        self.run.flush()  # the reader sees only committed records
        if self.reader is None:
            self.reader = RunReader(self.run.path)
        self._last_check_step = step
        stored = []
        for flag in self.diagnoser.check(self.reader):
            record = flag.to_dict()
            self.run.add_flag(step, record)
            stored.append(record)
            if flag.rule == "overfitting":
                self.overfitting_detected = True
        return stored

    def after_step(self, step: int) -> list[dict]:
        """Mid-epoch check, every CHECK_EVERY_LOGGED_STEPS logged steps."""
        if step - self._last_check_step < self.check_interval:
            return []
        return self._check(step)

    def after_epoch(self, step: int) -> list[dict]:
        return self._check(step)

    def on_nonfinite(self, step: int, scalars: dict, *, halted: bool) -> list[dict]:
        """Flags for a NaN/Inf: the rules' own nonfinite flag (with the layer where it began) when
        they raise one now, else a plain one built from the step's scalars."""
        stored = self._check(step)
        if not any(f["rule"] == "nonfinite" for f in stored) and not self._raised("nonfinite"):
            record = nonfinite_flag(step, scalars, halted=halted)
            self.run.add_flag(step, record)
            stored.append(record)
        return stored

    def _raised(self, rule: str) -> bool:
        return self.diagnoser is not None and any(f.rule == rule for f in self.diagnoser.raised)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

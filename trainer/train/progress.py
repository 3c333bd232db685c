"""What a training run shows in the terminal: tqdm bars on a TTY, one line per epoch otherwise."""

from __future__ import annotations

import math
import sys
from typing import TextIO


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.4f}"


class Progress:
    """Epoch and batch progress on `stream` (stderr). mode: 'bars' (tqdm), 'lines' or 'off'.

    The default picks bars on a TTY and lines otherwise; quiet turns everything off.
    """

    def __init__(self, epochs: int, batches: int, *, quiet: bool = False, stream: TextIO | None = None,
                 label: str = ""):
        self.stream = stream or sys.stderr
        self.epochs, self.batches, self.label = epochs, batches, label
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.mode = "off" if quiet else ("bars" if isatty else "lines")
        self._epoch_bar = None
        self._batch_bar = None

    def __enter__(self) -> Progress:
        if self.mode == "bars":
            from tqdm import tqdm

            self._epoch_bar = tqdm(total=self.epochs, desc=self.label or "epochs", unit="epoch",
                                   file=self.stream, position=0, dynamic_ncols=True)
        return self

    def start_epoch(self, epoch: int) -> None:
        if self.mode == "bars":
            from tqdm import tqdm

            self._batch_bar = tqdm(total=self.batches, desc=f"epoch {epoch}", unit="batch", file=self.stream,
                                   position=1, leave=False, dynamic_ncols=True, mininterval=0.25)

    def batch_done(self, loss: float) -> None:
        if self._batch_bar is not None:
            self._batch_bar.update(1)
            if self._batch_bar.n % 10 == 0:
                self._batch_bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        if self._batch_bar is not None:
            self._batch_bar.close()
            self._batch_bar = None
        summary = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        if self.mode == "bars":
            self._epoch_bar.update(1)
            self._epoch_bar.set_postfix_str(summary)
        elif self.mode == "lines":
            prefix = f"{self.label}: " if self.label else ""
            print(f"{prefix}epoch {epoch}/{self.epochs}: {summary}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.mode == "bars":
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        elif self.mode == "lines":
            print(text, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        for bar in (self._batch_bar, self._epoch_bar):
            if bar is not None:
                bar.close()
        self._batch_bar = self._epoch_bar = None

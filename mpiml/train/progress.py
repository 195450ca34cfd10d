"""A one-line progress bar for rank 0, shown only when stdout is a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(...)`` after each update redraws at most 10 times a second; ``epoch(record)`` after each epoch.

    Silent (but still forwarding epoch records to ``on_epoch``) when ``stream`` is not a terminal.
    """

    def __init__(self, epochs: int, stream=None, on_epoch=None, enabled=None):
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.epochs, self.on_epoch = epochs, on_epoch
        self._last = 0.0
        self._width = 0

    def update(self, epoch, step, steps, loss):
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and step < steps):
            return
        self._last = now
        filled = int(20 * step / max(steps, 1))
        text = f"epoch {epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (20 - filled)}] {step}/{steps}"
        if loss is not None:
            text += f" batch loss {loss:.4g}"
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def clear(self):
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def epoch(self, record):
        self.clear()
        if self.on_epoch is not None:
            self.on_epoch(record)

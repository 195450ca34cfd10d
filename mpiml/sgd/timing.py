"""Where a rank's time goes: compute, communication, waiting (and evaluation, checkpoints).

Definitions (per rank, wall-clock ``time.perf_counter``):

- ``compute``: local gradient, loss and optimizer work.
- ``wait``: for each collective exchange, how long this rank necessarily sat in it for
  the slowest rank to finish computing: ``max_r compute_r - compute_self`` over the
  compute since the previous exchange (bounded by the time spent in the call). Every
  exchange carries each rank's compute seconds in a slot of its own, so this costs no
  extra message.
- ``comm``: the rest of the time inside the collective (transfer and reduction).
- ``eval``/``checkpoint``: per-epoch metrics (incl. averaging models just to measure
  them) and checkpoint writing, kept apart so they do not blur the three above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Timings:
    """Seconds this rank spent in each category."""

    compute: float = 0.0
    comm: float = 0.0
    wait: float = 0.0
    eval: float = 0.0
    checkpoint: float = 0.0

    def as_dict(self) -> dict:
        return {f"{f.name}_seconds": getattr(self, f.name) for f in fields(self)}


class Exchanger:
    """Allreduce ``payload`` buffers with a compute-time slot per rank appended."""

    def __init__(self, group, timings: Timings):
        self.group, self.timings = group, timings
        self._since = 0.0

    def add_compute(self, seconds: float) -> None:
        self.timings.compute += seconds
        self._since += seconds

    def buffer(self, n_payload: int) -> np.ndarray:
        return np.zeros(n_payload + self.group.size)

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` over ranks in place; its last ``size`` entries are the timing slots."""
        p = self.group.size
        slots = buf[len(buf) - p:]
        slots[:] = 0.0
        slots[self.group.rank] = self._since
        start = time.perf_counter()
        self.group.allreduce(buf, out=buf)
        spent = time.perf_counter() - start
        wait = min(max(float(slots.max()) - self._since, 0.0), spent)
        self.timings.wait += wait
        self.timings.comm += spent - wait
        self._since = 0.0
        return buf[: len(buf) - p]


class Clock:
    """``with clock: ...`` adds the block's seconds to ``add(seconds)``."""

    def __init__(self, add):
        self.add = add

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.add(time.perf_counter() - self.start)
        return False

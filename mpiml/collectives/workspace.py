"""Scratch buffers and plans kept between calls, so the per-call path allocates nothing
and recomputes nothing."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

MAX_PLANS = 4096  # plans are small; a job with endlessly varying sizes just rebuilds them


class Workspace:
    """Named scratch arrays that grow to the largest size asked for and are then reused,
    and plans (block bounds, step schedules) computed once per key."""

    def __init__(self):
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._plans: dict = {}

    def get(self, name: str, count: int, dtype) -> np.ndarray:
        """A 1-D array of ``count`` elements of ``dtype`` (contents undefined)."""
        key = (name, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.size < count:
            buf = np.empty(max(int(count), 1), dtype=dtype)
            self._buffers[key] = buf
        return buf[:count]

    def plan(self, key, build):
        """``build()``'s result, computed on the first call with this ``key`` and then reused."""
        value = self._plans.get(key)
        if value is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            value = self._plans[key] = build()
        return value

    def clear(self) -> None:
        self._buffers.clear()
        self._plans.clear()


def msg(array: np.ndarray):
    """An MPI message spec that moves ``array``'s bytes whatever its dtype (float16 too)."""
    return [array, MPI.BYTE]

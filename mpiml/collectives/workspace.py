"""Scratch buffers kept between calls, so the per-call path allocates nothing."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI


class Workspace:
    """Named scratch arrays that grow to the largest size asked for and are then reused."""

    def __init__(self):
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, name: str, count: int, dtype) -> np.ndarray:
        """A 1-D array of ``count`` elements of ``dtype`` (contents undefined)."""
        dtype = np.dtype(dtype)
        key = (name, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.size < count:
            buf = np.empty(max(int(count), 1), dtype=dtype)
            self._buffers[key] = buf
        return buf[:count]

    def clear(self) -> None:
        self._buffers.clear()


def msg(array: np.ndarray):
    """An MPI message spec that moves ``array``'s bytes whatever its dtype (float16 too)."""
    return [array, MPI.BYTE]

"""How ``n`` consecutive items are split into ``parts`` blocks: the named policies every layer uses.

Every function returns block *boundaries*: an int64 array of ``parts + 1`` non-decreasing
offsets, block ``b`` being ``bounds[b]:bounds[b + 1]`` (blocks may be empty when there are
fewer items than parts). Pure functions of sizes and weights, no MPI.

- :func:`contiguous`: ``n * b // parts``: sizes differ by at most one, the larger blocks
  spread out (the rows of a data file over the ranks: :mod:`mpiml.data`).
- :func:`array_split`: the first ``n % parts`` blocks one larger, exactly as
  ``numpy.array_split`` (the blocks of a reduced vector: :mod:`mpiml.collectives`).
- :func:`weighted`: about equal total weight per block, for items of unequal cost (the
  rows of a factorization by estimated solve cost: :mod:`mpiml.mf.partition`).
"""

from __future__ import annotations

import numpy as np

POLICIES = ("contiguous", "array_split", "weighted")


def _check_parts(parts: int) -> int:
    parts = int(parts)
    if parts < 1:
        from mpiml.errors import ArgumentError

        raise ArgumentError(f"parts must be at least 1, got {parts}")
    return parts


def contiguous(n: int, parts: int) -> np.ndarray:
    """Boundaries ``n * b // parts`` for ``b = 0 .. parts``."""
    parts = _check_parts(parts)
    return np.arange(parts + 1, dtype=np.int64) * int(n) // parts


def contiguous_block(n: int, parts: int, b: int) -> tuple[int, int]:
    """``(start, stop)`` of block ``b`` of :func:`contiguous` (rank ``b``'s rows among ``parts`` ranks)."""
    return block(contiguous(n, parts), b)


def array_split(n: int, parts: int) -> np.ndarray:
    """Boundaries of ``numpy.array_split``: block ``b`` has ``n // parts + (b < n % parts)`` items."""
    parts = _check_parts(parts)
    base, extra = divmod(int(n), parts)
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:extra] += 1
    return from_sizes(sizes)


def weighted(weights, parts: int) -> np.ndarray:
    """Boundaries of contiguous blocks with about equal total ``weights`` (one weight per item).

    Each cut falls at whichever of the two items around the point where the running total
    crosses a multiple of ``total / parts`` brings it closer, so a block holds about
    ``total / parts`` however skewed the weights are (a single very heavy item can still
    make its block heavier). All-zero weights fall back to :func:`contiguous`.
    """
    parts = _check_parts(parts)
    weights = np.asarray(weights, dtype=np.float64)
    n = weights.size
    cumulative = np.cumsum(weights)
    total = cumulative[-1] if n else 0.0
    if total <= 0:
        return contiguous(n, parts)
    targets = total * np.arange(1, parts) / parts
    cuts = np.searchsorted(cumulative, targets, side="left") + 1
    # Cut before the crossing item instead when that lands nearer the target.
    before = np.concatenate([[0.0], cumulative])[np.clip(cuts - 1, 0, n)]
    after = cumulative[np.clip(cuts - 1, 0, n - 1)]
    cuts = np.where(targets - before < after - targets, cuts - 1, cuts)
    bounds = np.concatenate([[0], np.clip(cuts, 0, n), [n]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


def from_sizes(sizes) -> np.ndarray:
    """Boundaries of consecutive blocks of the given sizes."""
    sizes = np.asarray(sizes, dtype=np.int64)
    bounds = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    return bounds


def sizes(bounds) -> np.ndarray:
    """Items per block."""
    return np.diff(np.asarray(bounds, dtype=np.int64))


def block(bounds, b: int) -> tuple[int, int]:
    """``(start, stop)`` of block ``b``."""
    return int(bounds[b]), int(bounds[b + 1])


def owner(bounds, index) -> np.ndarray:
    """The block each item ``index`` falls in."""
    return np.searchsorted(bounds, index, side="right") - 1

"""How a vector is split into per-rank blocks (pure functions of counts and ranks).

The split itself is :func:`mpiml.runtime.partition.array_split`, the policy every layer
of mpiml names for the blocks of a reduced vector.
"""

from __future__ import annotations

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.runtime import partition

MAX_CACHED_LAYOUTS = 1024


def balanced_counts(n: int, parts: int) -> np.ndarray:
    """Element counts of ``parts`` contiguous blocks of ``n`` elements.

    Block ``i`` holds ``n // parts + 1`` elements if ``i < n % parts`` and
    ``n // parts`` otherwise: the first blocks take the remainder, exactly as
    ``numpy.array_split`` does. Blocks may be empty when ``n < parts``.
    """
    return partition.sizes(partition.array_split(n, parts))


def displacements(counts) -> np.ndarray:
    """Start offsets of blocks of the given counts, plus the total at the end."""
    return partition.from_sizes(counts)


_balanced: dict = {}


def _cached_balanced_counts(n: int, parts: int) -> np.ndarray:
    """:func:`balanced_counts`, read-only and kept per ``(n, parts)``: reduce_scatter asks per call."""
    key = (n, parts)
    counts = _balanced.get(key)
    if counts is None:
        if len(_balanced) >= MAX_CACHED_LAYOUTS:
            _balanced.clear()
        counts = _balanced[key] = balanced_counts(n, parts)
        counts.flags.writeable = False
    return counts


def block_counts(n: int, parts: int, counts=None) -> np.ndarray:
    """``counts`` validated against ``n`` and ``parts``, or the balanced layout (read-only)."""
    if counts is None:
        return _cached_balanced_counts(n, parts)
    counts = np.asarray(counts)
    if counts.shape != (parts,) or counts.dtype.kind not in "iu":
        raise ArgumentError(f"counts must be {parts} integers, one per rank, got {counts!r}")
    if (counts < 0).any() or int(counts.sum()) != n:
        raise ArgumentError(f"counts must be non-negative and sum to {n}, got {counts.tolist()}")
    return counts.astype(np.int64)


def largest_power_of_two_at_most(p: int) -> int:
    return 1 << (int(p).bit_length() - 1)


def fold_to_power_of_two(rank: int, size: int) -> tuple[int, int | None]:
    """Pair off ranks so that a power-of-two group remains.

    With ``q`` the largest power of two <= size and ``extra = size - q``, ranks below
    ``2 * extra`` pair up: each even one hands its data to the odd one above it and sits
    out. Returns ``(q, virtual_rank)``, with ``virtual_rank`` None for a rank that sits
    out. Virtual ranks keep the order of the real ranks they stand for, which is what
    lets non-commutative operators be combined in rank order.
    """
    q = largest_power_of_two_at_most(size)
    extra = size - q
    if rank < 2 * extra:
        return q, (rank // 2 if rank % 2 else None)
    return q, rank - extra


def real_rank(virtual: int, size: int) -> int:
    """The real rank that stands for ``virtual`` after :func:`fold_to_power_of_two`."""
    extra = size - largest_power_of_two_at_most(size)
    return 2 * virtual + 1 if virtual < extra else virtual + extra

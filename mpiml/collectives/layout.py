"""How a vector is split into per-rank blocks (pure functions of counts and ranks)."""

from __future__ import annotations

import numpy as np

from mpiml.runtime.errors import ArgumentError


def balanced_counts(n: int, parts: int) -> np.ndarray:
    """Element counts of ``parts`` contiguous blocks of ``n`` elements.

    Block ``i`` holds ``n // parts + 1`` elements if ``i < n % parts`` and
    ``n // parts`` otherwise: the first blocks take the remainder, exactly as
    ``numpy.array_split`` does. Blocks may be empty when ``n < parts``.
    """
    base, extra = divmod(int(n), int(parts))
    counts = np.full(parts, base, dtype=np.int64)
    counts[:extra] += 1
    return counts


def displacements(counts) -> np.ndarray:
    """Start offsets of blocks of the given counts, plus the total at the end."""
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    return bounds


def block_counts(n: int, parts: int, counts=None) -> np.ndarray:
    """``counts`` validated against ``n`` and ``parts``, or the balanced layout."""
    if counts is None:
        return balanced_counts(n, parts)
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

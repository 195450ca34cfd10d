"""Blocks of users and items balanced by rating count, and the local sparse rows (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def balanced_blocks(counts, parts: int) -> np.ndarray:
    """Boundaries (``parts + 1`` of them) of contiguous index ranges with about equal totals.

    Block ``b`` is ``boundaries[b]:boundaries[b + 1]``. Cuts fall where the running total
    of ``counts`` first reaches each multiple of ``total / parts``, so a block holds
    about ``total / parts`` ratings however skewed the counts are (a single very heavy
    row can still make its block heavier). Blocks may be empty when there are fewer
    rows than parts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    cumulative = np.cumsum(counts)
    total = cumulative[-1] if n else 0.0
    if total <= 0:
        cuts = np.arange(1, parts) * n // parts
    else:
        cuts = np.searchsorted(cumulative, total * np.arange(1, parts) / parts, side="left") + 1
    bounds = np.concatenate([[0], np.clip(cuts, 0, n), [n]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


def block_of(index, boundaries) -> np.ndarray:
    """The block each index falls in."""
    return np.searchsorted(boundaries, index, side="right") - 1


@dataclass
class Rows:
    """Sparse rows ``start:stop`` of the ratings matrix (or its transpose), CSR, sorted.

    ``cols`` are global indices of the other side; within a row they are ascending, so
    a row's arithmetic is the same whichever rank holds it.
    """

    start: int
    stop: int
    indptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def nnz(self) -> int:
        return int(self.vals.size)

    def row_ids(self) -> np.ndarray:
        """The global row of every stored rating."""
        return self.start + np.repeat(np.arange(self.n_rows), np.diff(self.indptr))

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)


def build_rows(start: int, stop: int, rows, cols, vals) -> Rows:
    """CSR of the ratings at global ``rows`` (all in ``start:stop``), sorted by (row, col)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    order = np.lexsort((cols, rows))
    local = rows[order] - start
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(np.bincount(local, minlength=stop - start), out=indptr[1:])
    return Rows(start, stop, indptr, cols[order], np.asarray(vals, dtype=np.float64)[order])


def pair_dots(left: np.ndarray, rows, right: np.ndarray, cols, chunk: int = 1 << 14) -> np.ndarray:
    """``left[rows[j]] . right[cols[j]]`` for every j, in cache-sized chunks (no n x k temporaries)."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    out = np.empty(rows.size)
    for lo in range(0, rows.size, chunk):
        hi = lo + chunk
        out[lo:hi] = np.einsum("ij,ij->i", left[rows[lo:hi]], right[cols[lo:hi]])
    return out

"""Blocks of users and items balanced by estimated work, and the local sparse rows (pure).

ALS and implicit ALS spend, per row, one ``k x k`` solve plus work proportional to the
row's ratings (:func:`row_costs`), so their blocks balance that cost; DSGD does the same
work for every rating, so its blocks balance rating counts. Both use :func:`balanced_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def balanced_blocks(counts, parts: int) -> np.ndarray:
    """Boundaries (``parts + 1`` of them) of contiguous index ranges with about equal totals.

    Block ``b`` is ``boundaries[b]:boundaries[b + 1]``. ``counts`` are the rows' weights
    (rating counts, or :func:`row_costs`). Each cut falls at whichever of the two rows
    around the point where the running total crosses a multiple of ``total / parts`` brings
    it closer, so a block holds about ``total / parts`` however skewed the weights are (a
    single very heavy row can still make its block heavier). Blocks may be empty when there
    are fewer rows than parts.
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
        targets = total * np.arange(1, parts) / parts
        cuts = np.searchsorted(cumulative, targets, side="left") + 1
        # Cut before the crossing row instead when that lands nearer the target.
        before = np.concatenate([[0.0], cumulative])[np.clip(cuts - 1, 0, n)]
        after = cumulative[np.clip(cuts - 1, 0, n - 1)]
        cuts = np.where(targets - before < after - targets, cuts - 1, cuts)
    bounds = np.concatenate([[0], np.clip(cuts, 0, n), [n]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


@dataclass(frozen=True)
class CostModel:
    """Relative cost of one row solve: ``overhead + solve * k**3 / 3 + nnz * k**2`` (Cholesky).

    Units are one multiply-add of the Gram accumulation (``nnz * k**2`` of them per row).
    ``solve`` weighs the factorization's ``k**3 / 3`` against them and ``overhead`` is the
    fixed per-row cost (call overhead, slicing, the triangular solves), in the same units.
    """

    solve: float
    overhead: float


# Measured with benchmarks/mf_costs.py (least squares of the seconds of row solves over
# k = 8..128 and 1..2000 ratings a row, one thread): the numba kernels do a row's
# factorization at about the rate of its Gram updates; the numpy references pay about
# 20 microseconds of Python per row, i.e. tens of thousands of multiply-adds.
COSTS = {"compiled": CostModel(solve=1.0, overhead=200.0), "numpy": CostModel(solve=1.0, overhead=40000.0)}


def row_costs(counts, rank: int, solver: str = "cholesky", cg_steps: int = 3, model: CostModel = COSTS["compiled"]):
    """Estimated work of solving each row of a half-step, for :func:`balanced_blocks`.

    ``counts`` are the rows' rating counts and ``rank`` the number of unknowns ``k``.
    Cholesky (ALS, implicit ALS): ``overhead + solve * k**3 / 3 + nnz * k**2``.
    Conjugate gradient (implicit ALS): ``overhead + cg_steps * (k**2 + 2 * nnz * k)``: each
    step multiplies by the shared ``k x k`` Gram matrix and twice by the row's ratings.
    Rows without ratings are solved trivially and cost ``overhead`` only.
    """
    counts = np.asarray(counts, dtype=np.float64)
    k = float(rank)
    if solver == "cg":
        work = cg_steps * (k * k + 2.0 * counts * k) + 2.0 * counts * k
    elif solver == "cholesky":
        work = model.solve * k**3 / 3.0 + counts * k * k
    else:
        raise ValueError(f"unknown solver {solver!r}")
    return model.overhead + np.where(counts > 0, work, 0.0)


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

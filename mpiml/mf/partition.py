"""Blocks of users and items balanced by estimated work, and the local sparse rows (pure).

ALS and implicit ALS spend, per row, one ``k x k`` solve plus work proportional to the
row's ratings (:func:`row_costs`), so their blocks balance that cost; DSGD does the same
work for every rating, so its blocks balance rating counts. Both use :func:`balanced_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.runtime import partition


def balanced_blocks(counts, parts: int) -> np.ndarray:
    """Boundaries of contiguous blocks with about equal total weight (:func:`mpiml.runtime.partition.weighted`).

    ``counts`` are the rows' weights (rating counts, or :func:`row_costs`).
    """
    return partition.weighted(counts, parts)


@dataclass(frozen=True)
class CostModel:
    """Relative cost of a row solve beyond its main per-rating work (see :func:`row_costs`).

    The unit is one multiply-add of that main work. ``dense`` weighs the row's ``k x k``
    work against it, ``per_rating`` adds units per rating (index gathers, the right-hand
    side), ``overhead`` units per row (call overhead, slicing, triangular solves).
    """

    dense: float = 1.0
    per_rating: float = 0.0
    overhead: float = 0.0


# (code path, solve) -> constants, fitted by benchmarks/mf_costs.py to timed row solves
# (k = 8..128, 1..2000 ratings a row, one thread; fits within ~35-50% per sample, mostly
# better). A unit is ~0.06 ns (Cholesky paths) or ~0.2 ns (compiled CG). The numba kernels
# spend ~0.5 us a row besides the arithmetic; the numpy references ~10-20 us of Python a
# row in the Cholesky loops, while their CG works on all rows at once, where gathering
# each rating's factors costs more than the arithmetic.
COSTS = {
    ("compiled", "als"): CostModel(dense=1.9, per_rating=90.0, overhead=7900.0),
    ("compiled", "ials_cholesky"): CostModel(dense=1.9, per_rating=130.0, overhead=7800.0),
    ("compiled", "ials_cg"): CostModel(dense=0.96, per_rating=28.0, overhead=580.0),
    ("numpy", "als"): CostModel(dense=4.2, per_rating=380.0, overhead=143000.0),
    ("numpy", "ials_cholesky"): CostModel(dense=1.7, per_rating=320.0, overhead=267000.0),
    ("numpy", "ials_cg"): CostModel(dense=0.14, per_rating=40.0, overhead=150.0),
}


def row_costs(counts, rank: int, solver: str = "cholesky", cg_steps: int = 3, model: CostModel = CostModel()):
    """Estimated work of solving each row of a half-step, for :func:`balanced_blocks`.

    ``counts`` are the rows' rating counts, ``rank`` the number of unknowns ``k``:

    - ``"cholesky"`` (ALS, implicit ALS): ``nnz * k**2`` to accumulate the row's Gram
      matrix, ``dense * k**3 / 3`` to factorize it;
    - ``"cg"`` (implicit ALS): each of ``cg_steps`` steps multiplies by the shared ``k x k``
      matrix (``dense * k**2``) and twice by the row's ratings (``2 * nnz * k``), plus
      ``2 * nnz * k`` for the right-hand side;

    plus ``per_rating * nnz + overhead``. Rows without ratings cost ``overhead`` only.
    """
    counts = np.asarray(counts, dtype=np.float64)
    k = float(rank)
    if solver == "cholesky":
        dense, sparse = k**3 / 3.0, counts * k * k
    elif solver == "cg":
        dense, sparse = cg_steps * k * k, (2.0 * cg_steps + 2.0) * counts * k
    else:
        raise ArgumentError(f"unknown solver {solver!r}; expected 'cholesky' or 'cg'")
    return model.overhead + np.where(counts > 0, model.dense * dense + sparse + model.per_rating * counts, 0.0)


def block_of(index, boundaries) -> np.ndarray:
    """The block each index falls in (:func:`mpiml.runtime.partition.owner`)."""
    return partition.owner(boundaries, index)


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

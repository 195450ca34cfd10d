"""Explicit ALS with weighted-lambda regularization (ALS-WR) and optional biases (pure).

Factor layout: with biases a user row is ``[x, b_u, 1]`` and an item row ``[y, 1, c_i]``,
so ``mu + P[u] . Q[i] = mu + x . y + b_u + c_i``; without biases rows are ``x`` and ``y``.
Each half-step minimizes, row by row and exactly,

    sum over rated (r - mu - P[u] . Q[i])**2  +  reg * n_u * ||free part of P[u]||**2

(``n_u`` = the row's rating count, or 1 with ``weighted=False``), so the objective
(squared error plus both sides' penalties) never increases from one half-step to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.mf.partition import Rows, pair_dots
from mpiml.runtime.jit import compiled

CHUNK = 2048  # rows solved together (bounds the stacked k x k systems in memory)


@dataclass(frozen=True)
class Layout:
    """Which columns of the user (P) and item (Q) rows are solved, and which hold constants."""

    rank: int
    biases: bool = False

    @property
    def width(self) -> int:
        return self.rank + 2 if self.biases else self.rank

    def free(self, side: str) -> np.ndarray:
        """Columns a half-step of ``side`` ("users" or "items") solves for."""
        k = self.rank
        if not self.biases:
            return np.arange(k)
        return np.arange(k + 1) if side == "users" else np.r_[np.arange(k), k + 1]

    def fixed(self, side: str):
        """The column of ``side`` that is the constant 1 (None without biases)."""
        if not self.biases:
            return None
        return self.rank + 1 if side == "users" else self.rank


def initial_factors(seed: int, n_users: int, n_items: int, layout: Layout):
    """``(P, Q)``: small random factors from ``seed``, the same at any number of ranks."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    scale = layout.rank ** -0.5
    p = np.zeros((n_users, layout.width))
    q = np.zeros((n_items, layout.width))
    p[:, : layout.rank] = rng.normal(0.0, scale, size=(n_users, layout.rank))
    q[:, : layout.rank] = rng.normal(0.0, scale, size=(n_items, layout.rank))
    if layout.biases:
        p[:, layout.fixed("users")] = 1.0
        q[:, layout.fixed("items")] = 1.0
    return p, q


def ridge_rows(rows: Rows, design: np.ndarray, offset, reg: float, weighted: bool = True) -> np.ndarray:
    """Solve each row's ridge problem against the other side's ``design`` rows.

    Row ``r`` minimizes ``sum_j (vals_j - offset[c_j] - design[c_j] . w)**2 + lam_r ||w||**2``
    with ``lam_r = reg * n_r`` (``weighted``) or ``reg``. Rows without ratings get 0.
    Compiled (:func:`mpiml.mf.kernels.gram_solve_rows`, Cholesky) unless
    ``MPIML_KERNELS=numpy``; raises ``numpy.linalg.LinAlgError`` on a singular system.
    """
    if not compiled():
        return ridge_rows_reference(rows, design, offset, reg, weighted)
    from mpiml.mf import kernels

    design = np.ascontiguousarray(design, dtype=np.float64)
    n, f = rows.n_rows, design.shape[1]
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), (design.shape[0],))
    lam = reg * (rows.counts().astype(np.float64) if weighted else np.ones(n))
    out = np.empty((n, f))
    bad = kernels.gram_solve_rows(rows.indptr, rows.cols, design, np.empty(0), rows.vals - offset[rows.cols],
                                  np.empty((0, 0)), lam, out)
    if bad >= 0:
        raise np.linalg.LinAlgError(f"the ridge system of row {rows.start + bad} is not positive definite")
    return out


def ridge_rows_reference(rows: Rows, design: np.ndarray, offset, reg: float, weighted: bool = True) -> np.ndarray:
    """numpy reference of :func:`ridge_rows`: stacked Gram matrices, ``numpy.linalg.solve``."""
    n, f = rows.n_rows, design.shape[1]
    counts = rows.counts()
    lam = reg * (counts if weighted else np.ones(n))
    out = np.zeros((n, f))
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), (design.shape[0],))
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        gram = np.zeros((hi - lo, f, f))
        rhs = np.zeros((hi - lo, f))
        for r in range(lo, hi):
            s, e = rows.indptr[r], rows.indptr[r + 1]
            if s == e:
                continue
            cols = rows.cols[s:e]
            d = design[cols]
            gram[r - lo] = d.T @ d
            rhs[r - lo] = d.T @ (rows.vals[s:e] - offset[cols])
        diag = np.arange(f)
        gram[:, diag, diag] += lam[lo:hi, None]
        gram[counts[lo:hi] == 0] = np.eye(f)  # rhs is 0 there: the solution is 0
        out[lo:hi] = np.linalg.solve(gram, rhs[..., None])[..., 0]
    return out


def design_of(other: np.ndarray, mu: float, layout: Layout, side: str) -> tuple:
    """``(design, offset)`` of a half-step of ``side`` against the ``other`` side's rows: the solved
    columns (a contiguous copy) and what the ratings are measured from. Made once per half-step,
    however many chunks solve it."""
    fixed = layout.fixed(side)
    offset = mu + (other[:, fixed] if fixed is not None else 0.0)
    return np.ascontiguousarray(other[:, layout.free(side)]), offset


def half_step(rows: Rows, own: np.ndarray, other: np.ndarray, mu: float, reg: float, layout: Layout,
              side: str, weighted: bool = True, design=None) -> np.ndarray:
    """New full-width rows ``rows.start:rows.stop`` of ``side``'s factors (``design``: :func:`design_of`'s,
    when already made)."""
    matrix, offset = design if design is not None else design_of(other, mu, layout, side)
    block = own[rows.start:rows.stop].copy()
    block[:, layout.free(side)] = ridge_rows(rows, matrix, offset, reg, weighted)
    return block


def half_step_or_nan(rows: Rows, own: np.ndarray, other: np.ndarray, mu: float, reg: float, layout: Layout,
                     side: str, weighted: bool = True, design=None) -> np.ndarray:
    """:func:`half_step`, with NaN rows where a system is singular (a finiteness check then stops every rank)."""
    try:
        return half_step(rows, own, other, mu, reg, layout, side, weighted, design)
    except np.linalg.LinAlgError:
        return np.full((rows.n_rows, own.shape[1]), np.nan)


def predict_rows(rows: Rows, p: np.ndarray, q: np.ndarray, mu: float) -> np.ndarray:
    """Predictions for every rating stored in user ``rows``."""
    if compiled():
        from mpiml.mf import kernels

        out = np.empty(rows.nnz)
        kernels.pair_dots(p, rows.row_ids(), q, rows.cols, out)
        out += mu
        return out
    return mu + pair_dots(p, rows.row_ids(), q, rows.cols)


def penalty(rows: Rows, own: np.ndarray, reg: float, layout: Layout, side: str, weighted: bool = True) -> float:
    """``reg * sum_r n_r ||free part of own[r]||**2`` over ``rows``."""
    weights, norms = _penalty_parts(rows, own, layout, side, weighted)
    return float(reg * np.dot(weights, norms))


def penalty_terms(rows: Rows, own: np.ndarray, layout: Layout, side: str, weighted: bool = True) -> np.ndarray:
    """Each row's ``n_r ||free part of own[r]||**2`` (reproducible mode sums them exactly)."""
    weights, norms = _penalty_parts(rows, own, layout, side, weighted)
    return weights * norms


def _penalty_parts(rows, own, layout, side, weighted):
    """``(n_r or 1, ||free part of own[r]||**2)`` of every row."""
    block = own[rows.start:rows.stop][:, layout.free(side)]
    weights = rows.counts() if weighted else np.ones(rows.n_rows)
    return weights, np.einsum("ij,ij->i", block, block)

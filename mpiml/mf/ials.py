"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008), pure.

Preference ``p = 1`` where a rating is positive (else 0) and confidence
``c = 1 + alpha * |r|`` on the observed entries, ``c = 1`` elsewhere. Row ``u`` solves

    (Y^T Y + Y_u^T (C_u - I) Y_u + reg I) x_u = Y_u^T C_u p_u

where ``Y_u`` holds only the rows of the items ``u`` rated: ``Y^T Y`` is computed once
per half-step, so no dense users x items work is ever done. Solvers: ``"cholesky"``
(exact) or ``"cg"`` (a few conjugate-gradient steps warm-started from the previous
factors, as the ``implicit`` library does; matrix-free).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from mpiml.mf.partition import Rows, pair_dots
from mpiml.runtime.jit import compiled

SOLVERS = ("cholesky", "cg")


def confidence(vals, alpha: float):
    """``(c - 1, p)`` of observed ratings: extra confidence and binary preference."""
    vals = np.asarray(vals, dtype=np.float64)
    return alpha * np.abs(vals), (vals > 0).astype(np.float64)


def ials_rows(rows: Rows, other: np.ndarray, gram: np.ndarray, reg: float, alpha: float,
              solver: str = "cholesky", cg_steps: int = 3, start=None) -> np.ndarray:
    """New factors of ``rows`` given the other side's factors and ``gram = other.T @ other``.

    The result has ``other``'s dtype when that is float32 or float64 (else float64); with
    float32 factors the compiled kernels also compute in float32, as the ``implicit``
    library does. ``"cg"`` starts from ``start`` (zeros when None) and gives 0 to rows
    without entries. Compiled (:mod:`mpiml.mf.kernels`) unless ``MPIML_KERNELS=numpy``.
    The Cholesky solver raises ``numpy.linalg.LinAlgError`` on a system that is not
    positive definite.
    """
    dtype = factor_dtype(other)
    if not compiled():
        out = ials_rows_reference(rows, other, gram, reg, alpha, solver, cg_steps, start)
        return out.astype(dtype, copy=False)
    from mpiml.mf import kernels

    n, k = rows.n_rows, other.shape[1]
    other = np.ascontiguousarray(other, dtype=dtype)
    base = np.ascontiguousarray(np.asarray(gram, dtype=np.float64) + reg * np.eye(k), dtype=dtype)
    if solver == "cg":
        out = np.zeros((n, k), dtype) if start is None else np.array(start, dtype=dtype, order="C", copy=True)
        kernels.cg_rows(rows.indptr, rows.cols, np.asarray(rows.vals, dtype=np.float64), float(alpha), other, base,
                        out, int(cg_steps))
        return out
    extra, pref = confidence(rows.vals, alpha)
    targets = ((1.0 + extra) * pref).astype(dtype)
    extra = extra.astype(dtype)
    out = np.empty((n, k), dtype)
    bad = kernels.gram_solve_rows(rows.indptr, rows.cols, other, extra, targets, base, np.zeros(n, dtype), out)
    if bad >= 0:
        raise np.linalg.LinAlgError(f"the iALS system of row {rows.start + bad} is not positive definite")
    return out


def factor_dtype(factors) -> np.dtype:
    """The dtype iALS computes in for these factors: theirs if float32 or float64, else float64."""
    dtype = np.asarray(factors).dtype
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def ials_rows_reference(rows: Rows, other: np.ndarray, gram: np.ndarray, reg: float, alpha: float,
                        solver: str = "cholesky", cg_steps: int = 3, start=None) -> np.ndarray:
    """numpy/scipy reference of :func:`ials_rows`, in float64."""
    n, k = rows.n_rows, other.shape[1]
    other = np.asarray(other, dtype=np.float64)
    base = np.asarray(gram, dtype=np.float64) + reg * np.eye(k)
    out = np.zeros((n, k)) if start is None else np.array(start, dtype=np.float64, copy=True)
    extra, pref = confidence(rows.vals, alpha)
    if solver == "cg":
        out = _cg_rows(rows, other, base, extra, pref, out, cg_steps)
        out[rows.counts() == 0] = 0.0  # the exact solution of an empty row
        return out
    for r in range(n):
        s, e = rows.indptr[r], rows.indptr[r + 1]
        d = other[rows.cols[s:e]]
        c1, p = extra[s:e], pref[s:e]
        a = base + d.T @ (c1[:, None] * d)
        out[r] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, check_finite=False),
                                        d.T @ ((1.0 + c1) * p), check_finite=False)
    return out


def _cg_rows(rows: Rows, other, base, extra, pref, out, steps: int, chunk: int = 1 << 16):
    """Conjugate gradient on all rows at once (chunks of about ``chunk`` ratings).

    ``A_u v = base v + Y_u^T ((c_u - 1) * (Y_u v))``: the per-rating terms are summed
    into their rows with a sparse indicator product, so nothing k x k is formed per row.
    """
    lo = 0
    while lo < rows.n_rows:
        hi = max(int(np.searchsorted(rows.indptr, rows.indptr[lo] + chunk, side="right")) - 1, lo + 1)
        hi = min(hi, rows.n_rows)
        s, e = rows.indptr[lo], rows.indptr[hi]
        local = np.repeat(np.arange(hi - lo), np.diff(rows.indptr[lo:hi + 1]))
        member = scipy.sparse.csr_matrix((np.ones(e - s), (local, np.arange(e - s))), shape=(hi - lo, e - s))
        d = other[rows.cols[s:e]]
        c1 = extra[s:e]

        def matvec(v):
            return v @ base + member @ ((c1 * np.einsum("ij,ij->i", d, v[local]))[:, None] * d)

        rhs = member @ (((1.0 + c1) * pref[s:e])[:, None] * d)
        out[lo:hi] = _cg(matvec, rhs, out[lo:hi], steps)
        lo = hi
    return out


def _cg(matvec, rhs, x, steps: int):
    """``steps`` conjugate-gradient steps on every row of ``x`` at once (rows independent)."""
    residual = rhs - matvec(x)
    direction = residual.copy()
    rs = np.einsum("ij,ij->i", residual, residual)
    for _ in range(steps):
        active = rs > 1e-20
        if not active.any():
            break
        ad = matvec(direction)
        curvature = np.einsum("ij,ij->i", direction, ad)
        step = np.where(active, rs / np.where(active, curvature, 1.0), 0.0)
        x = x + step[:, None] * direction
        residual = residual - step[:, None] * ad
        rs_new = np.einsum("ij,ij->i", residual, residual)
        direction = residual + np.where(active, rs_new / np.where(active, rs, 1.0), 0.0)[:, None] * direction
        rs = rs_new
    return x


def observed_loss(rows: Rows, own: np.ndarray, other: np.ndarray, alpha: float) -> float:
    """The observed entries' share of the loss: ``sum c (p - s)**2 - s**2`` over ``rows``."""
    if compiled():
        from mpiml.mf import kernels

        return float(kernels.ials_observed(own, rows.start, rows.indptr, other, rows.cols, rows.vals, float(alpha)))
    extra, pref = confidence(rows.vals, alpha)
    s = pair_dots(own, rows.row_ids(), other, rows.cols)
    return float(np.sum((1.0 + extra) * (pref - s) ** 2 - s**2))


def observed_terms(rows: Rows, own: np.ndarray, other: np.ndarray, alpha: float) -> np.ndarray:
    """Each observed entry's ``c (p - s)**2 - s**2`` (reproducible mode sums them exactly)."""
    extra, pref = confidence(rows.vals, alpha)
    s = pair_dots(own, rows.row_ids(), other, rows.cols).astype(np.float64)
    return (1.0 + extra) * (pref - s) ** 2 - s**2


def full_loss(observed_sum: float, p: np.ndarray, q: np.ndarray, reg: float) -> float:
    """The whole HKV objective from the observed share: every entry's ``s**2`` via traces."""
    return float(observed_sum + np.sum((p.T @ p) * (q.T @ q)) + reg * (np.sum(p * p) + np.sum(q * q)))

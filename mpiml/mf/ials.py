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

from mpiml.mf.partition import Rows

SOLVERS = ("cholesky", "cg")


def confidence(vals, alpha: float):
    """``(c - 1, p)`` of observed ratings: extra confidence and binary preference."""
    vals = np.asarray(vals, dtype=np.float64)
    return alpha * np.abs(vals), (vals > 0).astype(np.float64)


def ials_rows(rows: Rows, other: np.ndarray, gram: np.ndarray, reg: float, alpha: float,
              solver: str = "cholesky", cg_steps: int = 3, start=None) -> np.ndarray:
    """New factors of ``rows`` given the other side's factors and ``gram = other.T @ other``."""
    n, k = rows.n_rows, other.shape[1]
    base = gram + reg * np.eye(k)
    out = np.zeros((n, k)) if start is None else np.array(start, dtype=np.float64, copy=True)
    extra, pref = confidence(rows.vals, alpha)
    for r in range(n):
        s, e = rows.indptr[r], rows.indptr[r + 1]
        d = other[rows.cols[s:e]]
        c1, p = extra[s:e], pref[s:e]
        rhs = d.T @ ((1.0 + c1) * p)
        if solver == "cholesky":
            a = base + d.T @ (c1[:, None] * d)
            out[r] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, check_finite=False), rhs, check_finite=False)
        else:
            out[r] = _cg(lambda v: base @ v + d.T @ (c1 * (d @ v)), rhs, out[r], cg_steps)
    return out


def _cg(matvec, rhs, x, steps: int):
    residual = rhs - matvec(x)
    direction = residual.copy()
    rs = residual @ residual
    for _ in range(steps):
        if rs < 1e-20:
            break
        ad = matvec(direction)
        step = rs / (direction @ ad)
        x = x + step * direction
        residual = residual - step * ad
        rs_new = residual @ residual
        direction = residual + (rs_new / rs) * direction
        rs = rs_new
    return x


def observed_loss(rows: Rows, own: np.ndarray, other: np.ndarray, alpha: float) -> float:
    """The observed entries' share of the loss: ``sum c (p - s)**2 - s**2`` over ``rows``."""
    extra, pref = confidence(rows.vals, alpha)
    s = np.einsum("ij,ij->i", own[rows.row_ids()], other[rows.cols])
    return float(np.sum((1.0 + extra) * (pref - s) ** 2 - s**2))


def full_loss(observed_sum: float, p: np.ndarray, q: np.ndarray, reg: float) -> float:
    """The whole HKV objective from the observed share: every entry's ``s**2`` via traces."""
    return float(observed_sum + np.sum((p.T @ p) * (q.T @ q)) + reg * (np.sum(p * p) + np.sum(q * q)))

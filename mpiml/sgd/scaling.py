"""Feature standardization from statistics over all ranks, folded back into the model.

Dense data is centred and scaled to unit variance; sparse data is only scaled (by the
root mean square of each column) so it stays sparse. After training, :func:`unscale`
rewrites the coefficients so the model applies to the raw features.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def fit_scaler(X, allreduce, stats=None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` per column over the rows of every rank (one allreduce).

    ``stats(X) -> (column sums, column sums of squares, rows)`` over every rank replaces the
    allreduce (reproducible mode: exact sums, :func:`mpiml.train.reproducible.column_stats`).
    """
    d = X.shape[1]
    buf = np.zeros(2 * d + 1)
    if stats is not None:
        sums, squares, rows = stats(X)
        buf[:d] = 0.0 if sp.issparse(X) else sums
        buf[d:2 * d], buf[-1] = squares, rows
    elif sp.issparse(X):
        buf[d:2 * d] = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    else:
        buf[:d] = X.sum(axis=0)
        buf[d:2 * d] = np.einsum("ij,ij->j", X, X)
    if stats is None:
        buf[-1] = X.shape[0]
        allreduce(buf, out=buf)
    n = max(buf[-1], 1.0)
    mean = buf[:d] / n  # zero for sparse data: it is not centred
    variance = np.maximum(buf[d:2 * d] / n - mean * mean, 0.0)
    scale = np.sqrt(variance)
    scale[scale == 0] = 1.0  # constant columns stay as they are
    return mean, scale


def transform(X, mean, scale):
    """Standardized copy of ``X`` (sparse: scaled only)."""
    if sp.issparse(X):
        return sp.csr_matrix(X @ sp.diags(1.0 / scale))
    return (X - mean) / scale


def unscale(model, theta, mean, scale) -> np.ndarray:
    """Parameters for raw features from ``theta`` learned on standardized ones."""
    out = theta.copy()
    W, b = model.split(out)
    W /= scale[:, None]
    b -= mean @ W
    return out

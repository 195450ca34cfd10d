"""Text formats for rows a rank holds: svmlight and CSV lines (pure functions)."""

from __future__ import annotations

import io

import numpy as np
import scipy.sparse as sp


def svmlight_bytes(X, y, zero_based: bool = False) -> bytes:
    """``label index:value ...`` lines (1-based indices unless ``zero_based``)."""
    X = sp.csr_matrix(X)
    shift = 0 if zero_based else 1
    out = io.StringIO()
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        pairs = " ".join(f"{j + shift}:{v:.17g}" for j, v in zip(X.indices[lo:hi], X.data[lo:hi]))
        out.write(f"{y[i]:.17g} {pairs}\n" if pairs else f"{y[i]:.17g}\n")
    return out.getvalue().encode()


def csv_bytes(X, y) -> bytes:
    """``label,x1,x2,...`` lines."""
    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    out = io.StringIO()
    np.savetxt(out, np.column_stack([y, dense]), delimiter=",", fmt="%.17g")
    return out.getvalue().encode()

"""The math of model-partitioned linear learning, as pure functions of local arrays.

A rank owning a block of the weights computes *partial* scores; the caller sums them
(features split) or combines the per-row maximum and exponential sums (classes split)
over the ranks of its row group, then asks the model for the loss and the derivative of the
loss with respect to the scores (the residual ``r``, :meth:`mpiml.sgd.models.Model.loss_and_residual`);
the weight gradient of its own block is ``X_block.T @ r``. No function here communicates.
"""

from __future__ import annotations

import numpy as np


def partial_scores(W_block: np.ndarray, X_block) -> np.ndarray:
    """``X_block @ W_block``, shape ``(rows, k)``: this rank's share of the margins (dense or CSR)."""
    return np.asarray(X_block @ W_block)


def block_gradient(X_block, residual: np.ndarray, fit_intercept: bool, XT=None) -> tuple[np.ndarray, np.ndarray]:
    """``(X_block.T @ r, sum of r over rows)``: summed gradient of the local weights and intercepts.

    ``XT``: ``X_block.T`` made once by a caller that needs it many times (for CSR data each
    ``.T`` builds a new CSC object).
    """
    gW = np.asarray((X_block.T if XT is None else XT) @ residual)
    gb = residual.sum(axis=0) if fit_intercept else np.zeros(residual.shape[1])
    return gW, gb


# --- softmax with the classes split over the row group ------------------------------------------

def row_max(scores: np.ndarray) -> np.ndarray:
    """Per-row maximum of this rank's class scores (``-inf`` for no classes); combined by max."""
    if scores.shape[1] == 0:
        return np.full(scores.shape[0], -np.inf)
    return scores.max(axis=1)


def exp_sums(scores: np.ndarray, top: np.ndarray, y: np.ndarray, lo: int) -> np.ndarray:
    """``(2, rows)``: ``sum exp(s - top)`` over the local classes, and the score of the true
    class where this rank owns it (else 0); both are combined by sum.

    Subtracting the global row maximum ``top`` first keeps every exponential in (0, 1], so
    no logit is too large.
    """
    out = np.zeros((2, scores.shape[0]))
    out[0] = np.exp(scores - top[:, None]).sum(axis=1)
    own = (y >= lo) & (y < lo + scores.shape[1])
    rows = np.flatnonzero(own)
    out[1, rows] = scores[rows, y[rows] - lo]
    return out


def softmax_loss_residual(scores: np.ndarray, top: np.ndarray, sums: np.ndarray, y: np.ndarray,
                          lo: int) -> tuple[float, np.ndarray]:
    """Summed cross-entropy and the residual ``softmax - onehot`` of the local classes.

    ``top``: the global per-row maximum; ``sums``: the combined :func:`exp_sums`. The loss
    of a row is ``log Z + top - s_true`` with ``Z = sum_j exp(s_j - top)``.
    """
    Z = sums[0]
    loss = float((np.log(Z) + top - sums[1]).sum())
    r = np.exp(scores - top[:, None]) / Z[:, None]
    own = np.flatnonzero((y >= lo) & (y < lo + scores.shape[1]))
    r[own, y[own] - lo] -= 1.0
    return loss, r


def softmax_correct(top: np.ndarray, sums: np.ndarray) -> int:
    """Rows whose true class has the largest score (ties count as right)."""
    return int(np.count_nonzero(sums[1] >= top))

"""Reproducible mode of the linear-model training: the same bits at any rank count.

``TrainConfig(reproducible=True)`` (``--reproducible``, or ``MPIML_REPRODUCIBLE=1`` in the
environment) makes every sum that crosses rows, and so ranks, exact
(:mod:`mpiml.collectives.reproducible`): the gradient and loss of each ``sync`` update, the
loss, slope and gradient of each L-BFGS evaluation, the evaluation metrics and the
standardization statistics. Per-row values must not depend on the other rows either, so
scores are computed row by row in a fixed order (:func:`scores`: not BLAS, whose blocking
may depend on the number of rows) and losses row by row
(:meth:`mpiml.sgd.models.Model.row_line_loss`: a compiled kernel for the one-output models, whose
last bits may differ from the numpy reference's; a job uses one or the other on every rank).

Cost: each update of ``sync`` and each L-BFGS evaluation still makes one reduction, of
``K`` (2 or 3) times the payload: :class:`Bounds` gives the grid of the exact sum before the
batch is computed, so no max-reduction is needed (the evaluation metrics, once per epoch,
take the two-pass sum). Locally the terms are cut into pieces (the deposit kernels of
:mod:`mpiml.collectives.reproducible`) instead of one BLAS ``X^T r``.

Which runs are then bitwise the same at every rank count: data-parallel ``sync`` SGD and
``lbfgs`` (without ``warm_start_epochs``, whose one-shot SGD depends on the rank count),
also when resumed from a checkpoint written at another rank count. ``local`` and
``oneshot`` are not: each rank walks through its own rows, so the algorithm itself
changes with the rank count (their sums are exact all the same). Grids with the model
split over ranks are refused in this mode.
"""

from __future__ import annotations

import os

import numpy as np

from mpiml.collectives import reproducible as exact
from mpiml.errors import ArgumentError
from mpiml.runtime.jit import compiled, kernel

ENV = "MPIML_REPRODUCIBLE"


def requested(flag: bool = False) -> bool:
    """``flag``, or ``MPIML_REPRODUCIBLE`` set to something other than ``""``/``0``."""
    return bool(flag) or os.environ.get(ENV, "").strip() not in ("", "0")


def check_layout(whole_model: bool) -> None:
    if not whole_model:
        raise ArgumentError("reproducible mode needs data parallelism (a p x 1 grid): with the model split over "
                            "ranks the partial margins would be summed in a rank-dependent order")


# --- scores, row by row --------------------------------------------------------------------------------

def scores(W: np.ndarray, b: np.ndarray, X) -> np.ndarray:
    """``X @ W + b`` (``(rows, k)``), each entry summed in an order fixed by the row alone, then ``+ b``.

    Dense: eight partial sums (feature ``j`` into lane ``j % 8``, for the first ``8 * (d // 8)``
    features), added as ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``, then the rest of
    the features in order (a SIMD dot product's order, written out so no compiler changes it).
    CSR: the stored entries in order.
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if not compiled():
        return scores_reference(W, b, X)
    out = np.empty((X.shape[0], W.shape[1]))
    if hasattr(X, "indptr") and W.shape[1] == 1:   # one output: a vector of weights, no inner loop
        _csr_scores_one(X.indptr, X.indices, X.data, W[:, 0], b[0], out[:, 0])
    elif hasattr(X, "indptr"):
        _csr_scores(X.indptr, X.indices, X.data, W, b, out)
    elif X.shape[0] > STREAM_ROWS:
        _dense_scores_streamed(np.ascontiguousarray(X), W, b, out)
    else:
        _dense_scores(np.ascontiguousarray(X), W, b, out)
    return out


# Dense blocks larger than the caches stream faster one row at a time, smaller ones two rows at a time
# (measured, 200 features: 10000 rows 0.57 vs 0.65-2.1 ms; 256 rows 14.6 vs 11.5 us); the same bits either way
STREAM_ROWS = 4096


def scores_reference(W, b, X) -> np.ndarray:
    """numpy reference of :func:`scores`: one feature (dense) or one stored entry per row (CSR) at a time."""
    out = np.zeros((X.shape[0], W.shape[1]))
    if hasattr(X, "indptr"):
        lengths = np.diff(X.indptr)
        for pos in range(int(lengths.max(initial=0))):
            rows = np.flatnonzero(lengths > pos)
            at = X.indptr[rows] + pos
            out[rows] += np.asarray(X.data[at], dtype=np.float64)[:, None] * W[X.indices[at]]
    else:
        X = np.asarray(X)
        d8 = X.shape[1] - X.shape[1] % 8
        lanes = np.zeros((8, X.shape[0], W.shape[1]))
        for t in range(0, d8, 8):
            for lane in range(8):
                lanes[lane] += X[:, t + lane:t + lane + 1].astype(np.float64) * W[t + lane]
        for j in range(d8, X.shape[1]):
            out += X[:, j:j + 1].astype(np.float64) * W[j]
        out = (((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
               + out)
    out += b
    return out


@kernel
def _dense_scores(X, W, b, out):
    m, d = X.shape
    d8 = d - d % 8
    for c in range(W.shape[1]):
        i = 0
        while i < m:
            # two rows at a time, each in its own eight lanes: twice the independent additions in flight
            # (1.3x faster); each row's order stays its own (the last row of an odd count is done twice)
            i2 = i + 1 if i + 1 < m else i
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
            for j in range(0, d8, 8):
                w0, w1, w2, w3 = W[j, c], W[j + 1, c], W[j + 2, c], W[j + 3, c]
                w4, w5, w6, w7 = W[j + 4, c], W[j + 5, c], W[j + 6, c], W[j + 7, c]
                a0 += np.float64(X[i, j]) * w0
                a1 += np.float64(X[i, j + 1]) * w1
                a2 += np.float64(X[i, j + 2]) * w2
                a3 += np.float64(X[i, j + 3]) * w3
                a4 += np.float64(X[i, j + 4]) * w4
                a5 += np.float64(X[i, j + 5]) * w5
                a6 += np.float64(X[i, j + 6]) * w6
                a7 += np.float64(X[i, j + 7]) * w7
                b0 += np.float64(X[i2, j]) * w0
                b1 += np.float64(X[i2, j + 1]) * w1
                b2 += np.float64(X[i2, j + 2]) * w2
                b3 += np.float64(X[i2, j + 3]) * w3
                b4 += np.float64(X[i2, j + 4]) * w4
                b5 += np.float64(X[i2, j + 5]) * w5
                b6 += np.float64(X[i2, j + 6]) * w6
                b7 += np.float64(X[i2, j + 7]) * w7
            ta = 0.0
            tb = 0.0
            for j in range(d8, d):
                ta += np.float64(X[i, j]) * W[j, c]
                tb += np.float64(X[i2, j]) * W[j, c]
            out[i, c] = ((((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + ta) + b[c]
            out[i2, c] = ((((b0 + b1) + (b2 + b3)) + ((b4 + b5) + (b6 + b7))) + tb) + b[c]
            i += 2


@kernel
def _dense_scores_streamed(X, W, b, out):
    # _dense_scores one row at a time: a row view and unsigned positions (no wraparound checks)
    m, d = X.shape
    d8 = d - d % 8
    for c in range(W.shape[1]):
        w = np.ascontiguousarray(W[:, c])
        for i in range(np.uint64(m)):
            x = X[i]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            for j in range(np.uint64(0), np.uint64(d8), np.uint64(8)):
                a0 += np.float64(x[j]) * w[j]
                a1 += np.float64(x[j + np.uint64(1)]) * w[j + np.uint64(1)]
                a2 += np.float64(x[j + np.uint64(2)]) * w[j + np.uint64(2)]
                a3 += np.float64(x[j + np.uint64(3)]) * w[j + np.uint64(3)]
                a4 += np.float64(x[j + np.uint64(4)]) * w[j + np.uint64(4)]
                a5 += np.float64(x[j + np.uint64(5)]) * w[j + np.uint64(5)]
                a6 += np.float64(x[j + np.uint64(6)]) * w[j + np.uint64(6)]
                a7 += np.float64(x[j + np.uint64(7)]) * w[j + np.uint64(7)]
            tail = 0.0
            for j in range(np.uint64(d8), np.uint64(d)):
                tail += np.float64(x[j]) * w[j]
            out[i, c] = ((((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + tail) + b[c]


@kernel
def _csr_scores(indptr, indices, data, W, b, out):
    k = W.shape[1]
    for i in range(indptr.shape[0] - 1):
        for c in range(k):
            s = 0.0
            for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):   # unsigned: no wraparound
                s += np.float64(data[p]) * W[np.uint64(indices[p]), c]
            out[i, c] = s + b[c]


@kernel
def _csr_scores_one(indptr, indices, data, w, b, out):
    # _csr_scores for one output (the same additions, in the same order)
    for i in range(indptr.shape[0] - 1):
        s = 0.0
        # unsigned positions and columns: numba then skips its negative-index wraparound (2.5x faster)
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            s += np.float64(data[p]) * w[np.uint64(indices[p])]
        out[i] = s + b


# --- the terms of a batch --------------------------------------------------------------------------------

def add_batch(model, theta, X, y, terms: exact.Sum, loss_at: int) -> tuple[np.ndarray, np.ndarray]:
    """Add the rows' gradient terms (``X^T r`` at 0, ``r`` at the intercepts) and losses (at ``loss_at``)
    to ``terms``; returns the scores and residuals."""
    W, b = model.split(theta)
    s = scores(W, b, X)
    _, losses, r, _ = model.row_line_loss(s, None, 0.0, y)
    terms.add_outer(X, r, 0)
    if model.fit_intercept and loss_at == model.n_params:   # the intercepts and the loss: one block of terms
        terms.add_rows(np.concatenate([r, losses[:, None]], axis=1), model.n_weights)
    else:
        if model.fit_intercept:
            terms.add_rows(r, model.n_weights)
        terms.add_rows(losses, loss_at)
    return s, r


# --- a-priori grids: one reduction instead of two ------------------------------------------------------

class Bounds:
    """Bounds on every term of a batch, known before the batch is computed, the same on every rank.

    From the largest ``|X[:, j]|`` and ``|y|`` over all rows (maximized once, in the counts' sum)
    and the parameters (the same on every rank), each model bounds its scores, residuals
    and losses (:meth:`top`). The grid of the exact sum then needs no max-reduction of its
    own: a sum costs one reduction, like the ordinary mode's. Should a term exceed its
    bound (it cannot, up to the factor 2 kept for rounding), every rank learns it from a
    flag in that reduction and the sum is redone in two passes.
    """

    def __init__(self, model, tops):
        """``tops``: :meth:`local_tops` maximized over every rank."""
        self.model, self.x_top, self.y_top = model, tops[:-1], float(tops[-1])
        self._key = self._tops = None   # the residual bound _weight_tops last saw, and its tops

    @staticmethod
    def local_tops(model, X, y) -> np.ndarray:
        """This rank's largest ``|X[:, j]|`` per column, then ``|y|`` (linear models; else 0): what is maximized."""
        tops = np.zeros(X.shape[1] + 1)
        if hasattr(X, "indptr"):
            column_abs_max(X.indices, X.data, tops)
        elif X.shape[0]:   # the largest |x| per column without an array of |X| (NaN stays NaN)
            tops[:-1] = np.maximum(np.max(X, axis=0), -np.min(X, axis=0))
        tops[-1] = np.abs(np.asarray(y, dtype=np.float64)).max(initial=0.0) if model.name == "linear" else 0.0
        return tops

    def scores(self, theta) -> np.ndarray:
        """A bound on ``|X W + b|`` per output, for the parameters ``theta``."""
        W, b = self.model.split(np.asarray(theta, dtype=np.float64))
        return self.x_top @ np.abs(W) + np.abs(b)

    def top(self, theta, n: int, direction=None) -> np.ndarray:
        """Per element of ``[X^T r (n_weights), r (k), loss, (r * u per output with direction)]``
        (``n`` elements in all), twice a bound on the magnitude of every term."""
        model, k, nw = self.model, self.model.k, self.model.n_weights
        s = self.scores(theta)
        r, loss = _residual_loss_bounds(model, s, self.y_top)
        top = np.empty(n)
        with np.errstate(over="ignore", invalid="ignore"):
            # twice the bounds: room for the rounding of computed scores, residuals and products
            top[:nw] = self._weight_tops(r)
            np.multiply(r, 2.0, out=top[nw:nw + k])
            top[nw + k] = 2.0 * loss
            if direction is not None:
                top[nw + k + 1:nw + 2 * k + 1] = (r * self.scores(direction)) * 2.0
            top[nw + 2 * k + 1 if direction is not None else nw + k + 1:] = 0.0
        return top

    def metric_tops(self, theta, counts) -> np.ndarray:
        """Twice a bound on the terms of :meth:`mpiml.train.loop.Run.evaluate`'s sums: ``[loss, correct]``
        per set of ``counts[i]`` rows (a row's loss, and a set's count of rights)."""
        _, loss = _residual_loss_bounds(self.model, self.scores(theta), self.y_top)
        top = np.empty(2 * len(counts))
        top[0::2] = 2.0 * loss
        top[1::2] = 2.0 * np.asarray(counts, dtype=np.float64) + 2.0
        return top

    def _weight_tops(self, r) -> np.ndarray:
        """``2 x_top (outer) r``, flattened: kept while ``r`` stays (a constant for logistic, hinge and softmax)."""
        key = r.tobytes()
        if key != self._key:
            self._tops = 2.0 * np.multiply.outer(self.x_top, r).ravel()
            self._key = key
        return self._tops


def column_abs_max(indices, data, top) -> None:
    """``top[j] = max(top[j], |data[p]|)`` over the stored entries ``p`` of column ``j = indices[p]``."""
    if compiled():
        _column_abs_max(indices, data, top)
    else:
        with np.errstate(invalid="ignore"):   # a NaN entry makes its column's maximum NaN, as in the kernel
            np.maximum.at(top, indices, np.abs(np.asarray(data, dtype=np.float64)))


@kernel
def _column_abs_max(indices, data, top):
    for p in range(indices.shape[0]):
        j = np.uint64(indices[p])
        a = abs(np.float64(data[p]))
        if a > top[j] or a != a:   # NaN propagates as numpy.maximum does
            top[j] = a


def _residual_loss_bounds(model, s, y_top):
    """Bounds on ``|r|`` per output and on a row's loss, for scores bounded by ``s`` per output."""
    top = float(np.max(s, initial=0.0))
    if model.name == "linear":
        r = s + y_top
        return r, 0.5 * float(r.max(initial=0.0)) ** 2
    if model.name == "svm" and getattr(model, "squared", False):
        return 2.0 * (1.0 + s), (1.0 + top) ** 2
    if model.name == "softmax":
        return np.ones_like(s), 2.0 * top + np.log(model.k)
    return np.ones_like(s), 1.0 + top     # logistic (log(1 + e^s) - y s <= |s| + log 2), hinge


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` summed exactly (the same wherever the vectors are the same)."""
    return dots([(a, b)])[0]


def dots(pairs) -> list[float]:
    """:func:`dot` of each ``(a, b)`` in ``pairs`` (the same bits), without a :class:`~exact.Sum` per pair."""
    return [exact.vector_sum(np.asarray(a, dtype=np.float64).ravel() * np.asarray(b, dtype=np.float64).ravel())
            for a, b in pairs]


MAX_CARRIED = 1 << 16   # the most values of maxima carried in global_counts' sum (p rows of them)


def global_counts(group, X, test, tops=None, columns=None) -> tuple[int, int, int, int | None, np.ndarray | None]:
    """``(offset, rows, held-out rows, most stored entries of a column, maxima)`` over ``group``'s ranks, in one sum.

    The fourth (CSR ``X`` only, else None) bounds the terms of each ``X^T r`` element of an exact sum.
    ``tops`` (non-negative, this rank's): their maxima over the ranks ride in the same sum, one row per rank
    (so a maximum is read off exactly), when ``p * len(tops)`` is at most :data:`MAX_CARRIED`; else None.
    ``columns``: ``X.tocsc()`` if the caller made one (its column counts are at hand).
    """
    p, d = group.size, X.shape[1]
    sparse = hasattr(X, "indptr")
    carried = tops is not None and p * tops.size <= MAX_CARRIED
    width = tops.size if carried else 0
    counts = np.zeros(2 * p + (d if sparse else 0) + p * width)
    counts[group.rank] = X.shape[0]
    counts[p + group.rank] = test[0].shape[0] if test is not None else 0
    head = 2 * p + (d if sparse else 0)
    if sparse:
        counts[2 * p:head] = np.diff(columns.indptr) if columns is not None else np.bincount(X.indices, minlength=d)[:d]
    if carried:
        counts[head + group.rank * width:head + (group.rank + 1) * width] = tops
    counts = group.allreduce(counts)    # integers, and one non-zero term per maximum: exact in any order
    column = int(counts[2 * p:head].max(initial=0)) if sparse else None
    maxima = counts[head:].reshape(p, width).max(axis=0) if carried else None
    return (int(counts[: group.rank].sum()), int(counts[:p].sum()), int(counts[p:2 * p].sum()), column, maxima)


def one_pass(terms: exact.Sum, top, maximum, total, extra_max=None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`two_pass` with the grid from ``top`` (twice a bound on every term, the same on every rank):
    one sum reduction, unless a rank's terms exceed it (a flag in that reduction), then :func:`two_pass`.

    ``extra_max`` (non-negative flags such as stop votes) rides in that reduction, summed: positive where
    any rank's is.
    """
    extra = np.zeros(0) if extra_max is None else np.asarray(extra_max, dtype=np.float64)
    E, buf, F = send_buffer(terms, top, extra.size)
    buf[F.size + 1:] = extra
    total(buf, out=buf)
    if buf[F.size] == 0:
        return exact.value(F, E), (buf[F.size + 1:] if extra_max is not None else None)
    return two_pass(terms, maximum, total, extra_max)


def send_buffer(terms: exact.Sum, top, tail: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(E, buf, F)`` of a one-reduction exact sum: the grids of ``top``, and a buffer holding the folds (``F``,
    a view: deposited where they are sent), the flag of a term beyond its bound, then ``tail`` free entries."""
    E = exact.exponents(top)
    K, n = terms.plan.folds, terms.n
    buf = np.empty(K * n + 1 + tail)
    F = terms.folds(E, out=buf[:K * n].reshape(K, n))
    buf[K * n] = float(terms.over)
    return E, buf, F


def two_pass(terms: exact.Sum, maximum, total, extra_max=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reduce ``terms`` exactly with ``maximum`` and ``total`` (in place, by max and by sum).

    ``extra_max`` (non-negative values, e.g. stop votes) rides in the max pass; returns
    ``(sums, extra_max maximized over the ranks or None)``.
    """
    E = exact.exponents(terms.maxima())
    extra = np.zeros(0) if extra_max is None else np.asarray(extra_max, dtype=np.float64)
    buf = np.concatenate([E, extra])
    maximum(buf, out=buf)
    E = buf[: terms.n]
    F = terms.folds(E)
    flat = F.reshape(-1)
    total(flat, out=flat)
    return exact.value(F, E), (buf[terms.n:] if extra_max is not None else None)


def column_stats(X, maximum, total, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, sums of squares)`` of the columns of every rank's rows, exactly (standardization).

    Sparse data is scaled, not centred: its sums are not needed and come back as zeros.
    """
    d = X.shape[1]
    terms = exact.Sum(2 * d, count)
    if hasattr(X, "indptr"):
        terms.add_outer(X.multiply(X).tocsr(), np.ones((X.shape[0], 1)), d)
    else:
        X = np.ascontiguousarray(X)
        terms.add_rows(X, 0).add_rows(X, d, square=True)
    sums, _ = two_pass(terms, maximum, total)
    return sums[:d], sums[d:]

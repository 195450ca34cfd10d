"""Sync SGD's gradient exchange on sparse rows: only the coordinates the batch touched travel.

A batch of ``b`` sparse rows touches the columns of their nonzeros only, so the gradient
a rank sums into its buffer ``[gradient, loss, stop vote, compute slots]`` is zero
everywhere else. Here that buffer is summed with :func:`mpiml.sparse_allreduce_coo` on its
nonzeros (the touched gradient coordinates, bias, loss, vote and this rank's slot) instead
of a dense allreduce of all of it, and the sum is written back into the buffer: the
untouched coordinates are zero in the buffer and in the sum, so the buffer ends as the dense
sum would leave it (to rounding: the sparse sum adds in rank order), identical on every rank.

When: :func:`for_run` decides once per run, the same way on every rank, from agreed sizes.
The group's allreduce must be ``mpiml.allreduce`` from :meth:`mpiml.train.group.Group.from_comm`
(this module's :class:`GroupSum`) asked for ``"auto"`` or ``"sparse"``, the layout data
parallel (the whole model on every rank), more than one rank, and no reproducible mode.
``"sparse"`` always takes this exchange; ``"auto"`` takes it where the cost model
(:func:`exchange_cost`: :func:`mpiml.collectives.model.predict_sparse_counts` against the
dense allreduce) predicts it cheaper, e.g. a 1M-feature logistic model at batch 64.

Every exchange counts the bytes this rank sends in ``run.ex.bytes_moved``, and what a dense
allreduce would send in ``run.ex.bytes_dense`` (``2 (p-1)/p`` of its buffer, what a
bandwidth-optimal one sends).
"""

from __future__ import annotations

import math

import numpy as np

from mpiml.collectives.model import allreduce_bytes

EXCHANGES = ("auto", "sparse")


def dense_algorithm(algorithm: str) -> str:
    """The dense allreduce algorithm behind ``algorithm`` (``"sparse"`` leaves the dense sums to ``auto``)."""
    return "auto" if algorithm == "sparse" else algorithm


class GroupSum:
    """``mpiml.allreduce`` (sum) over ``comm`` with the dense algorithm of ``algorithm``; a group's
    ``allreduce``, which also tells sync SGD what its gradient exchange may do (``requested``)."""

    def __init__(self, comm, algorithm: str = "auto"):
        self.comm, self.requested, self.algorithm = comm, algorithm, dense_algorithm(algorithm)

    def __call__(self, x, out=None):
        import mpiml

        return mpiml.allreduce(x, comm=self.comm, algorithm=self.algorithm, out=out)


def expected_nonzeros(d: int, k: int, rows: float, nnz_per_row: float) -> float:
    """Gradient nonzeros of ``rows`` rows with ``nnz_per_row`` uniformly spread nonzeros among ``d`` columns
    (``k`` outputs per column), plus the ``k`` biases."""
    if d <= 0:
        return float(k)
    touched = d * -math.expm1(-rows * min(nnz_per_row, d) / d)
    return (touched + 1) * k


def exchange_cost(d: int, k: int, rows_per_rank: float, nnz_per_row: float, p: int, extra: int = 0,
                  params=None) -> tuple[float, float, float, float]:
    """``(sparse bytes, sparse seconds, dense bytes, dense seconds)`` per rank of one gradient exchange.

    The buffer holds ``(d + 1) k`` gradient entries and ``extra`` more (loss, vote, slots);
    each of ``p`` ranks sums ``rows_per_rank`` rows. Sparse: the predicted sparse allreduce
    of the expected nonzeros (:func:`expected_nonzeros`; the union over the ranks as for
    ``p`` times the rows), plus a scan of the buffer for them. Dense: ``mpiml.allreduce``'s
    ``auto`` choice, in place.
    """
    from mpiml.collectives import model
    from mpiml.collectives.layout import balanced_counts
    from mpiml.collectives.select import choose

    size = (d + 1) * k + extra
    nbytes = 8 * size
    if p <= 1:
        return 0.0, 0.0, 0.0, 0.0
    dense_seconds = model.predict(choose("allreduce", "auto", nbytes, p), nbytes, p, in_place=True)
    dense_bytes = 2 * (p - 1) / p * nbytes
    share = min(1.0, (expected_nonzeros(d, k, rows_per_rank, nnz_per_row) + extra) / size)
    union = min(1.0, (expected_nonzeros(d, k, p * rows_per_rank, nnz_per_row) + extra) / size)
    width = balanced_counts(size, p).astype(np.float64)
    C, M = np.tile(share * width, (p, 1)), union * width
    seconds, path = model.predict_sparse_counts(C, M, size, dense_out=False)
    prm = model.sparse_params()
    seconds += nbytes * prm.copy   # finding the nonzeros
    index = 4 if size < 2**31 else 8
    if path == "dense":
        sent = dense_bytes
    elif path == "sparse_allgather":   # its nonzeros to every other rank
        sent = share * size * (p - 1) * (8 + index)
    else:
        sent = share * size * (p - 1) / p * (8 + index) + (
            union * size * (p - 1) / p * (8 + index) if path == "sparse" else (p - 1) / p * nbytes)
    return sent, seconds, dense_bytes, dense_seconds


class SparseExchange:
    """Sums an Exchanger buffer on its nonzeros with :func:`mpiml.sparse_allreduce_coo` over ``comm``."""

    def __init__(self, comm, algorithm: str):
        self.comm, self.algorithm = comm, algorithm

    def exchange(self, run, buf, vote) -> np.ndarray:
        """As :meth:`mpiml.train.timing.Exchanger.allreduce` (vote, slots, timing), summing sparsely."""
        ex = run.ex
        p = ex.group.size
        buf[-p - 1] = ex.vote() if vote is None else vote
        ex.reduce(self.sum, buf, ex.group.rank, p)
        ex.stop_agreed = ex.stop_agreed or buf[-p - 1] > 0
        return buf[: len(buf) - p - 1]

    def sum(self, buf, out):
        """``out`` (which is ``buf``) becomes the sum over the ranks; only nonzeros are sent."""
        from mpiml.collectives import sparse_allreduce_coo
        from mpiml.collectives.sparse import STATS

        # nonzero bits: a -0.0 travels too, so no rank keeps a zero of another sign than the others
        touched = np.flatnonzero(buf.view(np.int64) != 0)
        idx, val = sparse_allreduce_coo(touched, buf[touched], buf.size, algorithm=self.algorithm, comm=self.comm)
        if idx.size == buf.size:   # the dense switch: every position
            out[:] = val
        else:
            out[idx] = val   # elsewhere buf is zero, and so is the sum
        self.bytes = STATS["bytes_sent"]
        return out


def for_run(run) -> SparseExchange | None:
    """The run's sparse exchange, or None for the dense allreduce (decided at the first call; collective)."""
    if "_sparse_exchange" in run.__dict__:
        return run.__dict__["_sparse_exchange"]
    chosen = None
    fn, group = run.data.allreduce, run.data
    if (isinstance(fn, GroupSum) and fn.requested in EXCHANGES and group.size > 1 and not run.reproducible
            and getattr(run.layout, "whole_model", True)):
        if fn.requested == "sparse":
            chosen = SparseExchange(fn.comm, "sparse")
        else:
            import scipy.sparse as sp

            nnz = run.X.nnz if sp.issparse(run.X) else run.X.shape[0] * run.X.shape[1]
            totals = fn(np.array([float(nnz), float(run.X.shape[0])]))   # the same sizes on every rank
            model = run.model
            rows = run.cfg.batch_size * run.cfg.accumulate / group.size
            sent, seconds, dense_sent, dense_seconds = exchange_cost(
                model.n_features, model.k, rows, totals[0] / max(totals[1], 1.0), group.size, 2 + group.size)
            if seconds < dense_seconds:
                chosen = SparseExchange(fn.comm, "auto")
    run.__dict__["_sparse_exchange"] = chosen
    return chosen


def exchange(run, buf, vote) -> np.ndarray:
    """Sync SGD's exchange: :meth:`SparseExchange.exchange` where :func:`for_run` chose it, else the
    Exchanger's dense allreduce; counts the bytes sent in ``run.ex.bytes_moved``."""
    sparse = for_run(run)
    if sparse is None:
        return run.ex.allreduce(buf, vote)   # which counts its bytes
    payload = sparse.exchange(run, buf, vote)
    run.ex.bytes_dense += allreduce_bytes(buf.nbytes, run.ex.group.size)
    run.ex.bytes_moved += sparse.bytes
    return payload

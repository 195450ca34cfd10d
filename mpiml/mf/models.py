"""The three trainers behind the shared estimator API: ALS, ImplicitALS, DSGD.

Each supplies ``_train(data, ex, P, Q, first)``: the iterations, given this rank's sparse
rows and an :class:`~mpiml.mf.transport.Exchange` for all communication.
"""

from __future__ import annotations

import time

import numpy as np

from mpiml.mf import als, dsgd, ials
from mpiml.mf.estimator import FactorModel
from mpiml.mf.partition import pair_dots
from mpiml.runtime.errors import ArgumentError
from mpiml.runtime.seeding import rank_generator


class ALS(FactorModel):
    """Explicit ALS-WR (Zhou et al. 2008) with optional global/user/item biases.

    Parameters
    ----------
    rank, reg, iters, seed : int, float, int, int
        Factor dimension, lambda (multiplied by each row's rating count when
        ``weighted=True``), iterations (each = a user and an item half-step), seed.
    biases : bool
        Learn user and item biases beside the global mean.
    exchange : str
        How solved factor blocks are shared: mpiml's allgather with ``"auto"``,
        ``"ring"`` or ``"native"``.
    cold_start : str
        ``"drop"``, ``"nan"`` or ``"mean"`` (see the module docstring).
    checkpoint_dir, checkpoint_every, resume :
        Write a checkpoint every ``checkpoint_every`` iterations; with ``resume`` start
        from the latest one (at any number of ranks).
    callback : callable, optional
        Called on every rank after each iteration with a dict (iteration, objective,
        train_rmse, seconds, comm_seconds).
    """

    algorithm = "als"

    def __init__(self, rank=10, reg=0.1, iters=10, biases=False, weighted=True, **kwargs):
        super().__init__(rank, reg, iters, **kwargs)
        self.params.update(biases=bool(biases), weighted=bool(weighted))
        self.layout = als.Layout(int(rank), bool(biases))

    def _train(self, data, ex, p, q, first):
        ur, ir, mu, lay = data["user_rows"], data["item_rows"], self.mu, self.layout
        for it in range(first, self.iters):
            clock = (time.perf_counter(), ex.seconds)
            p = self._gather_finite(ex, _solve(als.half_step, ur, p, q, mu, self.reg, lay, "users", self.weighted),
                                    "user", it)
            q = self._gather_finite(ex, _solve(als.half_step, ir, q, p, mu, self.reg, lay, "items", self.weighted),
                                    "item", it)
            err = ur.vals - als.predict_rows(ur, p, q, mu)
            pen = als.penalty(ur, p, self.reg, lay, "users", self.weighted) + \
                als.penalty(ir, q, self.reg, lay, "items", self.weighted)
            sse, pen = ex.sum([err @ err, pen])
            record = {"objective": float(sse + pen), "train_rmse": float(np.sqrt(sse / data["n"]))}
            self._after_iteration(data, ex, it, p, q, record, clock)
        return p, q


def _solve(step, rows, *args):
    """Run a half-step; a singular system gives NaN rows, which the gather then reports on all ranks."""
    try:
        return step(rows, *args)
    except np.linalg.LinAlgError:
        return np.full((rows.n_rows, args[0].shape[1]), np.nan)


class ImplicitALS(FactorModel):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008).

    Ratings are read as interaction strengths: preference 1 where positive, confidence
    ``1 + alpha * |r|``; unobserved entries have preference 0 and confidence 1.
    ``solver`` is ``"cholesky"`` or ``"cg"`` (``cg_steps`` conjugate-gradient steps per
    row, warm-started). Other parameters as in :class:`ALS` (``reg`` is not weighted).
    """

    algorithm = "ials"
    implicit = True

    def __init__(self, rank=10, reg=0.1, iters=10, alpha=10.0, solver="cholesky", cg_steps=3, **kwargs):
        if solver not in ials.SOLVERS:
            raise ArgumentError(f"solver must be one of {list(ials.SOLVERS)}, got {solver!r}")
        super().__init__(rank, reg, iters, **kwargs)
        self.params.update(alpha=float(alpha), solver=solver, cg_steps=int(cg_steps))

    def _train(self, data, ex, p, q, first):
        ur, ir = data["user_rows"], data["item_rows"]
        for it in range(first, self.iters):
            clock = (time.perf_counter(), ex.seconds)
            p = self._gather_finite(ex, self._half(ur, q, p), "user", it)
            q = self._gather_finite(ex, self._half(ir, p, q), "item", it)
            observed = ex.sum([ials.observed_loss(ur, p, q, self.alpha)])[0]
            self._after_iteration(data, ex, it, p, q, {"objective": ials.full_loss(observed, p, q, self.reg)}, clock)
        return p, q

    def _half(self, rows, other, own):
        try:
            return ials.ials_rows(rows, other, other.T @ other, self.reg, self.alpha, self.solver, self.cg_steps,
                                  own[rows.start:rows.stop])
        except np.linalg.LinAlgError:
            return np.full((rows.n_rows, other.shape[1]), np.nan)

    def _fold_in_row(self, rows):
        return ials.ials_rows(rows, self.Q, self.Q.T @ self.Q, self.reg, self.alpha, "cholesky")[0]


class DSGD(FactorModel):
    """Distributed SGD over p x p blocks with item blocks rotated around the ring.

    ``lr`` is the initial step; ``step="bold"`` (bold driver: x1.05 after an epoch that
    lowered the loss, x0.5 otherwise) or ``"decay"`` (``lr / (1 + decay * epoch)``);
    ``batch`` ratings per mini-batch. Predictions are ``mean + x . y``.
    Other parameters as in :class:`ALS`; ``iters`` counts epochs.
    """

    algorithm = "dsgd"
    needs_item_rows = False

    def __init__(self, rank=10, reg=0.05, iters=20, lr=0.05, step="bold", decay=0.1, batch=256, **kwargs):
        if step not in dsgd.STEPS:
            raise ArgumentError(f"step must be one of {list(dsgd.STEPS)}, got {step!r}")
        if lr <= 0 or batch < 1:
            raise ArgumentError(f"need lr > 0 and batch >= 1; got {lr}, {batch}")
        super().__init__(rank, reg, iters, **kwargs)
        self.params.update(lr=float(lr), step=step, decay=float(decay), batch=int(batch))
        self._rate, self._previous = float(lr), None

    def _restore(self, arrays):
        self._rate = float(arrays["rate"])
        self._previous = float(arrays["previous"]) if np.isfinite(arrays["previous"]) else None

    def _checkpoint_state(self):
        return {"rate": np.array(self._rate),
                "previous": np.array(np.nan if self._previous is None else self._previous)}

    def _train(self, data, ex, p, q, first):
        r, size = ex.rank, ex.size
        ub, ib, ur, mu = data["user_bounds"], data["item_bounds"], data["user_rows"], self.mu
        if first == 0:
            self._rate, self._previous = self.lr, None
        x = p[ub[r]:ub[r + 1]].copy()
        y = q[ib[r]:ib[r + 1]].copy()
        local_users = ur.row_ids() - ub[r]
        blocks = dsgd.split_by_item_block(local_users, ur.cols, ur.vals, ib)
        my_items = data["item_counts"][ib[r]:ib[r + 1]]
        for epoch in range(first, self.iters):
            clock = (time.perf_counter(), ex.seconds)
            rng = rank_generator(self.seed, r, size, purpose=1000 + epoch)
            for s in range(size):
                dsgd.sgd_block(blocks[(r + s) % size], x, y, mu, self._rate, self.reg, rng)
                incoming = (r + s + 1) % size
                y = ex.shift(y, int(ib[incoming + 1] - ib[incoming]))
            q = ex.gather(y)
            err = ur.vals - mu - pair_dots(x, local_users, q, ur.cols)
            pen = self.reg * (ur.counts() @ np.einsum("ij,ij->i", x, x) + my_items @ np.einsum("ij,ij->i", y, y))
            sse, pen = ex.sum([err @ err, pen])
            loss = float(sse + pen)
            record = {"objective": loss, "train_rmse": float(np.sqrt(sse / data["n"])), "step_size": self._rate}
            self._rate = dsgd.next_rate(self.step, self.lr, self._rate, epoch, loss, self._previous, self.decay)
            self._previous = loss
            self._local_users = x
            self._after_iteration(data, ex, epoch, None, q, record, clock)
        return ex.gather(x), ex.gather(y)


MODELS = {"als": ALS, "ials": ImplicitALS, "dsgd": DSGD}

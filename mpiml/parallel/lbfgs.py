"""The full-batch objective of L-BFGS on an ``R x C`` grid: rows over R, the model (features or classes) over C.

The ``lbfgs`` strategy (:class:`mpiml.train.strategies.LBFGS`) minimizes it with
:func:`mpiml.train.lbfgs_math.minimize`, on every layout: data parallelism is the ``p x 1``
grid. The objective is ``mean loss over every row + alpha/2 ||W||^2`` (intercepts free; L1
is refused for ``lbfgs`` by :class:`~mpiml.train.config.TrainConfig`). Each
rank keeps its block of the parameters, the gradient, the direction and the L-BFGS
history (:mod:`mpiml.train.lbfgs_math`), so no rank ever holds the whole model during
training. The scores of the row group's rows are kept between evaluations: along a
direction ``p`` they are ``z + t X p``, so the line search's trials cost no pass over the
data, and an iteration makes two sparse products, ``X p`` and ``X^T r``. Per iteration:

=================================  ======================================  ======================================
what                               features split (C ranks share rows)     classes split
=================================  ======================================  ======================================
direction margins ``X p``          row sum of ``rows x k`` floats          none (each rank scores its classes)
penalty terms ``w.w, w.p, p.p``    row sum of 3 floats                     row sum of 3 floats
each line-search trial             column sum of ``k + 2`` (loss, slope,   row max ``rows``, row sum ``2 rows``,
                                   intercept gradient)                     column sum 2, row sum 1
gradient at the new point          column sum of the block, ``d k / C``    column sum of ``(d + 1) k / C``
the two-loop's inner products      row sum of ``6 M + 9`` and ``max |g|``  the same
=================================  ======================================  ======================================

Every scalar that steers the iteration (values, slopes, inner products) comes out of a
reduction whose length and inputs are the same on every rank that computes it, so every
rank takes the same steps, and the ranks of a column group hold the same block bit for bit.
Intercepts, which every rank of a features split holds, get their gradient from the
fixed-length trial reduction for the same reason, and count once in inner products.

On a ``p x 1`` grid (data parallelism) every rank holds the whole model, the two-loop needs
no reduction, and each evaluation sums its gradient together with its loss: one allreduce
per evaluation, as scipy's L-BFGS-B on the allreduced objective needs (a rejected trial then
costs an ``X^T r`` that the split layouts save).
"""

from __future__ import annotations

import math
import time

import numpy as np

from mpiml.collectives import reproducible as exact
from mpiml.parallel import margins
from mpiml.train import lbfgs_math, reproducible


class GridObjective:
    """The objective of a run on ``layout`` (a :class:`~mpiml.parallel.trainer.GridLayout`) for
    :func:`lbfgs_math.minimize`. The point is ``run.theta`` (this rank's block), moved in place."""

    def __init__(self, layout, run):
        self.run, self.part, self.model, self.comms = run, layout.part, layout.model, layout.comms
        self.ex = layout.ex
        self.X, self.y = run.X, run.y
        self.XT = run.X.T     # every gradient is X^T r: the transpose made once
        self.features = self.part.split == "features"
        self.nw = self.part.n_weights
        self.n = float(max(run.n_total, 1))
        self.l2 = run.penalty.l2
        self.split_rows = self.comms.cols > 1
        # the whole model on every rank: each evaluation's gradient rides in the sum of its loss (one reduction,
        # as scipy's L-BFGS-B would need); on a split grid the trial sums keep a length that every column shares
        self.fused = self.features and not self.split_rows
        self.z = None          # scores of the rows at the current point (all k: features; own classes: classes)
        self.r = None          # d loss / d scores there
        self.gb = None         # summed intercept gradient there (features split)
        self._trial = None
        self.summed = None     # the weight gradient summed with the last loss (fused), else None

    # -- timing and reductions ----------------------------------------------------------------
    def _compute(self, start):
        self.ex.add_compute(time.perf_counter() - start)

    def _row_sum(self, values, slots=True):
        """Sum over the row group (the blocks of the model): returns the summed copy of ``values``."""
        if not self.split_rows:
            return values
        cols = self.comms.cols if slots else 0
        buf = np.empty(values.size + cols)
        buf[: values.size] = values.ravel()
        self.ex.reduce(self.comms.row_sum, buf, self.comms.col, cols)
        return buf[: values.size].reshape(values.shape)

    def _col_sum(self, values):
        """Sum over the column group (the row groups)."""
        if self.comms.rows == 1:
            return values
        buf = np.empty(values.size + self.comms.rows)
        buf[: values.size] = values.ravel()
        self.ex.reduce(self.comms.col_sum, buf, self.comms.row, self.comms.rows)
        return buf[: values.size].reshape(values.shape)

    def blocks(self) -> lbfgs_math.Blocks:
        """Inner products and maxima of split vectors: partial over this block, summed over the row group."""
        cols, col = self.comms.cols, self.comms.col

        def reduce(sums, maxes):
            if not self.split_rows:
                return sums, maxes
            buf = np.zeros(sums.size + maxes.size * cols + cols)
            buf[: sums.size] = sums
            buf[sums.size + col: sums.size + maxes.size * cols: cols] = maxes   # one slot per block: max by sum
            self.ex.reduce(self.comms.row_sum, buf, col, cols)
            top = buf[sums.size: sums.size + maxes.size * cols].reshape(maxes.size, cols).max(axis=1)
            return buf[: sums.size].copy(), top

        if self.features and cols > 1:   # every column holds the intercepts; column 0 counts them
            return lbfgs_math.Blocks(reduce, shared=self.model.k, count_shared=col == 0)
        return lbfgs_math.Blocks(reduce)

    # -- the model ----------------------------------------------------------------------------
    def _summed(self, loss, slope, rsum, r):
        """Features split: ``(loss, slope, intercept gradient, weight gradient or None)`` summed over every
        row (the column group); the weight gradient ``X^T r`` comes along where :attr:`fused`."""
        start = time.perf_counter()
        head = self.nw if self.fused else 0
        payload = np.zeros(head + 2 + self.model.k)
        if self.fused:
            payload[:head] = margins.block_gradient(self.X, r, False, self.XT)[0].ravel()
        payload[head], payload[head + 1] = loss, slope
        if self.model.fit_intercept:
            payload[head + 2:] = rsum
        self._compute(start)
        payload = self._col_sum(payload)
        return payload[head], payload[head + 1], payload[head + 2:].copy(), payload[:head] if self.fused else None

    def _loss(self, z, u=None):
        """Summed loss, slope ``sum r * u`` (with ``u`` the scores' derivative along the line), residual
        and (features split) intercept gradient of scores ``z``, summed over every row."""
        start = time.perf_counter()
        if self.features:
            loss, r = self.model.loss_and_residual(z, self.y)
            slope = float(np.vdot(r, u)) if u is not None else 0.0
            rsum = r.sum(axis=0)
            self._compute(start)
            loss, slope, gb, self.summed = self._summed(loss, slope, rsum, r)
            return loss, slope, r, gb
        top = margins.row_max(z)
        self._compute(start)
        if self.split_rows:
            self.ex.reduce(self.comms.row_max, top)
        start = time.perf_counter()
        sums = margins.exp_sums(z, top, self.y, self.part.lo)
        self._compute(start)
        sums = self._row_sum(sums)
        start = time.perf_counter()
        loss, r = margins.softmax_loss_residual(z, top, sums, self.y, self.part.lo)
        payload = np.array([loss, float(np.vdot(r, u)) if u is not None else 0.0])
        self._compute(start)
        payload = self._col_sum(payload)      # the loss: the same on every rank; the slope: still per class block
        payload[1:] = self._row_sum(payload[1:], slots=False)
        return payload[0], payload[1], r, None

    def _trial_loss(self, z0, u, step):
        """``(z, loss, slope, r, intercept gradient)`` at ``z0 + step u``, summed over every row."""
        if self.features:   # the scores and their sums in one pass (a compiled kernel for one output)
            start = time.perf_counter()
            z, loss, r, slope, rsum = self.model.line_loss(z0, u, step, self.y)
            self._compute(start)
            loss, slope, gb, self.summed = self._summed(loss, slope, rsum, r)
            return z, loss, slope, r, gb
        start = time.perf_counter()
        z = np.multiply(u, step)
        z += z0
        self._compute(start)
        loss, slope, r, gb = self._loss(z, u)
        return z, loss, slope, r, gb

    def _gradient(self, summed=None):
        """Gradient of the objective at the current point (this block), from the residual kept there
        (or from ``summed``, the weight gradient already summed with the loss)."""
        if summed is None:
            start = time.perf_counter()
            gW, gb = margins.block_gradient(self.X, self.r, self.model.fit_intercept, self.XT)
            payload = gW.ravel() if self.features else np.concatenate([gW.ravel(), gb])
            self._compute(start)
            summed = self._col_sum(payload)
        start = time.perf_counter()
        g = np.empty(self.part.n_params)
        np.divide(summed[: self.nw], self.n, out=g[: self.nw])
        g[self.nw:] = (self.gb if self.features else summed[self.nw:]) / self.n
        if self.l2:
            g[: self.nw] += self.l2 * self.run.theta[: self.nw]
        self._compute(start)
        return g

    def _check(self, f):
        if not math.isfinite(f):
            raise self.run.diverged("the objective")

    def value_grad(self):
        run = self.run
        W, b = self.part.split_local(run.theta)
        start = time.perf_counter()
        s = margins.partial_scores(W, self.X)
        w = run.theta[: self.nw]
        ww = np.array([float(w @ w)])
        self._compute(start)
        if self.features:
            s = self._row_sum(s)
        ww = self._row_sum(ww, slots=False)
        self.z = s + b
        loss, _, self.r, self.gb = self._loss(self.z)
        f = loss / self.n + 0.5 * self.l2 * float(ww[0])
        self._check(f)
        return f, self._gradient(self.summed)

    def line(self, p):
        run = self.run
        P, pb = self.part.split_local(p)
        start = time.perf_counter()
        u = margins.partial_scores(P, self.X)
        w, pw = run.theta[: self.nw], p[: self.nw]
        terms = np.array([float(w @ w), float(w @ pw), float(pw @ pw)])
        self._compute(start)
        if self.features:
            u = self._row_sum(u)
        u = u + pb
        ww, wp, pp = self._row_sum(terms, slots=False)
        z0, l2, n = self.z, self.l2, self.n

        def phi(step):
            z, loss, slope, r, gb = self._trial_loss(z0, u, step)
            f = loss / n + 0.5 * l2 * (ww + step * (2.0 * wp + step * pp))
            self._check(f)
            self._trial = (step, p, z, r, gb, f, self.summed)
            return f, slope / n + l2 * (wp + step * pp)

        return phi

    def move(self):
        step, p, self.z, self.r, self.gb, f, summed = self._trial
        start = time.perf_counter()
        self.run.theta += step * p
        self._compute(start)
        self._trial = None
        return f, self._gradient(summed)


class ExactObjective(GridObjective):
    """:class:`GridObjective` of data parallelism in reproducible mode (:mod:`mpiml.train.reproducible`).

    Scores row by row; each evaluation sums, exactly, ``[X^T r, r, loss, r * u per output]``
    over every row (two reductions: the maxima, then the folds); inner products of the
    (identical) whole vectors are exact too.
    """

    def __init__(self, layout, run):
        super().__init__(layout, run)
        reproducible.check_layout(self.fused)
        self.count = max(run.n_total, 1)
        # sparse rows by column too (a copy): the exact X^T r then sums each column's terms in registers
        # the run's CSC copy of sparse rows (None for dense), and the most stored entries of a column over every
        # rank, which bounds the terms of each X^T r element: mostly far fewer than the rows, so fewer folds
        self.columns, self.column_count = run.columns, run.column_count

    def _exact_sums(self, z0, theta, u=None, direction=None, step=0.0):
        """``(scores, loss, slope, intercept gradient, weight gradient, residual)`` at the scores
        ``z0 + step u`` (of the parameters ``theta``; along ``u = X direction``) over every row."""
        start = time.perf_counter()
        k, nw = self.model.k, self.nw
        z, losses, r, ru = self.model.row_line_loss(z0, u, step, self.y)
        terms = exact.Sum(nw + 2 * k + 1, self.count)
        terms.add_outer(self.X, r, 0, self.columns, self.column_count)
        if self.model.fit_intercept:
            terms.add_rows(r, nw)
        terms.add_rows(losses, nw + k)
        if u is not None:
            terms.add_rows(ru, nw + k + 1)
        top = self.run.bounds.top(theta, terms.n, direction)
        self._compute(start)
        sums = self.ex.exact(terms, top)
        slope = 0.0
        for value in sums[nw + k + 1:]:   # the outputs' slopes, in their order
            slope += float(value)
        return z, float(sums[nw + k]), slope, sums[nw:nw + k].copy(), sums[:nw], r

    def value_grad(self):
        run = self.run
        start = time.perf_counter()
        W, b = self.part.split_local(run.theta)
        self.z = reproducible.scores(W, b, self.X)
        w = run.theta[: self.nw]
        ww = reproducible.dot(w, w)
        self._compute(start)
        self.z, loss, _, self.gb, summed, self.r = self._exact_sums(self.z, run.theta)
        f = loss / self.n + 0.5 * self.l2 * ww
        self._check(f)
        return f, self._gradient(summed)

    def line(self, p):
        run = self.run
        start = time.perf_counter()
        P, pb = self.part.split_local(p)
        u = reproducible.scores(P, pb, self.X)
        w, pw = run.theta[: self.nw], p[: self.nw]
        ww, wp, pp = reproducible.dots([(w, w), (w, pw), (pw, pw)])
        self._compute(start)
        z0, l2, n = self.z, self.l2, self.n

        def phi(step):
            z, loss, slope, gb, summed, r = self._exact_sums(z0, run.theta + step * p, u, p, step)
            f = loss / n + 0.5 * l2 * (ww + step * (2.0 * wp + step * pp))
            self._check(f)
            self._trial = (step, p, z, r, gb, f, summed)
            return f, slope / n + l2 * (wp + step * pp)

        return phi

"""Minibatch SGD (and full-batch L-BFGS) on a ``R x C`` grid: rows over R, features or classes over C.

``sync``: every update uses the same global batch as the data-parallel ``sync`` strategy of
:mod:`mpiml.sgd.trainer` (the batches come from :func:`mpiml.sgd.plan.sync_plan` over
the rows of the row group), so a grid run gives the data-parallel model from the same
seed, up to the order of floating-point sums. One update costs

- features split: one sum of the partial margins (``rows x k`` floats) over the row
  group, then one sum of ``(d/C) k + k + 1`` floats (gradient block, intercepts, loss)
  over the column group;
- classes split: a max and a sum of ``rows`` and ``2 rows`` floats over the row group,
  then one sum of ``d k/C + k/C + 1`` floats over the column group.

``local``/``oneshot``: each row group is one replica of data-parallel local SGD with R
replicas (the column group plays the part of the data-parallel ranks, with the rows of
their row groups); only the partial margins are summed every update, and the blocks are
averaged over the column group every ``sync_every`` updates or once at the end. On a
``1 x C`` grid there is one replica, so they reduce to serial SGD on the rank's batches.

Each rank updates only its own block of the weights, with the optimizers and penalties
of :mod:`mpiml.sgd` (all of them act coordinate-wise, so a block behaves like the whole).

``lbfgs``: full-batch L-BFGS with the history split by block, in :mod:`mpiml.parallel.lbfgs`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mpiml.parallel import margins
from mpiml.parallel.checkpoint import load_state, save_state, whole
from mpiml.parallel.layout import Part
from mpiml.runtime.errors import ArgumentError, DivergenceError
from mpiml.sgd import plan
from mpiml.sgd.config import TrainConfig
from mpiml.sgd.models import Penalty
from mpiml.sgd.optim import learning_rate, make_optimizer
from mpiml.sgd.timing import Clock, Timings
from mpiml.sgd.trainer import TrainResult, count_update, run_epochs

GRID_STRATEGIES = ("sync", "local", "oneshot", "lbfgs")
_EVAL_ROWS = 65536


class GridRun:
    """State of one grid training run on this rank (its rows, its block of the model)."""

    def __init__(self, model, part: Part, X, y, config: TrainConfig, comms, test=None, checkpoint_dir=None,
                 progress=None, stop_requested=None):
        self.model, self.part, self.X, self.y, self.cfg, self.comms = model, part, X, y, config, comms
        self.test, self.checkpoint_dir, self.progress = test, checkpoint_dir, progress
        self.timings = Timings()
        self.penalty = Penalty(config.alpha, config.l1_ratio)
        self.index = part.index
        self.theta = model.init_params()[self.index]
        self.opt = make_optimizer(config.optimizer, part.n_params, config.momentum, config.nesterov)
        self.grad = np.zeros(part.n_params)
        counts = np.zeros(comms.rows)
        counts[comms.row] = X.shape[0]
        comms.col_sum(counts, out=counts)
        self.offset, self.n_total = int(counts[: comms.row].sum()), int(counts.sum())
        self.t = self.epoch = self.step = 0
        self.history: list = []
        self.last_checkpoint = None
        self.stop_requested = stop_requested or (lambda: False)
        self.stop_agreed = False

    # -- communication, timed ----------------------------------------------------------------
    def _reduce(self, fn, x):
        start = time.perf_counter()
        fn(x, out=x)
        self.timings.comm += time.perf_counter() - start
        return x

    def _compute(self, start):
        self.timings.compute += time.perf_counter() - start

    # -- the model, split ------------------------------------------------------------------------
    def loss_residual(self, theta, X, y, vote=0.0):
        """Summed loss of rows ``X``, the residual of the local outputs, the scores (or the split
        softmax's max and sums) and the row group's sum of ``vote`` (communicates in the row group).

        The vote (a stop request) rides in the row-group sum; the caller passes the result on
        in the column-group sum, so after both every rank has the sum of all votes.
        """
        start = time.perf_counter()
        W, b = self.part.split_local(theta)
        s = margins.partial_scores(W, X)
        if self.part.split == "features":
            buf = np.empty(s.size + 1)
            buf[:-1] = s.ravel()
            buf[-1] = vote
            self._compute(start)
            self._reduce(self.comms.row_sum, buf)
            start = time.perf_counter()
            s = buf[:-1].reshape(s.shape)
            s += b
            loss, r = margins.loss_and_residual(self.model, s, y)
            self._compute(start)
            return loss, r, s, buf[-1]
        s += b
        top = margins.row_max(s)
        self._compute(start)
        self._reduce(self.comms.row_max, top)
        start = time.perf_counter()
        buf = np.empty(2 * s.shape[0] + 1)
        buf[:-1] = margins.exp_sums(s, top, y, self.part.lo).ravel()
        buf[-1] = vote
        self._compute(start)
        self._reduce(self.comms.row_sum, buf)
        start = time.perf_counter()
        sums = buf[:-1].reshape(2, s.shape[0])
        loss, r = margins.softmax_loss_residual(s, top, sums, y, self.part.lo)
        self._compute(start)
        return loss, r, (top, sums), buf[-1]

    def correct(self, scores, y) -> int:
        if not self.model.classifier:
            return 0
        if self.part.split == "classes":
            return margins.softmax_correct(*scores)
        if self.model.k == 1:
            return int(np.count_nonzero((scores[:, 0] > 0) == (y > 0)))
        return int(np.count_nonzero(np.argmax(scores, axis=1) == y))

    def diverged(self, what):
        return DivergenceError(
            f"training diverged at epoch {self.epoch + 1}, update {self.t}: {what} is not finite "
            f"(lr={self.cfg.lr}, optimizer={self.cfg.optimizer}); lower --lr or raise --alpha"
            + (f"; the last good checkpoint ({self.last_checkpoint}) is intact" if self.last_checkpoint else ""),
            collective=True)  # raised only on numbers every rank holds alike (after the sums)

    # -- one epoch of SGD -------------------------------------------------------------------------------
    def block_grad(self, Xb, yb, payload):
        """Loss derivative of rows ``Xb`` into ``payload``: ``[block gradient, intercepts, votes, loss]``."""
        part = self.part
        loss, r, _, votes = self.loss_residual(self.theta, Xb, yb, 1.0 if self.stop_requested() else 0.0)
        start = time.perf_counter()
        gW, gb = margins.block_gradient(Xb, r, self.model.fit_intercept)
        payload[: part.n_weights] = gW.ravel()
        payload[part.n_weights: part.n_params] = gb
        payload[-2], payload[-1] = votes, loss
        self._compute(start)

    def apply(self, payload, count, total, check=True):
        """The update from a summed ``payload`` of ``count`` rows: penalty, optimizer, L1 proximal step.

        ``check``: raise on a non-finite loss; only where the loss is the same number on every
        rank (after the column-group sum of ``sync``), so the decision never splits the ranks.
        """
        start = time.perf_counter()
        c, n_w = self.cfg, self.part.n_weights
        if check and not math.isfinite(payload[-1]):
            raise self.diverged("the batch loss")
        np.divide(payload[:-2], count, out=self.grad)
        lr = learning_rate(c.schedule, c.lr, self.t, total, c.lr_decay)
        self.penalty.add_smooth_grad(self.theta[:n_w], self.grad[:n_w])
        self.opt.step(self.theta, self.grad, lr)
        self.penalty.prox(self.theta[:n_w], lr)
        self._compute(start)

    def after_update(self, steps, batch_loss, stop_at):
        return count_update(self, steps, batch_loss, stop_at, self.stop_agreed)

    def sync_epoch(self, stop_at):
        """Every update: one global batch, gradient blocks summed over the column group."""
        c = self.cfg
        update_rows = c.batch_size * c.accumulate
        steps = plan.sync_steps(self.n_total, update_rows)
        rows, bounds, _ = plan.sync_plan(c.seed, self.epoch, self.n_total, self.offset, self.X.shape[0],
                                         update_rows)
        payload = np.zeros(self.part.n_params + 2)
        while self.step < steps:
            part_rows = rows[bounds[self.step]:bounds[self.step + 1]]
            self.block_grad(self.X[part_rows], self.y[part_rows], payload)
            self._reduce(self.comms.col_sum, payload)
            self.stop_agreed = self.stop_agreed or payload[-2] > 0
            count = min(update_rows, self.n_total - self.step * update_rows)
            self.apply(payload, count, steps * c.epochs)
            if self.after_update(steps, payload[-1] / count, stop_at):
                return True
        return False

    def local_epoch(self, stop_at):
        """``local``/``oneshot``: each row group is one replica of data-parallel local SGD over R
        replicas (its own rows, its own batches); blocks are averaged over the column group every
        ``sync_every`` updates (``local``) or only at the end (``oneshot``)."""
        c, comms = self.cfg, self.comms
        update_rows = c.batch_size * c.accumulate
        steps = plan.local_steps(self.n_total, comms.rows, update_rows)
        order = plan.local_order(c.seed, self.epoch, comms.row, comms.rows, self.X.shape[0])
        H = c.sync_every if c.strategy == "local" else None
        payload = np.zeros(self.part.n_params + 2)
        while self.step < steps:
            rows = plan.local_rows(order, self.step, update_rows)
            self.block_grad(self.X[rows], self.y[rows], payload)
            self.apply(payload, update_rows, steps * c.epochs, check=False)  # replicas differ: checked when averaged
            if H is not None and (self.t + 1) % H == 0:
                buf = np.append(self.theta, payload[-2])   # votes reach every rank through both sums
                self._reduce(comms.col_sum, buf)
                if not np.isfinite(buf).all():
                    raise self.diverged("the averaged model")
                np.divide(buf[:-1], comms.rows, out=self.theta)
                self.stop_agreed = self.stop_agreed or buf[-1] > 0
            if self.after_update(steps, None, stop_at):
                return True
        return False

    def consensus(self):
        """This rank's block of the model every rank agrees on (the replicas' average for local/oneshot)."""
        if self.cfg.strategy == "sync" or self.comms.rows == 1:
            return self.theta
        with Clock(self._add_eval):
            buf = self.theta.copy()
            self.comms.col_sum(buf, out=buf)
            return buf / self.comms.rows

    # -- metrics and checkpoints ---------------------------------------------------------------------
    def evaluate(self, theta) -> dict:
        """Objective and accuracy of ``theta`` (this rank's block) on the training and held-out rows."""
        with Clock(self._add_eval):
            sets = [(self.X, self.y)] + ([self.test] if self.test is not None else [])
            buf = np.zeros(3 * len(sets))
            for i, (X, y) in enumerate(sets):
                for lo in range(0, X.shape[0], _EVAL_ROWS):
                    Xb, yb = X[lo:lo + _EVAL_ROWS], y[lo:lo + _EVAL_ROWS]
                    loss, _, scores, _ = self.loss_residual(theta, Xb, yb)
                    buf[3 * i] += loss
                    buf[3 * i + 1] += self.correct(scores, yb)
                buf[3 * i + 2] = X.shape[0]
            # Every rank of a row group holds the same numbers: summing over the column group counts each row once.
            self.comms.col_sum(buf, out=buf)
            pen = np.array([self.penalty.value(theta[: self.part.n_weights])])
            self.comms.row_sum(pen, out=pen)
            record = {"epoch": self.epoch + 1, "updates": self.t}
            for i, name in enumerate(("train", "test")[: len(sets)]):
                n = max(buf[3 * i + 2], 1.0)
                # as in mpiml.sgd: train_loss is the objective (mean loss + penalty), test_loss the mean loss
                record[f"{name}_loss"] = buf[3 * i] / n + (float(pen[0]) if name == "train" else 0.0)
                if self.model.classifier:
                    record[f"{name}_accuracy"] = buf[3 * i + 1] / n
        if not math.isfinite(record["train_loss"]):
            raise self.diverged("the training loss")
        return record

    def _add_eval(self, seconds):
        self.timings.eval += seconds

    def _add_checkpoint(self, seconds):
        self.timings.checkpoint += seconds

    def checkpoint(self):
        if self.checkpoint_dir is None:
            return
        with Clock(self._add_checkpoint):
            self.last_checkpoint = save_state(self)


def train_grid(model, part: Part, X, y, config: TrainConfig, comms, test=None, checkpoint_dir=None, resume=False,
               stop_at_update=None, progress=None, stop_requested=None) -> TrainResult:
    """Train ``model`` by sync SGD with this rank's block ``part`` of it, on its rows ``(X, y)``.

    Parameters
    ----------
    model : mpiml.sgd.models.Model
        The whole model (``y`` already encoded by it).
    part : Part
        This rank's block (from :func:`mpiml.parallel.layout.make_part` with its grid column).
    X : array or CSR matrix
        The rows of this rank's row group, restricted to its feature block (features split)
        or with every feature (classes split); see :mod:`mpiml.data.columns`.
    y : numpy.ndarray
        The labels of those rows (every rank of the row group holds them).
    config : TrainConfig
        ``strategy`` ``sync``, ``local``, ``oneshot`` or ``lbfgs`` (full batch, see
        :mod:`mpiml.parallel.lbfgs`); every other setting works as in :func:`mpiml.sgd.train`.
    comms : GridComms
        The row-group and column-group reductions (``GridComms.serial()`` for one process).
    test : tuple, optional
        ``(X_test, y_test)`` in the same layout, evaluated every epoch.
    checkpoint_dir, resume, stop_at_update, progress
        As in :func:`mpiml.sgd.train`. Checkpoints hold the *whole* model in the format of
        the data-parallel trainer, so they resume under any layout and rank count.
    stop_requested : callable, optional
        ``stop_requested() -> bool`` on this rank (e.g. a signal arrived): the votes travel
        with every update's reductions, so all ranks stop after the same update, checkpoint
        and return ``interrupted=True``. ``lbfgs`` runs to the end (as data-parallel).

    Returns
    -------
    TrainResult
        ``theta`` is the whole parameter vector, the same on every rank.
    """
    config.validate()
    if config.strategy not in GRID_STRATEGIES:
        raise ArgumentError(f"grids train with strategy {', '.join(GRID_STRATEGIES)}; got {config.strategy!r}")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        run = GridRun(model, part, X, y, config, comms, test, checkpoint_dir, progress, stop_requested)
        resumed = load_state(run) if resume and checkpoint_dir is not None else None
        if config.strategy == "lbfgs":
            from mpiml.parallel.lbfgs import train_lbfgs

            interrupted = False
            train_lbfgs(run, resumed)
            theta = whole(run, run.theta)   # the blocks of a column group are equal: no averaging
        else:
            interrupted = run_epochs(run, config, stop_at_update, progress, lambda: run.stop_agreed)
            theta = whole(run, run.theta if interrupted else run.consensus())
    return TrainResult(theta, run.history, run.timings, run.t, interrupted, resumed)

"""Training on a ``R x C`` grid: rows over R, features or classes over C (``p x 1``: data parallelism).

:class:`GridLayout` is what the one training loop (:mod:`mpiml.train`) asks of a rank of
the grid: the loss and gradient of a batch for its block of the model, evaluation, the
reductions of its row group (partial margins) and column group (the replicas), whole-model
checkpoints and the L-BFGS objective (:mod:`mpiml.parallel.lbfgs`). Strategies, updates,
evaluation, checkpoints and stops are the loop's, the same for every layout.

``sync``: every update uses the same global batch as data-parallel ``sync`` (the batches
come from :func:`mpiml.train.plan.sync_plan` over the rows of the row groups), so a grid
run gives the data-parallel model from the same seed, up to the order of floating-point
sums. One update costs

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
of :mod:`mpiml.train.optim` (all of them act coordinate-wise, so a block behaves like the whole).
On a ``p x 1`` grid every rank holds the whole model, and batches and evaluation take the
whole model's own paths (:meth:`mpiml.sgd.models.Model.loss_grad`, compiled losses).
"""

from __future__ import annotations

import time

import numpy as np

from mpiml.parallel import checkpoint, margins
from mpiml.parallel.grid import GridComms
from mpiml.parallel.layout import Part, make_part
from mpiml.train import loop
from mpiml.train.config import TrainConfig
from mpiml.train.group import Group


class GridLayout:
    """This rank's place in the grid ``comms``: its block ``part`` of ``model`` (see :mod:`mpiml.train.loop`)."""

    def __init__(self, model, part: Part, comms):
        self.model, self.part, self.comms = model, part, comms
        self.n_params, self.n_weights, self.index = part.n_params, part.n_weights, part.index
        self.whole_model = comms.cols == 1   # one column: the block is the whole model
        # the replicas: the ranks holding this block for other rows (all ranks of a p x 1 grid)
        self.data = Group(comms.row, comms.rows, comms.col_sum, maximum=comms.col_max)
        self.ex = None

    def attach(self, exchanger) -> None:
        self.ex = exchanger

    def init_params(self) -> np.ndarray:
        return self.model.init_params()[self.index]

    def _lap(self, start: float) -> float:
        """Count the compute since ``start``; the time now."""
        now = time.perf_counter()
        self.ex.add_compute(now - start)
        return now

    # -- the model, split -----------------------------------------------------------------------
    def forward(self, theta, X, y, vote=0.0):
        """``(loss, residual, scores, votes)`` of rows ``X`` (communicates in the row group).

        The summed loss, the residual of the local outputs, the scores (the split softmax:
        its row maxima and sums) and the row group's sum of ``vote``: a stop vote rides in
        the row-group sum, and the caller passes the sum on in the column-group sum, so
        after both every rank has the sum of all votes.
        """
        start = time.perf_counter()
        W, b = self.part.split_local(theta)
        s = margins.partial_scores(W, X)
        if self.part.split == "features":
            buf = np.empty(s.size + 1)
            buf[:-1] = s.ravel()
            buf[-1] = vote
            self._lap(start)
            self.ex.reduce(self.comms.row_sum, buf)
            start = time.perf_counter()
            s = buf[:-1].reshape(s.shape)
            s += b
            loss, r = self.model.loss_and_residual(s, y)
            self._lap(start)
            return loss, r, s, buf[-1]
        s += b
        top = margins.row_max(s)
        self._lap(start)
        self.ex.reduce(self.comms.row_max, top)
        start = time.perf_counter()
        buf = np.empty(2 * s.shape[0] + 1)
        buf[:-1] = margins.exp_sums(s, top, y, self.part.lo).ravel()
        buf[-1] = vote
        self._lap(start)
        self.ex.reduce(self.comms.row_sum, buf)
        start = time.perf_counter()
        sums = buf[:-1].reshape(2, s.shape[0])
        loss, r = margins.softmax_loss_residual(s, top, sums, y, self.part.lo)
        self._lap(start)
        return loss, r, (top, sums), buf[-1]

    def batch(self, theta, X, y, rows, grad, vote):
        """Summed loss of rows ``rows``, their gradient (this block) added to ``grad``, the row group's votes."""
        if self.whole_model:
            if not len(rows):
                return 0.0, vote
            start = time.perf_counter()
            loss = self.model.loss_grad(theta, X[rows], y[rows], grad)
            self._lap(start)
            return loss, vote
        Xb = X[rows]
        loss, r, _, votes = self.forward(theta, Xb, y[rows], vote)
        start = time.perf_counter()
        gW, gb = margins.block_gradient(Xb, r, self.model.fit_intercept)
        grad[: self.n_weights] += gW.ravel()
        grad[self.n_weights:] += gb
        self._lap(start)
        return loss, votes

    def evaluate(self, theta, X, y) -> tuple[float, int]:
        """Summed loss and correct predictions of rows ``X`` (the same on every rank of the row group)."""
        if self.whole_model:
            return self.model.evaluate(theta, X, y)
        loss, _, scores, _ = self.forward(theta, X, y)
        if self.part.split == "classes":
            return loss, margins.softmax_correct(*scores)
        return loss, self.model.correct_scores(scores, y)

    def model_sum(self, x: np.ndarray) -> np.ndarray:
        """Sum over the row group (the blocks of the model), in place."""
        return x if self.whole_model else self.ex.reduce(self.comms.row_sum, x)

    # -- the whole model ---------------------------------------------------------------------------
    def whole(self, theta) -> np.ndarray:
        return checkpoint.whole(self, theta)

    def save_state(self, run):
        return checkpoint.save_state(self, run)

    def load_state(self, run):
        return checkpoint.load_state(self, run)

    def objective(self, run):
        from mpiml.parallel.lbfgs import ExactObjective, GridObjective

        objective = (ExactObjective if run.reproducible else GridObjective)(self, run)
        return objective, objective.blocks()


def data_parallel(model, group) -> GridLayout:
    """The layout of data parallelism over ``group``: the ``p x 1`` grid, the whole model on every rank."""
    return GridLayout(model, make_part("features", model.n_features, model.k, 1, 0),
                      GridComms.of_group(group))


def train_grid(model, part: Part, X, y, config: TrainConfig, comms, test=None, checkpoint_dir=None, resume=False,
               stop_at_update=None, progress=None, stop_requested=None) -> loop.TrainResult:
    """Train ``model`` with this rank's block ``part`` of it, on its rows ``(X, y)`` of the grid ``comms``.

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
        Any strategy; every setting works as in :func:`mpiml.sgd.train`.
    comms : GridComms
        The row-group and column-group reductions (``GridComms.serial()`` for one process).
    test : tuple, optional
        ``(X_test, y_test)`` in the same layout, evaluated every epoch.
    checkpoint_dir, resume, stop_at_update, progress, stop_requested
        As in :func:`mpiml.train.loop.train`. Checkpoints hold the *whole* model, so they
        resume under any layout and rank count, data parallelism included.

    Returns
    -------
    TrainResult
        ``theta`` is the whole parameter vector, the same on every rank; ``block`` this rank's part.
    """
    return loop.train(GridLayout(model, part, comms), X, y, config, test, checkpoint_dir, resume, stop_at_update,
                      progress, stop_requested)
